"""Exact and MinHash-LSH near-duplicate detection over whole corpora (see docs/dedup.md)."""

from data_pipeline.dedup.clusters import find_duplicates
from data_pipeline.dedup.config import MinHashConfig
from data_pipeline.dedup.exact import exact_hash
from data_pipeline.dedup.minhash import MinHasher, estimate_jaccard

__all__ = ["MinHashConfig", "MinHasher", "estimate_jaccard", "exact_hash", "find_duplicates"]
