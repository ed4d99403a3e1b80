"""``python -m pretrain.train [overrides]``: train a GPT (alone, under torchrun, or under
the deepspeed launcher). See configs/train.yaml and the README."""
from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from pretrain.config import CONFIG_DIR, register_configs, to_train_config
from pretrain.distributed import entry_arguments, init_distributed
from pretrain.parallel.layout import launched_world_size, validate_layout
from pretrain.planning.preflight import preflight
from pretrain.trainer import Trainer


def _run_dir_of_sweep_job(cfg: DictConfig) -> None:
    """In a sweep every job gets its own run dir, or each would resume the one before."""
    hydra_cfg = HydraConfig.get()
    given = any(override.startswith("run_dir=") for override in hydra_cfg.overrides.task)
    if hydra_cfg.mode is RunMode.MULTIRUN and not given:
        cfg.run_dir = hydra_cfg.runtime.output_dir


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base=None)
def main(cfg: DictConfig) -> None:
    _run_dir_of_sweep_job(cfg)
    config = to_train_config(cfg)
    validate_layout(config, launched_world_size())  # before any process group exists
    if preflight(config, launched_world_size()):
        return
    Trainer(config, init_distributed()).fit()


if __name__ == "__main__":
    register_configs()
    entry_arguments()
    main()
