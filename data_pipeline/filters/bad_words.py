"""Word lists for C4's bad-words rule (Raffel et al. 2020, section 2.2: C4 drops "any page that
contained any word on the List of Dirty, Naughty, Obscene or Otherwise Bad Words").

``filters.c4.bad_words=default`` takes bad_words_en.txt, a short stand-in list written for this
project (public domain, like the rest of the project's own text); the list C4 used is LDNOOBW
(github.com/LDNOOBW/List-of-Dirty-Naughty-Obscene-and-Otherwise-Bad-Words, CC-BY-4.0), which
users fetch themselves and point to: ``filters.c4.bad_words=/path/to/LDNOOBW/en``. A list is one
word or phrase a line; blank lines and lines starting with ``#`` are skipped."""

from __future__ import annotations

import importlib.resources
import re
from functools import lru_cache
from pathlib import Path

DEFAULT = "default"


def bad_words_file(spec: str) -> Path:
    if spec == DEFAULT:
        return Path(str(importlib.resources.files("data_pipeline.filters") / "bad_words_en.txt"))
    return Path(spec).expanduser()


def load_bad_words(spec: str) -> list[str]:
    """The words and phrases of the list ``spec`` names, lower-cased; an error naming the file
    when it is missing, unreadable or holds no word."""
    path = bad_words_file(spec)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(
            f"filters.c4.bad_words={spec}: cannot read {path} ({type(error).__name__}: {error}); "
            "give a UTF-8 file with one word a line, or 'default' for the bundled list"
        ) from None
    words = [line.strip().lower() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not words:
        raise ValueError(f"filters.c4.bad_words={spec}: {path} holds no word (one word or phrase a line)")
    return words


@lru_cache(maxsize=4)
def bad_words_pattern(spec: str) -> re.Pattern[str]:
    """Matches any listed word or phrase in lower-cased text, not inside a longer word (C4's
    reference code: no letter a-z on either side)."""
    words = sorted(set(load_bad_words(spec)), key=len, reverse=True)
    return re.compile(r"(?<![a-z])(?:" + "|".join(map(re.escape, words)) + r")(?![a-z])")
