"""The one progress bar of every command (curation, tokenization, training, evaluation,
generation): tqdm on stderr, drawn only when stderr is a terminal. Redrawn into a file (a
Slurm log, ``nohup``, ``| tee``) a bar is a carriage return per update that only bloats it."""

from __future__ import annotations

import sys
from typing import Any, Iterable, Optional

from tqdm import tqdm


def on_terminal() -> bool:
    """Whether stderr (where bars and log lines go) is a terminal, as looked up now."""
    return sys.stderr.isatty()


def progress_bar(iterable: Optional[Iterable] = None, *, disable: bool = False, **settings: Any) -> tqdm:
    """``tqdm(iterable, **settings)`` on stderr, off when ``disable`` or off a terminal."""
    return tqdm(iterable, disable=disable or not on_terminal(), file=sys.stderr, **settings)
