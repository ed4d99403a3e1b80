"""``python -m pretrain.quickstart``: the whole journey on the bundled sample corpus.

curate -> train a tokenizer -> tokenize -> train a small GPT -> evaluate -> generate, each
step the same command a user would run by hand, all outputs under one directory. On a GPU
machine training uses the GPU; on a laptop CPU the whole run takes a few minutes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SAMPLE_CORPUS = Path(__file__).resolve().parent.parent / "data_pipeline" / "sample_corpus"


@dataclass
class Step:
    title: str
    module: str
    arguments: list[str]
    output: Path


def plan(out: Path, steps: int, vocab_size: int, corpus: Path) -> list[Step]:
    curated, tokenizer, tokens, run = out / "curated", out / "tokenizer", out / "tokens", out / "train"
    return [
        Step(
            "Curate the corpus (chart: report.png)",
            "data_pipeline.curate",
            [f"input={corpus}", f"output_dir={curated}", "workers=2"],
            curated,
        ),
        Step(
            "Train a SentencePiece BPE tokenizer",
            "data_pipeline.train_tokenizer",
            [f"input={curated}", f"output_dir={tokenizer}", f"vocab_size={vocab_size}"],
            tokenizer,
        ),
        Step(
            "Tokenize into packed token shards",
            "data_pipeline.tokenize",
            [f"input={curated}", f"tokenizer={tokenizer}", f"output_dir={tokens}", "workers=2", "val_fraction=0.05"],
            tokens,
        ),
        Step(
            "Train a small GPT (CLM; chart: curves.png)",
            "pretrain.train",
            [
                "experiment=quickstart",
                f"data.path={tokens}",
                f"data.tokenizer={tokenizer}",
                f"run_dir={run}",
                f"train.max_steps={steps}",
            ],
            run,
        ),
        Step(
            "Evaluate perplexity on the held-out split",
            "pretrain.evaluate",
            [
                f"checkpoint={run}",
                f"tasks=[{{type: perplexity, path: '{tokens}'}}]",
                f"output_file={out / 'eval.json'}",
            ],
            out / "eval.json",
        ),
        Step(
            "Generate a sample",
            "pretrain.generate",
            [
                f"checkpoint={run}",
                'prompt="It is a truth universally acknowledged"',
                "strategy=sample",
                "top_p=0.9",
                "temperature=0.8",
                "max_new_tokens=60",
                "seed=0",
                f"output_file={out / 'samples.jsonl'}",
            ],
            out / "samples.jsonl",
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", type=Path, default=Path("runs/quickstart"), help="where every step writes (default: %(default)s)"
    )
    parser.add_argument("--steps", type=int, default=600, help="training steps (default: %(default)s)")
    parser.add_argument("--vocab-size", type=int, default=4000, help="tokenizer vocabulary (default: %(default)s)")
    parser.add_argument(
        "--corpus", type=Path, default=SAMPLE_CORPUS, help="raw shards to start from (default: the bundled sample)"
    )
    args = parser.parse_args(argv)
    steps = plan(args.out, args.steps, args.vocab_size, args.corpus)
    started = time.perf_counter()
    for number, step in enumerate(steps, 1):
        print(
            f"\n== [{number}/{len(steps)}] {step.title}: python -m {step.module} {' '.join(step.arguments)}", flush=True
        )
        done = subprocess.run([sys.executable, "-m", step.module, *step.arguments])
        if done.returncode != 0:
            sys.exit(
                f"quickstart: step {number} ({step.title}) failed with exit code {done.returncode}; "
                "see its output above"
            )
    print(f"\n== Done in {time.perf_counter() - started:.0f} s. Everything is under {args.out}/:")
    for step in steps:
        print(f"  {step.title:<45} {step.output}")


if __name__ == "__main__":
    main()
