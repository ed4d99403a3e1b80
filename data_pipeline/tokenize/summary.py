"""What a tokenize run did: documents, tokens and shards per split, throughput of the units
run this time, and the bad input records skipped (with file and line)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from data_pipeline.io.readers import BadInputTally
from data_pipeline.tokenize.output_dir import SPLITS, TRAIN, VAL

BAD_INPUT_EXAMPLES = 5  # listed in the printed summary


@dataclass
class TokenizeSummary:
    units: int
    units_done_before: int
    val_fraction: float
    tokens_per_shard: int
    documents: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    shards: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    num_bytes: int = 0
    # of the units run this time (an earlier run's are not in the rates)
    new_tokens: int = 0
    new_bytes: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    bad_input: dict[str, Any] = field(default_factory=lambda: {"count": 0, "by_reason": {}, "events": []})
    # format=chat: samples, padding tokens, loss (assistant) tokens and truncated conversations
    chat: dict[str, int] | None = None

    @classmethod
    def collect(
        cls,
        unit_stats: Sequence[dict[str, Any]],
        ran_now: Sequence[bool],
        shards: dict[str, int],
        val_fraction: float,
        tokens_per_shard: int,
        wall_seconds: float,
    ) -> TokenizeSummary:
        summary = cls(
            len(unit_stats),
            ran_now.count(False),
            val_fraction,
            tokens_per_shard,
            shards=dict(shards),
            wall_seconds=wall_seconds,
        )
        bad_input = BadInputTally(strict=False)
        for stats, now in zip(unit_stats, ran_now):
            for split in SPLITS:
                summary.documents[split] += stats["documents"][split]
                summary.tokens[split] += stats["tokens"][split]
            summary.num_bytes += stats["bytes"]
            if now:
                summary.new_tokens += sum(stats["tokens"].values())
                summary.new_bytes += stats["bytes"]
                summary.cpu_seconds += stats["cpu_seconds"]
            bad_input.absorb(stats["bad_input"])
            if "chat" in stats:
                summary.chat = {key: (summary.chat or {}).get(key, 0) + value for key, value in stats["chat"].items()}
        summary.bad_input = bad_input.stats()
        return summary

    def move_to_val(self, tokens: int) -> None:
        """Count a train document of ``tokens`` tokens in val (an otherwise empty val split's one)."""
        self.documents[TRAIN] -= 1
        self.documents[VAL] += 1
        self.tokens[TRAIN] -= tokens
        self.tokens[VAL] += tokens

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        documents, tokens = sum(self.documents.values()), sum(self.tokens.values())
        wall, cpu = max(self.wall_seconds, 1e-9), max(self.cpu_seconds, 1e-9)
        new_megabytes = self.new_bytes / 1e6
        splits = "; ".join(
            f"{split} {self.documents[split]:,} docs / {self.tokens[split]:,} tokens in {self.shards[split]} shards"
            for split in SPLITS
        )
        val_share = self.tokens[VAL] / max(tokens, 1)
        lines = [
            f"tokenized {self.units} units ({self.units_done_before} already done): "
            f"{documents:,} documents, {tokens:,} tokens, "
            f"{self.num_bytes / 1e6:.1f} MB in {self.wall_seconds:.1f} s",
            f"  {new_megabytes / wall:.2f} MB/s, {self.new_tokens / wall:,.0f} tokens/s; "
            f"per CPU-second of the workers: {new_megabytes / cpu:.2f} MB, {self.new_tokens / cpu:,.0f} tokens; "
            f"{self.num_bytes / max(tokens, 1):.2f} bytes/token",
            f"  {splits} (shards of {self.tokens_per_shard:,} tokens; val_fraction={self.val_fraction}: "
            f"{val_share:.2%} of the tokens)",
            *(
                []
                if self.chat is None
                else [
                    f"  chat: {self.chat['samples']:,} samples, {self.chat['loss_tokens']:,} loss tokens, "
                    f"{self.chat['padding_tokens']:,} "
                    f"padding tokens; {self.chat['truncated']:,} conversations truncated"
                ]
            ),
            f"  {self.bad_input['count']} bad records skipped"
            + "".join(f" ({reason}: {count})" for reason, count in sorted(self.bad_input["by_reason"].items()))
            + "".join(
                f"\n    {event['file']}:{event['line']}: {event['reason']}: {event['detail']}"
                for event in self.bad_input["events"][:BAD_INPUT_EXAMPLES]
            ),
        ]
        if not self.documents[VAL]:
            lines.append(
                "  warning: the val split is empty (raise val_fraction): training will report no validation loss"
            )
        return "\n".join(lines)
