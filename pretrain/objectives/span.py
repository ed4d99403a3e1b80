"""T5 span corruption (Raffel et al. 2020), laid out for a decoder-only model.

A window of ``n`` tokens gets ``round(n · noise_density)`` noise tokens in
``round(noise / mean_span_length)`` spans. The sample is the corrupted input (each span
replaced by its own sentinel) followed by the targets (each sentinel, then the span it hid):

    [a b S0 e S1 h] [S0 c d S1 f g]

Attention is prefix-LM (bidirectional over the corrupted input, causal over the targets), and
the loss covers the target tokens only. Both parts together always hold ``n + 2 · spans``
tokens, so every sample has the same length and nothing is padded.
"""

from __future__ import annotations

import torch
from torch import Tensor

from data_pipeline.formats.special_tokens import SpecialTokens
from pretrain.model.gpt import AttentionMode
from pretrain.objectives.base import Batch, Objective, sample_generator


def span_counts(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """(noise tokens, spans) for a window of ``length`` tokens."""
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    num_spans = min(max(round(num_noise / mean_span_length), 1), num_noise, length - num_noise)
    return num_noise, num_spans


def _random_segmentation(total: int, parts: int, generator: torch.Generator) -> Tensor:
    """Split ``total`` items into ``parts`` non-empty runs at uniformly random cut points."""
    cuts = torch.randperm(total - 1, generator=generator)[: parts - 1] + 1
    bounds = torch.cat((torch.tensor([0]), cuts.sort().values, torch.tensor([total])))
    return torch.diff(bounds)


def noise_mask(length: int, num_noise: int, num_spans: int, generator: torch.Generator) -> Tensor:
    """Boolean mask of ``length`` with ``num_noise`` True values in ``num_spans`` runs; the
    window starts with kept tokens, as in T5."""
    noise_lengths = _random_segmentation(num_noise, num_spans, generator)
    kept_lengths = _random_segmentation(length - num_noise, num_spans, generator)
    run_lengths = torch.stack((kept_lengths, noise_lengths), dim=1).flatten()
    run_is_noise = torch.tensor([False, True]).repeat(num_spans)
    return torch.repeat_interleave(run_is_noise, run_lengths)


def corrupt_spans(tokens: Tensor, noise: Tensor, sentinel_ids: Tensor) -> tuple[Tensor, Tensor]:
    """(corrupted input, targets) for one window and its noise mask."""
    previous = torch.cat((torch.tensor([False]), noise[:-1]))
    span_start = noise & ~previous
    span_index = torch.cumsum(span_start.to(torch.int64), dim=0) - 1
    sentinels = sentinel_ids[span_index.clamp(min=0)]
    inputs = torch.where(span_start, sentinels, tokens)[~noise | span_start]
    # Each noise token, preceded by its span's sentinel when it opens the span.
    pairs = torch.stack((torch.where(span_start, sentinels, -1), tokens), dim=1)[noise].flatten()
    return inputs, pairs[pairs >= 0]


class SpanCorruption(Objective):
    name = "span"
    attention_mode = AttentionMode.prefix

    def __init__(
        self,
        special: SpecialTokens,
        seq_len: int,
        seed: int,
        document_masking: bool = False,
        noise_density: float = 0.15,
        mean_span_length: float = 3.0,
    ) -> None:
        if document_masking:
            # Noise spans carry EOS tokens into the targets, so documents no longer line up.
            raise ValueError("objective.document_masking does not apply to span corruption; set it to false")
        super().__init__(special, seq_len, seed)
        if not 0.0 < noise_density < 1.0:
            raise ValueError(f"objective.noise_density must be in (0, 1), got {noise_density}")
        if mean_span_length < 1.0:
            raise ValueError(f"objective.mean_span_length must be >= 1, got {mean_span_length}")
        self.noise_density = noise_density
        self.mean_span_length = mean_span_length
        self._window = self._longest_window()
        self.num_noise, self.num_spans = span_counts(self._window, noise_density, mean_span_length)
        if self.num_spans > len(special.sentinel_ids):
            raise ValueError(
                f"span corruption of {seq_len}-token samples needs {self.num_spans} sentinel tokens, but the tokenizer "
                f"has {len(special.sentinel_ids)}; train the tokenizer with more sentinels, raise "
                "objective.mean_span_length, or lower the sequence length (a Hugging Face tokenizer has none: "
                "use objective=clm, docs/hf.md)"
            )
        self._sentinel_ids = torch.tensor(special.sentinel_ids, dtype=torch.int64)

    def _longest_window(self) -> int:
        """The longest window whose sample (inputs + targets, minus the final label shift)
        fits in ``seq_len`` positions."""
        for length in range(self.seq_len + 1, 1, -1):
            _, spans = span_counts(length, self.noise_density, self.mean_span_length)
            if length + 2 * spans <= self.seq_len + 1:
                return length
        raise ValueError(f"sequence length {self.seq_len} is too short for span corruption")

    def window_length(self) -> int:
        return self._window

    def __call__(self, windows: Tensor, sample_ids: Tensor) -> Batch:
        sequences, prefix_lengths = [], []
        for row, sample_id in zip(windows.cpu(), sample_ids.tolist()):
            generator = sample_generator(self.seed, int(sample_id))
            noise = noise_mask(self._window, self.num_noise, self.num_spans, generator)
            inputs, targets = corrupt_spans(row, noise, self._sentinel_ids)
            sequences.append(torch.cat((inputs, targets)))
            prefix_lengths.append(len(inputs))
        full = torch.stack(sequences).to(windows.device)
        input_ids, labels = full[:, :-1], full[:, 1:]
        prefix_len = torch.tensor(prefix_lengths, device=windows.device)
        # Position t predicts token t + 1: the loss starts where the next token is a target.
        positions = torch.arange(input_ids.shape[1], device=windows.device)
        loss_mask = (positions[None, :] + 1) >= prefix_len[:, None]
        return Batch(
            input_ids=input_ids,
            labels=labels,
            loss_mask=loss_mask,
            attention=self._attention(input_ids, prefix_len=prefix_len),
        )
