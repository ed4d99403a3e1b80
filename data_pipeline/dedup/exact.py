"""Exact duplicates: a 128-bit hash of the text (xxh3: non-cryptographic, several GB/s)."""

import xxhash


def exact_hash(text: str) -> bytes:
    """16-byte xxh3_128 digest of the UTF-8 text as given (normalize it first if copies that
    differ only in normalization should match)."""
    # surrogatepass: a lone surrogate (valid in JSON input) must hash, not raise
    return xxhash.xxh3_128_digest(text.encode("utf-8", "surrogatepass"))
