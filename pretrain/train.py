"""``python -m pretrain.train [overrides]``: train a GPT (alone, under torchrun, or under
the deepspeed launcher). See configs/train.yaml and the README."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from data_pipeline.command import hydra_command
from pretrain.config import TrainConfig
from pretrain.parallel.layout import launched_world_size
from pretrain.parallel.process_groups import entry_arguments, init_distributed, set_process_defaults
from pretrain.planning.preflight import preflight
from pretrain.training.run_log import log_errors_to

# ``--check``: compose and validate the config for WORLD_SIZE processes, then stop. The
# launch scripts run it before starting workers, so that a mistake is one line (not one per
# worker followed by the launcher's failure report).
CHECK_FLAG = "--check"
checking = False


def _run_dir_of_sweep_job(config: TrainConfig) -> None:
    """In a sweep every job gets its own run dir, or each would resume the one before:
    Hydra's job directory, or ``<run_dir>/<job number>`` when run_dir is given."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode is not RunMode.MULTIRUN:
        return
    given = any(override.startswith("run_dir=") for override in hydra_cfg.overrides.task)
    config.run_dir = str(Path(config.run_dir) / str(hydra_cfg.job.num)) if given else hydra_cfg.runtime.output_dir


def train(config: TrainConfig) -> None:
    set_process_defaults()  # before DeepSpeed is imported and CUDA touched
    from pretrain.training.build import resolve_config  # imports DeepSpeed
    from pretrain.training.trainer import Trainer

    _run_dir_of_sweep_job(config)
    log_errors_to(Path(config.run_dir))  # Hydra made it; errors of every rank land in its train.log
    resolved = resolve_config(config, launched_world_size())  # before any process group exists
    world_size = resolved.layout.world_size
    if checking:  # the memory check too, but plan=true's plan is printed by the run itself
        preflight(replace(resolved.cfg, plan=False), world_size)
        return
    if preflight(resolved.cfg, world_size):  # plan=true prints the plan and stops here
        return
    Trainer(resolved, init_distributed()).fit()


main = hydra_command("train", TrainConfig, train, log_format=None)

if __name__ == "__main__":
    entry_arguments()
    checking = CHECK_FLAG in sys.argv
    sys.argv = [arg for arg in sys.argv if arg != CHECK_FLAG]
    main()
