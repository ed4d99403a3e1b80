"""Stage 2, one job for the whole corpus: gather every file's dedup keys in the global order
(input file, then line), find duplicate clusters across all files, and write for each file
which of its rows to drop and the id each duplicates.

The survivor of a cluster is its earliest document, so the result depends on the inputs
alone, not on how many tasks or workers produced the keys."""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from data_pipeline.curate.config import CurateConfig
from data_pipeline.dedup.clusters import find_duplicates
from data_pipeline.curate.layout import Layout
from data_pipeline.io.readers import InputSource
from data_pipeline.dedup.minhash import MinHasher
from data_pipeline.signatures import Signatures, minhash_params
from data_pipeline.io.writers import ShardWriter, atomic_write_text


def band_keys(signatures: Signatures, config: CurateConfig) -> np.ndarray:
    """LSH band keys of every document; none when near dedup is off."""
    if not config.dedup.near:
        return np.empty((len(signatures.ids), 0), dtype=np.uint64)
    return MinHasher(minhash_params(config.dedup)).bands_of(signatures.minhashes)


def deduplicate(sources: list[InputSource], config: CurateConfig) -> dict[str, Any]:
    layout = Layout(config.output_dir)
    per_source = [Signatures.load(layout.signatures(source.index)) for source in sources]
    rows_per_source = [len(part.ids) for part in per_source]
    signatures = Signatures.concatenate(per_source)
    if len(signatures.ids):
        duplicate_of = find_duplicates(
            band_keys(signatures, config),
            signatures.exact_hashes() if config.dedup.exact else None,
            signatures=signatures.minhashes if config.dedup.near else None,
            min_jaccard=config.dedup.minhash.min_jaccard,
        )
    else:
        duplicate_of = np.empty(0, dtype=np.int64)
    removed_rows = np.flatnonzero(duplicate_of >= 0)
    is_exact = (
        np.all(signatures.exact[removed_rows] == signatures.exact[duplicate_of[removed_rows]], axis=1)
        if len(removed_rows)
        else np.empty(0, dtype=bool)
    )
    offsets = np.concatenate(([0], np.cumsum(rows_per_source)))
    with ShardWriter(layout.duplicate_map_prefix) as duplicate_map:
        for source, start, stop in zip(sources, offsets[:-1], offsets[1:]):
            in_source = (removed_rows >= start) & (removed_rows < stop)
            rows, exact = removed_rows[in_source], is_exact[in_source]
            kept_ids = signatures.ids[duplicate_of[rows]] if len(rows) else []
            entries = {
                "rows": (rows - start).tolist(),
                "duplicate_of": [str(kept_id) for kept_id in kept_ids],
                "kind": ["exact" if flag else "near" for flag in exact],
            }
            atomic_write_text(layout.duplicates(source.index), json.dumps(entries))
            for row, kept_id, kind in zip(rows, entries["duplicate_of"], entries["kind"]):
                duplicate_map.write({"id": str(signatures.ids[row]), "duplicate_of": kept_id, "kind": kind})
    stats = {
        "documents_in": int(len(duplicate_of)),
        "removed": {"exact": int(is_exact.sum()), "near": int(len(is_exact) - is_exact.sum())},
    }
    atomic_write_text(layout.dedup_stats, json.dumps(stats, indent=1))
    return stats
