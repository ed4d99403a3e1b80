"""Beam search: keep the ``num_beams`` most likely continuations of every prompt.

Every step each prompt's beams are extended by every token; of the ``2 · num_beams`` best
extensions, those ending the text (EOS or a stop string) become finished hypotheses and the
best others the next beams. A hypothesis scores log-probability / length ** length_penalty,
its length counting generated tokens (an EOS included).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pretrain.generation.logits import next_token_scores
from pretrain.generation.settings import GenerationSettings
from pretrain.generation.state import DecodingState
from pretrain.generation.stopping import StopStrings


@dataclass
class Hypotheses:
    """The best ``num_beams`` finished hypotheses of one prompt."""

    num_beams: int
    length_penalty: float
    scored: list[tuple[float, list[int]]] = field(default_factory=list)

    def score(self, log_prob: float, length: int) -> float:
        return log_prob / max(length, 1) ** self.length_penalty

    def add(self, tokens: list[int], log_prob: float, length: int) -> None:
        self.scored.append((self.score(log_prob, length), tokens))
        self.scored.sort(key=lambda item: item[0], reverse=True)
        del self.scored[self.num_beams :]

    def done(self, best_running_log_prob: float, length: int, max_length: int, early_stopping: bool) -> bool:
        """True when no running beam can enter the list any more."""
        if len(self.scored) < self.num_beams:
            return False
        if early_stopping:
            return True
        # Log-probabilities only fall as a beam grows, so its best reachable score is its
        # present log-probability over the length that flatters it most.
        best_length = max_length if self.length_penalty > 0 else length
        return self.scored[-1][0] >= self.score(best_running_log_prob, best_length)

    def best(self) -> list[int]:
        return self.scored[0][1] if self.scored else []


Candidate = tuple[int, int, float]  # (beam row it extends, token, log-probability)


def extend_beams(
    candidates: list[Candidate],
    sequences: list[list[int]],
    finished: Hypotheses,
    beams: int,
    end_ids: frozenset[int],
    stop: StopStrings,
) -> list[Candidate]:
    """One prompt's next beams from its best candidates (best first); endings among the
    first ``beams`` candidates join ``finished``."""
    kept: list[Candidate] = []
    for rank, (row, token, log_prob) in enumerate(candidates):
        if token in end_ids or stop.reached(sequences[row] + [token]):
            if rank < beams:  # an ending ranked below the beams would not have been one
                ended = sequences[row] if token in end_ids else sequences[row] + [token]
                finished.add(ended, log_prob, len(sequences[row]) + 1)
        elif len(kept) < beams:
            kept.append((row, token, log_prob))
    return kept


def beam_search(
    state: DecodingState, settings: GenerationSettings, vocab_size: int, end_ids: frozenset[int], stop: StopStrings
) -> list[list[int]]:
    """The best completion (its end token, EOS or end of turn, left out) of each prompt in ``state``."""
    prompts, beams = state.batch_size, settings.num_beams
    state.reorder(torch.arange(prompts).repeat_interleave(beams))
    # All beams of a prompt start out equal: only the first one may extend at step one.
    running = torch.full((prompts, beams), float("-inf"))
    running[:, 0] = 0.0
    running = running.flatten()
    sequences: list[list[int]] = [[] for _ in range(prompts * beams)]
    finished = [Hypotheses(beams, settings.length_penalty) for _ in range(prompts)]
    done = [False] * prompts
    for step in range(settings.max_new_tokens):
        scores = next_token_scores(state.logits, state.tokens, state.real, vocab_size, settings)
        width = scores.shape[-1]
        log_probs = scores.log_softmax(dim=-1).cpu() + running[:, None]
        top_log_probs, top_ids = log_probs.view(prompts, -1).topk(2 * beams, dim=-1)
        next_beams: list[Candidate] = []
        for prompt in range(prompts):
            kept: list[Candidate] = []
            if not done[prompt]:
                candidates = [
                    (prompt * beams + index // width, index % width, log_prob)
                    for log_prob, index in zip(top_log_probs[prompt].tolist(), top_ids[prompt].tolist())
                ]
                kept = extend_beams(candidates, sequences, finished[prompt], beams, end_ids, stop)
                best = max((log_prob for _, _, log_prob in kept), default=float("-inf"))
                done[prompt] = best == float("-inf") or finished[prompt].done(
                    best, step + 1, settings.max_new_tokens, settings.early_stopping
                )
            # Rows of a finished prompt, or beyond its candidates, run on with anything.
            next_beams += kept + [(prompt * beams, min(end_ids), float("-inf"))] * (beams - len(kept))
        sequences = [sequences[row] + [token] for row, token, _ in next_beams]
        running = torch.tensor([log_prob for _, _, log_prob in next_beams])
        if all(done) or step == settings.max_new_tokens - 1:
            break
        state.reorder(torch.tensor([row for row, _, _ in next_beams]))
        state.advance(torch.tensor([token for _, token, _ in next_beams]))
    for prompt in range(prompts):
        if not done[prompt]:  # out of tokens: the running beams compete as they are
            for row in range(prompt * beams, (prompt + 1) * beams):
                finished[prompt].add(sequences[row], float(running[row]), len(sequences[row]))
    return [hypotheses.best() for hypotheses in finished]
