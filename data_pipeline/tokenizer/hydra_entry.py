"""Hydra wiring shared by the tokenizer commands (train_tokenizer, tokenize).

Each root config ``configs/<name>.yaml`` builds on the command's dataclass, registered as
``<name>_schema``, so a misspelt option is an error. They run in ``output_dir`` and keep the
resolved config in ``<output_dir>/.hydra``: nothing lands in the current directory. Without
an ``output_dir`` nothing is written at all, and the command stops on the missing value
with a short error instead of failing inside Hydra's run-directory setup.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from data_pipeline.cli_errors import one_line_errors, run_command

# Absolute: a relative path would be taken against this module's package, not its folder.
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def _output_subdir(output_dir: str | None) -> str | None:
    return ".hydra" if output_dir else None


OmegaConf.register_new_resolver("tokenizer_output_subdir", _output_subdir, replace=True)


def hydra_entry_point(config_name: str, schema: type, command: Callable[[Any], object]) -> Callable[[], None]:
    """The ``main()`` of a command: composes ``configs/<config_name>.yaml`` and calls
    ``command`` with the config as a ``schema`` instance; logs go to stderr, stdout stays clean,
    errors are one line (data_pipeline.cli_errors)."""
    ConfigStore.instance().store(name=f"{config_name}_schema", node=schema)

    @hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base="1.3")
    @one_line_errors
    def main(cfg: DictConfig) -> None:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        command(OmegaConf.to_object(cfg))

    return lambda: run_command(main)
