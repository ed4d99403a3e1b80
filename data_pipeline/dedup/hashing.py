"""Vectorized 64-bit mixing on uint64 arrays, and seeded constants that are stable everywhere.

numpy uint64 arithmetic on arrays wraps modulo 2**64, which is exactly the arithmetic these
hashes are defined in. Constants come from splitmix64, not from numpy's random generators, so a
seed gives the same hashes on every machine, process and numpy version.
"""

import numpy as np

_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX_MULTIPLIER_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_MULTIPLIER_2 = np.uint64(0x94D049BB133111EB)


def mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijection on uint64 that spreads every input bit over all bits."""
    mixed = np.asarray(values, dtype=np.uint64)
    mixed = (mixed ^ (mixed >> np.uint64(30))) * _MIX_MULTIPLIER_1
    mixed = (mixed ^ (mixed >> np.uint64(27))) * _MIX_MULTIPLIER_2
    return mixed ^ (mixed >> np.uint64(31))


def seeded_constants(seed: int, count: int, stream: int) -> np.ndarray:
    """`count` pseudo-random uint64 values for (seed, stream); distinct streams never overlap."""
    # splitmix64 visits state seed*2**32 + stream*2**24 + i; streams stay apart for count < 2**24
    first_state = (seed * 2**32 + stream * 2**24) % 2**64
    states = np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN_GAMMA + np.uint64(first_state)
    return mix64(states)


def odd_constants(seed: int, count: int, stream: int) -> np.ndarray:
    """Like `seeded_constants` but odd, so multiplying by one is a bijection modulo 2**64."""
    return seeded_constants(seed, count, stream) | np.uint64(1)
