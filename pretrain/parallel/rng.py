"""The random stream of tensor-parallel regions (Megatron's model-parallel RNG tracker,
Shoeybi et al. 2019, section 3).

Ranks of a tensor-parallel group hold the same replicated activations (the residual stream),
so dropout there must draw the same mask on each: they share the default generator's stream
(the trainer seeds it alike on them). Inside a tensor-parallel region each rank holds other
heads; drawn from the shared stream, every rank's heads would get the masks of the first
rank's. There a rank draws from a stream of its own, seeded with its tensor-parallel rank:
:func:`fork` swaps it in for the device's default generator and back out afterwards.

Recompute must replay the masks of the forward pass. The stream lives in DeepSpeed's tracker
(``get_cuda_rng_tracker``: it holds a state of the accelerator's generator, CUDA's on a GPU
and the CPU's without one) because DeepSpeed's activation checkpointing, which the pipeline's
recompute uses, saves and restores that tracker with the default generators; for torch's
checkpoint (the non-pipelined model's), :func:`recompute_contexts` does the same.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Iterator

import torch

STREAM = "pretrain-tensor-parallel"
# Distinct from the default stream's seeds (seed + 7919 · dp rank + stage + 1_000_003 · step).
RANK_OFFSET = 2718


def get_cuda_rng_tracker():  # type: ignore[no-untyped-def]
    """DeepSpeed's tracker, imported when first needed (the model's modules do not import
    DeepSpeed)."""
    from deepspeed.runtime.activation_checkpointing.checkpointing import get_cuda_rng_tracker as tracker

    return tracker()


def seed(base: int, tp_rank: int) -> None:
    """Start this rank's tensor-parallel stream; ``base`` seeds its default stream. Without
    tensor parallelism the stream is seeded too but never drawn from."""
    tracker = get_cuda_rng_tracker()
    tracker.reset()
    tracker.add(STREAM, base + RANK_OFFSET * (tp_rank + 1))


def fork() -> ContextManager[None]:
    """Draw from this rank's tensor-parallel stream inside the block."""
    if STREAM not in get_cuda_rng_tracker().get_states():
        raise RuntimeError(
            "dropout in a tensor-parallel region needs its stream: call pretrain.parallel.rng.seed first"
        )
    return get_cuda_rng_tracker().fork(STREAM)


def states() -> dict[str, torch.Tensor]:
    """The stream's state, for a checkpoint (empty when never seeded)."""
    return get_cuda_rng_tracker().get_states()


def set_states(saved: dict[str, torch.Tensor]) -> None:
    get_cuda_rng_tracker().set_states(dict(saved))


@contextlib.contextmanager
def _replaying(saved: dict[str, torch.Tensor]) -> Iterator[None]:
    """Run the block with the stream as it was at ``saved``, then go on from where it is now."""
    now = states()
    set_states(saved)
    try:
        yield
    finally:
        set_states(now)


def recompute_contexts() -> tuple[ContextManager[None], ContextManager[None]]:
    """``context_fn`` of ``torch.utils.checkpoint``: the forward pass runs as it is, and its
    recompute with the stream it started from (torch restores only the default generators)."""
    return contextlib.nullcontext(), _replaying(states())
