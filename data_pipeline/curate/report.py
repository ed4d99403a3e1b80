"""report.json and the summary table: what came in, what went out, and what each stage
removed and why. Built from the stats files of the stages, so any task can build it."""

from __future__ import annotations

from collections import Counter
from typing import Any

from data_pipeline.decontaminate.filter import Decontaminator
from data_pipeline.decontaminate.report import decontamination_report
from data_pipeline.filters.chain import FILTER_ORDER

MAX_BAD_INPUT_EVENTS = 1000


def build_report(
    filter_stats: list[dict[str, Any]], write_stats: list[dict[str, Any]] | None, sources: int
) -> dict[str, Any]:
    """From every input unit's filter stats and, with dedup, write stats (in unit order)."""
    stages = _filter_stages(filter_stats)
    documents_after_filters = sum(stats["documents_out"] for stats in filter_stats)
    if write_stats is not None:
        removed_in_write = _sum_counters(stats["removed"] for stats in write_stats)
        if "quality" in write_stats[0]["removed"]:  # the keep_fraction cut, applied by the write stage
            below = removed_in_write["quality"]
            quality = next(stage for stage in stages if stage["stage"] == "quality")
            quality["removed"] += below
            quality["reasons"]["below_keep_fraction"] = below
            documents_after_filters -= below
        if "exact" in write_stats[0]["removed"]:
            exact, near = removed_in_write["exact"], removed_in_write["near"]
            stages.append(
                {
                    "stage": "dedup_exact",
                    "documents_in": documents_after_filters,
                    "removed": exact,
                    "reasons": {"exact": exact},
                }
            )
            stages.append(
                {
                    "stage": "dedup_near",
                    "documents_in": documents_after_filters - exact,
                    "removed": near,
                    "reasons": {"near": near},
                }
            )
    else:
        write_stats = filter_stats
    documents_out = sum(stats["documents_out"] for stats in write_stats)
    documents_in = sum(stats["documents_in"] for stats in filter_stats)
    report = {
        "input": {
            "sources": sources,
            "documents": documents_in,
            "bytes": sum(stats["bytes_in"] for stats in filter_stats),
        },
        "output": {
            "documents": documents_out,
            "bytes": sum(stats["bytes_out"] for stats in write_stats),
            "shards": sorted(name for stats in write_stats for name in stats["shards"]),
        },
        "stages": stages,
        # what normalization changed (documents per step): by default encoding, never whitespace
        "normalize_changes": _sum_counters(
            stats["filters"].get("normalize", {}).get("changed", {}) for stats in filter_stats
        ),
        "pii_replacements": _sum_counters(
            stats["filters"].get("pii", {}).get("replaced", {}) for stats in filter_stats
        ),
        "c4_lines_removed": _sum_counters(
            stats["filters"].get("c4", {}).get("lines_removed", {}) for stats in filter_stats
        ),
        "bad_input": _bad_input(filter_stats),
    }
    decontaminated = [
        stats["filters"]["decontaminated"] for stats in filter_stats if "decontaminated" in stats["filters"]
    ]
    if decontaminated:
        report["decontamination"] = decontamination_report(decontaminated)
    removed = sum(stage["removed"] for stage in stages)
    if documents_in != documents_out + removed:  # nothing may go missing unaccounted
        raise AssertionError(f"report does not add up: {documents_in} in != {documents_out} out + {removed} removed")
    return report


def _sum_counters(counters) -> dict[str, int]:
    total: Counter[str] = Counter()
    for counter in counters:
        total.update(counter)
    return dict(total.most_common())


def _filter_stages(filter_stats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stages = []
    for name in [name for name, _ in FILTER_ORDER] + [Decontaminator.name]:
        runs = [stats["filters"][name] for stats in filter_stats if name in stats["filters"]]
        if runs:
            reasons = _sum_counters(run["removed"] for run in runs)
            documents_in = sum(run["seen"] for run in runs)
            stages.append(
                {"stage": name, "documents_in": documents_in, "removed": sum(reasons.values()), "reasons": reasons}
            )
    return stages


def _bad_input(filter_stats: list[dict[str, Any]]) -> dict[str, Any]:
    events = [event for stats in filter_stats for event in stats["bad_input"]["events"]]
    return {
        "records": sum(stats["bad_input"]["count"] for stats in filter_stats),
        "by_reason": _sum_counters(stats["bad_input"]["by_reason"] for stats in filter_stats),
        "events": events[:MAX_BAD_INPUT_EVENTS],
    }


def _megabytes(count: int) -> str:
    return f"{count / 1e6:,.1f} MB"


def format_summary(report: dict[str, Any]) -> str:
    """A short table for the console."""
    lines = [
        f"{'stage':<18}{'docs in':>10}{'removed':>10}{'share':>8}  top reasons",
        "-" * 78,
    ]
    for stage in report["stages"]:
        share = stage["removed"] / stage["documents_in"] if stage["documents_in"] else 0.0
        top = ", ".join(f"{reason} {count}" for reason, count in list(stage["reasons"].items())[:3])
        lines.append(f"{stage['stage']:<18}{stage['documents_in']:>10,}{stage['removed']:>10,}{share:>8.1%}  {top}")
    lines.append("-" * 78)
    source, output = report["input"], report["output"]
    lines.append(
        f"in:  {source['documents']:,} documents, {_megabytes(source['bytes'])} from {source['sources']} sources"
    )
    lines.append(
        f"out: {output['documents']:,} documents, {_megabytes(output['bytes'])} in {len(output['shards'])} shards"
    )
    bad = report["bad_input"]
    if bad["records"]:
        reasons = ", ".join(f"{reason} {count}" for reason, count in bad["by_reason"].items())
        lines.append(f"bad input: {bad['records']:,} records ({reasons}); see report.json")
    return "\n".join(lines)
