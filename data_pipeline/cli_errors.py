"""One-line errors for every command (pretrain.* and data_pipeline.*).

A config or input error prints ``error: <what, naming the setting or file, and the fix>`` on
rank 0 only and exits with status 1: no traceback, no Hydra banner. ``HYDRA_FULL_ERROR=1`` or
``--debug`` on the command line shows the whole traceback instead. Usage::

    @hydra.main(...)
    @one_line_errors            # errors of the command itself
    def main(cfg): ...

    run_command(main)           # errors of Hydra's config composition (misspelt keys, ...)

which data_pipeline/command.py's ``hydra_command`` does for every command.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
import sys
from typing import Any, Callable, Optional

from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException, OverrideParseException
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

DEBUG_FLAG = "--debug"
_asked_for_traceback = False
_running = False


def process_rank() -> int:
    """This process's rank before any process group exists (torchrun, deepspeed, srun)."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


def unknown_setting(key: str, prefix: str, schema: Any, inside: str = "") -> str:
    """``unknown setting <prefix><key> (<Schema>); did you mean <prefix><closest field>?``;
    ``inside``: where the key was given, when that is not its prefix (a list item)."""
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        return f"unknown setting {prefix}{key}{inside}"
    close = difflib.get_close_matches(key, [f.name for f in dataclasses.fields(schema)], n=1)
    suggestion = f"; did you mean {prefix}{close[0]}?" if close else ""
    return f"unknown setting {prefix}{key}{inside} ({schema.__name__}){suggestion}"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _omegaconf_message(err: OmegaConfBaseException, override: str = "") -> str:
    """``override``: the command-line key Hydra was merging (the error's own key is relative
    to the list item when the mistake is inside a list such as ``tasks=[...]``)."""
    full_key = str(err.full_key or err.key or "")
    if isinstance(err, (ConfigKeyError, ConfigAttributeError)) and err.key is not None:
        key = str(err.key)
        inside = f" in {override}" if override and not full_key.startswith(override) else ""
        return unknown_setting(key, full_key[: len(full_key) - len(key)], err.object_type, inside)
    if isinstance(err, MissingMandatoryValue):
        return f"missing setting {full_key}: give {full_key}=..."
    message = _first_line(err.msg)
    return f"{full_key}: {message}" if full_key and full_key not in message else message


def describe(err: BaseException) -> str:
    """The error as one line (what was wrong, where, and the fix when the message says it)."""
    if isinstance(err, MissingConfigException) and err.options:
        group = (err.missing_cfg_file or "").rsplit("/", 1)
        wanted = f"{group[0]}={group[-1]}" if len(group) == 2 else err.missing_cfg_file
        return f"{wanted}: no such choice; choose one of {', '.join(sorted(err.options))}"
    if isinstance(err, OverrideParseException):
        return f"cannot read {err.override!r}: {_first_line(str(err))} (quote lists and dicts: 'key=[...]')"
    if isinstance(err.__cause__, OmegaConfBaseException) and isinstance(err, ConfigCompositionException):
        overridden = re.search(r"override '?\+*([^'=]+)", str(err))
        return _omegaconf_message(err.__cause__, overridden.group(1) if overridden else "")
    if isinstance(err, OmegaConfBaseException):
        return _omegaconf_message(err)
    message = str(err).strip() or type(err).__name__
    if isinstance(err, (HydraException, ValidationError)):
        return _first_line(message)
    if isinstance(err, (ValueError, OSError, KeyError, TypeError)):
        return message.strip("'\"") if isinstance(err, KeyError) else message
    # Not a config or input error the code foresaw: say how to see where it came from.
    return f"{type(err).__name__}: {message} (--debug shows the traceback)"


# Where every rank also sends its error line (pretrain.training.run_log: the run's train.log), once set.
_error_sink: Optional[Callable[[str], None]] = None


def send_errors_to(sink: Callable[[str], None]) -> None:
    global _error_sink
    _error_sink = sink


def report(err: BaseException) -> None:
    """Print the one line on rank 0; every rank also hands it to the error sink, if one is set."""
    line = f"error: {describe(err)}"
    rank = process_rank()
    if rank == 0:
        print(line, file=sys.stderr, flush=True)
    if _error_sink is not None:
        _error_sink(f"rank {rank}: {line}")


def one_line_errors(task: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command's function: an exception becomes one line and exit status 1."""

    @functools.wraps(task)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except Exception as err:
            if _asked_for_traceback:
                raise
            report(err)
            raise SystemExit(1) from None

    return wrapped


def run_command(main: Callable[[], Any], argv: Optional[list[str]] = None) -> None:
    """Call a ``hydra.main`` entry point so that Hydra's own errors are one line too."""
    global _asked_for_traceback, _running
    if _running:  # an entry point that already wraps itself, called from a wrapper
        main()
        return
    arguments = sys.argv if argv is None else argv
    _asked_for_traceback = DEBUG_FLAG in arguments[1:] or os.environ.get("HYDRA_FULL_ERROR") == "1"
    sys.argv = [arg for arg in arguments if arg != DEBUG_FLAG]
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises its errors to us instead of printing them
    _running = True
    try:
        main()
    except Exception as err:
        if _asked_for_traceback:
            raise
        report(err)
        raise SystemExit(1) from None
    finally:
        _running = False
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous
