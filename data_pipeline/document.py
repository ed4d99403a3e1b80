"""The unit that flows through curation: one document with its id, metadata and origin."""

from __future__ import annotations

from typing import Any

from data_pipeline.text import split_tokens


class Document:
    """A document being curated. Its tokens are split once, on first use, and shared by the
    filters that need them; changing the text drops them."""

    __slots__ = ("id", "meta", "source", "line", "_text", "_tokens")

    def __init__(self, id: str, text: str, meta: dict[str, Any], source: str, line: int) -> None:
        self.id = id
        self.meta = meta
        self.source = source  # the input file (as named in derived ids) ...
        self.line = line  # ... and the 1-based line or row it came from
        self._text = text
        self._tokens: list[str] | None = None

    @property
    def text(self) -> str:
        return self._text

    @text.setter
    def text(self, value: str) -> None:
        self._text = value
        self._tokens = None

    @property
    def tokens(self) -> list[str]:
        if self._tokens is None:
            self._tokens = split_tokens(self._text)
        return self._tokens

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "text": self._text, "meta": self.meta}
