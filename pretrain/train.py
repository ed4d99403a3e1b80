"""``python -m pretrain.train [overrides]``: train a GPT (alone, under torchrun, or under
the deepspeed launcher). See configs/train.yaml and the README."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from data_pipeline.cli_errors import one_line_errors, run_command
from pretrain.config import CONFIG_DIR, register_configs, to_train_config
from pretrain.parallel.layout import launched_world_size
from pretrain.parallel.process_groups import entry_arguments, init_distributed
from pretrain.planning.preflight import preflight
from pretrain.training.build import resolve_config
from pretrain.training.run_log import log_errors_to
from pretrain.training.trainer import Trainer


def _run_dir_of_sweep_job(cfg: DictConfig) -> None:
    """In a sweep every job gets its own run dir, or each would resume the one before:
    Hydra's job directory, or ``<run_dir>/<job number>`` when run_dir is given."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode is not RunMode.MULTIRUN:
        return
    given = any(override.startswith("run_dir=") for override in hydra_cfg.overrides.task)
    cfg.run_dir = str(Path(cfg.run_dir) / str(hydra_cfg.job.num)) if given else hydra_cfg.runtime.output_dir


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base=None)
@one_line_errors
def main(cfg: DictConfig) -> None:
    _run_dir_of_sweep_job(cfg)
    config = to_train_config(cfg)
    log_errors_to(Path(config.run_dir))  # Hydra made it; errors of every rank land in its train.log
    resolved = resolve_config(config, launched_world_size())  # before any process group exists
    if preflight(resolved.cfg, resolved.layout.world_size):  # plan=true prints the plan and stops here
        return
    Trainer(resolved, init_distributed()).fit()


if __name__ == "__main__":
    register_configs()
    entry_arguments()
    run_command(main)
