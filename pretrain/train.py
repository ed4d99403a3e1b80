"""``python -m pretrain.train [overrides]``: train a GPT (alone, under torchrun, or under
the deepspeed launcher). See configs/train.yaml and the README."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from pretrain.config import CONFIG_DIR, register_configs, to_train_config
from pretrain.distributed import entry_arguments, init_distributed
from pretrain.trainer import Trainer


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base=None)
def main(cfg: DictConfig) -> None:
    config = to_train_config(cfg)
    process = init_distributed()
    Trainer(config, process).fit()


if __name__ == "__main__":
    register_configs()
    entry_arguments()
    main()
