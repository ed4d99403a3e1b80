"""Stage 4, one job per input unit: copy the unit's filtered documents to the clean output
shards, leaving out the documents under the quality stage's cut (with filters.quality.keep_fraction)
and the duplicates that the clusters stage named (they go to removed/ with the id they
duplicate, and to the duplicate map)."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import numpy as np

from data_pipeline.curate.config import CurateConfig
from data_pipeline.curate.filter_stage import dedup_enabled
from data_pipeline.curate.output_dir import CurateOutputDir
from data_pipeline.curate.quality_stage import STAGE as QUALITY
from data_pipeline.curate.quality_stage import quality_cut, ranks_by_quality
from data_pipeline.dedup.keys import KeyStore, row_of
from data_pipeline.filters.quality import SCORE_KEY, score_bin
from data_pipeline.io.units import InputUnit
from data_pipeline.io.writers import ShardWriter, iter_shard, output_writer


def unit_removals(layout: CurateOutputDir, unit: InputUnit, store: KeyStore) -> dict[int, tuple[str, str]]:
    """row -> (id of the survivor it duplicates, "exact" or "near") for the unit's duplicates."""
    path = layout.removals(unit.key)
    if not path.exists():  # the clusters stage writes a file only for units with duplicates
        return {}
    removed, survivors = np.load(path).T
    # exact when the texts hash alike: the same test whichever pairs linked the two
    is_exact = np.all(store.exact(removed) == store.exact(survivors), axis=1)
    kinds = np.where(is_exact, "exact", "near").tolist()
    return dict(zip(row_of(removed).tolist(), zip(store.ids(survivors), kinds)))


def write_unit(unit: InputUnit, config: CurateConfig, permutations: int) -> dict[str, Any]:
    layout = CurateOutputDir(config.output_dir)
    dedup = dedup_enabled(config)
    removals = unit_removals(layout, unit, KeyStore(layout.keys, permutations)) if dedup else {}
    cut = quality_cut(layout)["threshold_bin"] if ranks_by_quality(config) else None
    stats: dict[str, Any] = {"documents_out": 0, "bytes_out": 0, "shards": [], "removed": {}}
    stats["removed"] |= {"exact": 0, "near": 0} if dedup else {}
    stats["removed"] |= {QUALITY: 0} if cut is not None else {}
    filtered_shards = CurateOutputDir.shards_of(layout.filtered_prefix(unit.key))
    with ExitStack() as stack:
        output = stack.enter_context(output_writer(layout.output_prefix(unit.key), config.output))
        if dedup:
            duplicate_map = stack.enter_context(ShardWriter(layout.removed_prefix("duplicate_map", unit.key)))
        removed = below_cut = None
        if config.output.write_removed:
            removed = stack.enter_context(ShardWriter(layout.removed_prefix("dedup", unit.key))) if dedup else None
            below_cut = (
                stack.enter_context(ShardWriter(layout.removed_prefix(QUALITY, unit.key))) if cut is not None else None
            )
        row = 0
        for shard in filtered_shards:
            for record in iter_shard(shard):
                if cut is not None and score_bin(record["meta"][SCORE_KEY]) < cut:
                    stats["removed"][QUALITY] += 1
                    if below_cut is not None:
                        below_cut.write({**record, "reason": "quality:below_keep_fraction"})
                elif row in removals:
                    kept_id, kind = removals[row]
                    stats["removed"][kind] += 1
                    duplicate_map.write({"id": record["id"], "duplicate_of": kept_id, "kind": kind})
                    if removed is not None:
                        removed.write({**record, "reason": f"dedup:{kind}", "duplicate_of": kept_id})
                else:
                    output.write(record)
                    stats["documents_out"] += 1
                    stats["bytes_out"] += len(record["text"].encode("utf-8"))
                row += 1
        stats["shards"] = [path.name for path in output.close()]
    return stats
