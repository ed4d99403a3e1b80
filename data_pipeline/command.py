"""How every command starts: ``python -m data_pipeline.<command>`` and ``python -m pretrain.<command>``.

A command is a typed config (a dataclass, Hydra's schema ``<name>_schema``), a root config
``configs/<name>.yaml`` built on it, and a function that runs it::

    main = hydra_command("evaluate", EvaluateConfig, evaluate)

    if __name__ == "__main__":
        main()

``main()`` composes the config from the command line, refuses a key the schema lacks (with a
"did you mean"), calls the function with the config as a schema instance, and turns every
config or input error into one line, ``error: ...`` (data_pipeline.cli_errors). Its
``--help`` lists the command's own config groups only (configs/hydra/help/command.yaml).
This module sits in data_pipeline because pretrain imports data_pipeline, never the reverse.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence, TypeVar

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from data_pipeline.cli_errors import one_line_errors, run_command, unknown_setting

# Absolute: Hydra takes a relative path against the calling module's package, not its folder.
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

Schema = TypeVar("Schema")


def register_schema(name: str, schema: type) -> None:
    """``configs/<name>.yaml`` starts its defaults list with ``<name>_schema``."""
    ConfigStore.instance().store(name=f"{name}_schema", node=schema)


def check_known_keys(node: DictConfig, schema: type, prefix: str = "") -> None:
    """Hydra's ``+key=value`` can add keys even to a typed config; refuse any the schema lacks."""
    fields = [f.name for f in dataclasses.fields(schema)]
    for key in node.keys():
        if key not in fields:
            raise ValueError(unknown_setting(str(key), prefix, schema))
        child_type = OmegaConf.get_type(node, key)
        if dataclasses.is_dataclass(child_type):
            check_known_keys(node[key], child_type, f"{prefix}{key}.")


def to_schema(cfg: DictConfig, schema: type[Schema]) -> Schema:
    """The composed config as the schema's dataclasses (enums resolved, interpolations done)."""
    check_known_keys(cfg, schema)
    config = OmegaConf.to_object(cfg)
    assert isinstance(config, schema)
    return config


def compose_config(name: str, schema: type[Schema], overrides: Sequence[str] = ()) -> Schema:
    """The command's config from command-line style overrides, outside a command (tests, notebooks, tools)."""
    register_schema(name, schema)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return to_schema(compose(config_name=name, overrides=list(overrides)), schema)


def hydra_command(
    name: str,
    schema: type[Schema],
    run: Callable[[Schema], object],
    log_format: Optional[str] = "%(message)s",
) -> Callable[[], None]:
    """The ``main()`` of the command whose root config is ``configs/<name>.yaml``.

    ``log_format``: logging to stderr in that format, so that stdout carries the results;
    None leaves logging to the command (training writes its own log)."""
    register_schema(name, schema)

    def task(cfg: DictConfig) -> None:
        if log_format is not None:
            logging.basicConfig(level=logging.INFO, format=log_format, stream=sys.stderr)
        run(to_schema(cfg, schema))

    # Hydra names the job after the task's module (--help's header; Slurm's job name under
    # hydra/launcher=slurm): the command's name, not this module's.
    task.__module__ = name
    hydra_main = hydra.main(config_path=str(CONFIG_DIR), config_name=name, version_base="1.3")(one_line_errors(task))
    return lambda: run_command(hydra_main)


def _sets_part_of(cfg: DictConfig, group: str) -> bool:
    """Whether the group's package (``filters/c4`` -> ``filters.c4``) is a part of the config."""
    parent, _, key = group.replace("/", ".").rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return isinstance(node, DictConfig) and key in node


def own_config_groups(*, _root_: DictConfig) -> str:
    """``--help``'s list of config groups (``configs/<group>/<option>.yaml``): those the
    command's defaults list chooses from (``experiment``) and those that set a part of its
    config (``model``, ``filters/c4``), each with its options. Every command shares configs/,
    so Hydra alone would list them all."""
    options: dict[str, list[str]] = {}
    for path in sorted(CONFIG_DIR.glob("*/**/*.yaml")):
        options.setdefault(path.parent.relative_to(CONFIG_DIR).as_posix(), []).append(path.stem)
    choices = _root_.hydra.runtime.choices
    lines = [
        f"{group}: {', '.join(names)}"
        for group, names in sorted(options.items())
        if group.split("/")[0] != "hydra" and (group in choices or _sets_part_of(_root_, group))
    ]
    return "\n".join(lines) or "(none; override the settings below with key=value)"


def _copied_config_dir(output_dir: Optional[str]) -> Optional[str]:
    """Hydra keeps the resolved config in ``<output_dir>/.hydra``; without an output_dir
    nothing is written and the command stops on the missing value with a short error,
    instead of failing inside Hydra's run-directory set-up."""
    return ".hydra" if output_dir else None


OmegaConf.register_new_resolver("own_config_groups", own_config_groups, replace=True)
OmegaConf.register_new_resolver("copied_config_dir", _copied_config_dir, replace=True)
