"""Masked language modelling, BERT style (Devlin et al. 2019): choose ``mask_rate`` of the
tokens; of those, replace ``mask_token_fraction`` by the mask token, ``random_token_fraction``
by a random token and leave the rest unchanged; predict the originals with bidirectional
attention, scoring only the chosen positions."""

from __future__ import annotations

import torch
from torch import Tensor

from data_pipeline.formats.special_tokens import SpecialTokens
from pretrain.model.gpt import AttentionMode
from pretrain.objectives.base import Batch, Objective, sample_generator


class MaskedLM(Objective):
    name = "mlm"
    attention_mode = AttentionMode.bidirectional

    def __init__(
        self,
        special: SpecialTokens,
        seq_len: int,
        seed: int,
        document_masking: bool = False,
        mask_rate: float = 0.15,
        mask_token_fraction: float = 0.8,
        random_token_fraction: float = 0.1,
    ) -> None:
        super().__init__(special, seq_len, seed, document_masking)
        if special.mask_id is None:
            raise ValueError(
                "objective=mlm needs a mask token, and the tokenizer has none (a Hugging Face tokenizer?); "
                "use objective=clm, or a tokenizer with a mask token (docs/hf.md)"
            )
        if not 0.0 < mask_rate < 1.0:
            raise ValueError(f"objective.mask_rate must be in (0, 1), got {mask_rate}")
        if mask_token_fraction < 0 or random_token_fraction < 0 or mask_token_fraction + random_token_fraction > 1:
            raise ValueError(
                "objective.mask_token_fraction and objective.random_token_fraction must be >= 0 and sum to at most 1, "
                f"got {mask_token_fraction} and {random_token_fraction}"
            )
        self.mask_rate = mask_rate
        self.mask_token_fraction = mask_token_fraction
        self.random_token_fraction = random_token_fraction
        is_special = torch.zeros(special.vocab_size, dtype=torch.bool)
        is_special[list(special.all_ids)] = True
        self._is_special = is_special
        self._ordinary_ids = torch.nonzero(~is_special).flatten()  # random replacements come from these

    def window_length(self) -> int:
        return self.seq_len

    def _corrupt(self, tokens: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Return (corrupted tokens, chosen positions) for one sample."""
        eligible = ~self._is_special[tokens]
        num_chosen = round(self.mask_rate * int(eligible.sum()))
        # Exactly num_chosen eligible positions: the lowest random scores among them.
        scores = torch.rand(tokens.shape, generator=generator).masked_fill(~eligible, 2.0)
        chosen = torch.zeros_like(eligible)
        chosen[torch.argsort(scores)[:num_chosen]] = True
        action = torch.rand(tokens.shape, generator=generator)
        to_mask = chosen & (action < self.mask_token_fraction)
        to_random = chosen & ~to_mask & (action < self.mask_token_fraction + self.random_token_fraction)
        random_ids = self._ordinary_ids[torch.randint(len(self._ordinary_ids), tokens.shape, generator=generator)]
        corrupted = torch.where(to_mask, self.special.mask_id, tokens)
        corrupted = torch.where(to_random, random_ids, corrupted)
        return corrupted, chosen

    def __call__(self, windows: Tensor, sample_ids: Tensor) -> Batch:
        corrupted, chosen = zip(
            *(
                self._corrupt(row, sample_generator(self.seed, int(sample_id)))
                for row, sample_id in zip(windows.cpu(), sample_ids.tolist())
            )
        )
        input_ids = torch.stack(corrupted).to(windows.device)
        return Batch(
            input_ids=input_ids,
            labels=windows,
            loss_mask=torch.stack(chosen).to(windows.device),
            # Documents are told apart by the original EOS positions, never masked.
            attention=self._attention(windows),
        )
