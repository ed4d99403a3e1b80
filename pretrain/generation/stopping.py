"""When a completion is over: at an end token (EOS; in chat, the end of the turn too), or
once its text contains a stop string."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

Decode = Callable[[Sequence[int]], str]


class StopStrings:
    def __init__(self, stop: Sequence[str], decode: Decode) -> None:
        self.stop = list(stop)
        self.decode = decode

    def reached(self, completion: Sequence[int]) -> bool:
        if not self.stop:
            return False
        text = self.decode(completion)
        return any(stop in text for stop in self.stop)

    def cut(self, text: str) -> str:
        """The text before the first stop string in it."""
        ends = [text.find(stop) for stop in self.stop if stop in text]
        return text[: min(ends)] if ends else text


class Completions:
    """The tokens each row generated, the end token left out, and which rows are finished."""

    def __init__(self, batch_size: int, end_ids: frozenset[int], stop: StopStrings) -> None:
        self.end_ids = end_ids
        self.stop = stop
        self.tokens: list[list[int]] = [[] for _ in range(batch_size)]
        self.finished = torch.zeros(batch_size, dtype=torch.bool)

    def add(self, new_tokens: Tensor) -> list[int]:
        """Take one step's tokens (batch,); return the rows that took one (were not finished)."""
        taken = []
        for row, token in enumerate(new_tokens.tolist()):
            if self.finished[row]:
                continue
            taken.append(row)
            if token in self.end_ids:
                self.finished[row] = True
                continue
            self.tokens[row].append(token)
            if self.stop.reached(self.tokens[row]):
                self.finished[row] = True
        return taken

    @property
    def all_finished(self) -> bool:
        return bool(self.finished.all())
