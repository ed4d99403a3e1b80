"""Stage 1, one job per input unit: read, normalize and filter; keep the survivors (with their
dedup keys, written in batches, when dedup is on) and the removed documents with their reasons.

It returns the unit's stats, which the executor stores as the unit's completion marker."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from data_pipeline.curate.config import CurateConfig
from data_pipeline.curate.output_dir import CurateOutputDir
from data_pipeline.curate.quality_stage import ranks_by_quality
from data_pipeline.decontaminate.filter import decontamination_filters
from data_pipeline.dedup.keys import UnitKeyWriter
from data_pipeline.document import Document
from data_pipeline.filters.base import Filter
from data_pipeline.filters.chain import build_filters
from data_pipeline.io.readers import BadInput, BadInputTally, read_unit
from data_pipeline.io.units import InputUnit
from data_pipeline.io.writers import ShardWriter, output_writer


def dedup_enabled(config: CurateConfig) -> bool:
    return config.dedup.exact or config.dedup.near


def has_write_stage(config: CurateConfig) -> bool:
    """Survivors wait in _work/filter for a write stage: for dedup, or for the quality cut."""
    return dedup_enabled(config) or ranks_by_quality(config)


def filter_unit(unit: InputUnit, config: CurateConfig, partitions: int) -> dict[str, Any]:
    """Run the filter stage on one input unit; returns its stats."""
    layout = CurateOutputDir(config.output_dir)
    filters = build_filters(config.filters) + decontamination_filters(config.decontaminate, layout.decontaminate)
    bad_input = BadInputTally(config.strict)
    stats: dict[str, Any] = {
        "source": unit.input_name,
        "documents_in": 0,
        "bytes_in": 0,
        "documents_out": 0,
        "bytes_out": 0,
    }
    with ExitStack() as stack:
        keys = None
        if has_write_stage(config):  # one unsplit file, read back row by row by the write stage
            kept = stack.enter_context(ShardWriter(layout.filtered_prefix(unit.key), compression_level=1))
        else:  # no dedup, no quality cut: these are the clean shards
            kept = stack.enter_context(output_writer(layout.output_prefix(unit.key), config.output))
        if dedup_enabled(config):
            keys = UnitKeyWriter(layout.unit_keys(unit.key), unit.index, config.dedup, partitions)
            stack.callback(keys.abandon)  # after an error: no half-written keys stay behind
        removed = None
        if config.output.write_removed:
            removed = stack.enter_context(ShardWriter(layout.removed_prefix("filter", unit.key)))
        for item in read_unit(unit, config.reader):
            if isinstance(item, BadInput):
                bad_input.add(item)
                if removed is not None:
                    removed.write(
                        {
                            "reason": f"bad_input:{item.reason}",
                            "file": item.file,
                            "line": item.line,
                            "detail": item.detail,
                            "raw": item.raw,
                        }
                    )
                continue
            stats["documents_in"] += 1
            stats["bytes_in"] += len(item.text.encode("utf-8"))
            reason = _first_removal(filters, item)
            if reason is not None:
                if removed is not None:
                    removed.write({**item.to_json(), "reason": reason, "file": item.source, "line": item.line})
                continue
            stats["documents_out"] += 1
            stats["bytes_out"] += len(item.text.encode("utf-8"))
            kept.write(item.to_json())
            if keys is not None:
                keys.add(item.id, item.text)
        if keys is not None:
            keys.finish()
        if not has_write_stage(config):
            stats["shards"] = [path.name for path in kept.close()]
    stats["filters"] = {document_filter.name: document_filter.stats() for document_filter in filters}
    stats["bad_input"] = bad_input.stats()
    return stats


def _first_removal(filters: list[Filter], doc: Document) -> str | None:
    """ "<filter>:<rule>" of the first filter that removes doc, or None if all keep it."""
    for document_filter in filters:
        reason = document_filter(doc)
        if reason is not None:
            return f"{document_filter.name}:{reason}"
    return None
