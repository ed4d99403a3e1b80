"""Stage 3, one job per input file: copy the file's filtered documents to the clean output
shards, leaving out the duplicates that the dedup stage named (they go to removed/ with the
id they duplicate)."""
from __future__ import annotations

import json
from contextlib import ExitStack
from typing import Any

from data_pipeline.curate.config import CurateConfig
from data_pipeline.curate.layout import Layout
from data_pipeline.io.readers import InputSource
from data_pipeline.io.writers import ShardWriter, atomic_write_text, iter_shard, output_writer


def write_source(source: InputSource, config: CurateConfig) -> dict[str, Any]:
    layout = Layout(config.output_dir)
    duplicates = json.loads(layout.duplicates(source.index).read_text())
    removed_rows = {
        row: (kept_id, kind) for row, kept_id, kind in zip(duplicates["rows"], duplicates["duplicate_of"], duplicates["kind"])
    }
    stats: dict[str, Any] = {"documents_out": 0, "bytes_out": 0, "shards": []}
    filtered_shards = Layout.shards_of(layout.filtered_prefix(source.index))
    with ExitStack() as stack:
        output = stack.enter_context(output_writer(layout.output_prefix(source.index), config.output))
        removed = (
            stack.enter_context(ShardWriter(layout.removed_prefix("dedup", source.index)))
            if config.output.write_removed
            else None
        )
        row = 0
        for shard in filtered_shards:
            for record in iter_shard(shard):
                if row in removed_rows:
                    kept_id, kind = removed_rows[row]
                    if removed is not None:
                        removed.write({**record, "reason": f"dedup:{kind}", "duplicate_of": kept_id})
                else:
                    output.write(record)
                    stats["documents_out"] += 1
                    stats["bytes_out"] += len(record["text"].encode("utf-8"))
                row += 1
        stats["shards"] = [path.name for path in output.close()]
    atomic_write_text(layout.write_stats(source.index), json.dumps(stats, indent=1))
    for shard in filtered_shards:  # no longer needed: the stats file marks this source done
        shard.unlink()
    return stats
