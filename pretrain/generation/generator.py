"""Prompts in, completions out: the one entry to every decoding strategy."""

from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence

import torch

from data_pipeline.tokenizer.chat_template import Message
from pretrain.generation.beam import beam_search
from pretrain.generation.sampling import decode_step_by_step
from pretrain.generation.settings import GenerationSettings, Strategy
from pretrain.generation.state import DecodingState
from pretrain.generation.stopping import Completions, StopStrings
from pretrain.inference.tokenizer import StartToken, TextTokenizer
from pretrain.model.gpt import GPT

log = logging.getLogger(__name__)

# Called with (prompt index, new text) as a completion grows.
OnText = Callable[[int, str], None]


class TextStream:
    """The printable text a growing list of ids adds. A character spelt in several byte
    tokens decodes to U+FFFD until its last byte arrives, so such a tail is held back."""

    def __init__(self, tokenizer: TextTokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.shown = 0

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        piece, self.shown = text[self.shown :], len(text)
        return piece


class Generator:
    """Completes prompts (``complete``), or with ``chat`` conversations (``complete_chats``:
    rendered with the tokenizer's chat template, ended at the end of the assistant's turn)."""

    def __init__(
        self,
        model: GPT,
        tokenizer: TextTokenizer,
        settings: GenerationSettings,
        start_token: StartToken = StartToken.auto,
        chat: bool = False,
    ) -> None:
        settings.validate()
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.settings = settings
        self.start_token = start_token
        self.template = tokenizer.chat_template() if chat else None
        self.end_ids = frozenset({tokenizer.special.eos_id, *(self.template.end_of_turn_ids if self.template else ())})
        self.stop = StopStrings(settings.stop, tokenizer.decode)
        device = next(model.parameters()).device
        # One random stream for all the batches this generator serves: seedable, not repeated.
        self.random = torch.Generator(device=device).manual_seed(settings.seed)

    def prompt_ids(self, prompt: str | Sequence[Message]) -> list[int]:
        """The prompt's ids after the start token, cut from the left to leave room for the
        completion. A conversation (chat) is rendered up to the assistant's turn; its
        template starts it, so ``start_token=auto`` adds nothing before it."""
        room = self.model.cfg.max_seq_len - self.settings.max_new_tokens
        if room < 1:
            raise ValueError(
                f"max_new_tokens={self.settings.max_new_tokens} leaves no room for a prompt in "
                f"model.max_seq_len={self.model.cfg.max_seq_len}; lower max_new_tokens"
            )
        if self.template is None:
            assert isinstance(prompt, str)
            ids = self.tokenizer.start_ids(self.start_token) + self.tokenizer.encode(prompt)
        else:
            start = [] if self.start_token is StartToken.auto else self.tokenizer.start_ids(self.start_token)
            ids = start + self.template.encode(list(prompt), add_generation_prompt=True).ids
        if len(ids) > room:
            log.warning("a prompt of %d tokens is cut to its last %d to leave room for the completion", len(ids), room)
            ids = ids[-room:]
        return ids

    def complete_ids(
        self, prompts: Sequence[Sequence[int]], on_token: Optional[Callable[[int, int], None]] = None
    ) -> list[list[int]]:
        """The completion ids (the end token left out) of each prompt; ``on_token(prompt, token)``
        sees every token as it is chosen, except under beam search."""
        settings, special, vocab_size = self.settings, self.tokenizer.special, self.tokenizer.vocab_size
        state = DecodingState(self.model, prompts, special.pad_id, settings.max_new_tokens, settings.use_cache)
        if settings.strategy is Strategy.beam:
            return beam_search(state, settings, vocab_size, self.end_ids, self.stop)
        completions = Completions(len(prompts), self.end_ids, self.stop)
        for step_tokens in decode_step_by_step(state, completions, settings, vocab_size, self.random):
            for row, token in step_tokens.items() if on_token is not None else ():
                on_token(row, token)
        return completions.tokens

    def complete(
        self, prompts: Sequence[str] | Sequence[Sequence[Message]], on_text: Optional[OnText] = None
    ) -> list[str]:
        """Each prompt's (with chat: each conversation's next turn), cut before the first stop string."""
        on_token = None
        if on_text is not None:
            streams = [TextStream(self.tokenizer) for _ in prompts]

            def on_token(row: int, token: int) -> None:
                if token not in self.end_ids:
                    on_text(row, streams[row].push(token))

        completions = self.complete_ids([self.prompt_ids(prompt) for prompt in prompts], on_token)
        return [self.stop.cut(self.tokenizer.decode(ids)) for ids in completions]
