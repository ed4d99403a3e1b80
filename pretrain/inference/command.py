"""Hydra wiring of generate, evaluate and export.

Each command has a root config ``configs/<name>.yaml`` built on its dataclass (registered as
``<name>_schema``), so a misspelt option is an error. Those root configs keep Hydra from
writing anything: the run directory is the current one, with no ``.hydra`` and no log file.
"""

from __future__ import annotations

import logging
import sys
from typing import Callable, Sequence, TypeVar

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from data_pipeline.cli_errors import one_line_errors, run_command
from pretrain.config import CONFIG_DIR, check_known_keys

Schema = TypeVar("Schema")


def register_schema(name: str, schema: type) -> None:
    ConfigStore.instance().store(name=f"{name}_schema", node=schema)


def to_schema(cfg: DictConfig, schema: type[Schema]) -> Schema:
    check_known_keys(cfg, schema)
    config = OmegaConf.to_object(cfg)
    assert isinstance(config, schema)
    return config


def compose_config(name: str, schema: type[Schema], overrides: Sequence[str] = ()) -> Schema:
    """The command's config from command-line style overrides, outside ``hydra.main`` (tests, other tools)."""
    from hydra import compose, initialize_config_dir

    register_schema(name, schema)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return to_schema(compose(config_name=name, overrides=list(overrides)), schema)


def hydra_command(name: str, schema: type[Schema], run: Callable[[Schema], object]) -> Callable[[], None]:
    """The ``main()`` of a command; its logs go to stderr so that stdout carries the results,
    and its errors are one line (data_pipeline.cli_errors)."""
    register_schema(name, schema)

    @hydra.main(config_path=str(CONFIG_DIR), config_name=name, version_base="1.3")
    @one_line_errors
    def hydra_main(cfg: DictConfig) -> None:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
        run(to_schema(cfg, schema))

    return lambda: run_command(hydra_main)
