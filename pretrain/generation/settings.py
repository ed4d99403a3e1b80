"""How to generate: the decoding strategy and its knobs (also a Hydra schema)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pretrain.choices import Choice


class Strategy(Choice):
    greedy = "greedy"  # the most likely token at every step
    beam = "beam"  # the most likely sequence among num_beams kept at every step
    sample = "sample"  # draw from the (temperature, top-k, top-p) filtered distribution


@dataclass
class GenerationSettings:
    strategy: Strategy = Strategy.greedy
    max_new_tokens: int = 128
    # Generation also stops at EOS and, per prompt, once its completion contains one of these.
    stop: list[str] = field(default_factory=list)
    # > 1 makes tokens already in the prompt or completion less likely (CTRL's penalty).
    repetition_penalty: float = 1.0
    # Reuse earlier positions' keys and values instead of recomputing them every step.
    use_cache: bool = True
    # beam
    num_beams: int = 4
    # Hypotheses are ranked by log-probability / generated_length ** length_penalty:
    # > 0 favours longer ones, < 0 shorter ones.
    length_penalty: float = 1.0
    # true: stop a prompt once num_beams hypotheses ended; false: once no running beam can
    # still beat the worst of them.
    early_stopping: bool = True
    # sample
    temperature: float = 1.0
    top_k: int = 0  # keep the k most likely tokens; 0 keeps all
    top_p: float = 1.0  # keep the smallest set of most likely tokens whose probability reaches p
    seed: int = 0

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens}: generate at least 1 token")
        if self.strategy is Strategy.beam and self.num_beams < 1:
            raise ValueError(f"num_beams={self.num_beams}: beam search needs at least 1 beam")
        if self.temperature <= 0:
            raise ValueError(
                f"temperature={self.temperature} must be > 0; for deterministic output use strategy=greedy"
            )
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be >= 0 (0 switches it off)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1] (1 switches it off)")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty={self.repetition_penalty} must be > 0 (1 switches it off)")
        if any(not text for text in self.stop):
            raise ValueError("stop holds an empty string, which would stop at once; remove it")
