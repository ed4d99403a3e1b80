"""``python -m pretrain.generate checkpoint=<run dir or checkpoint> prompt="..."``: complete
prompts with a trained model. Options: configs/generate.yaml and docs/evaluation.md."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Optional

from tqdm import tqdm

from pretrain.generation.generator import Generator
from pretrain.generation.prompts import gather_prompts, write_completions
from pretrain.generation.settings import GenerationSettings, Strategy
from pretrain.inference.command import hydra_command
from pretrain.inference.loading import InferenceConfig, load_for_inference, non_causal_warning


@dataclass
class GenerateConfig(InferenceConfig, GenerationSettings):
    prompt: Optional[str] = None
    # A text file (one prompt per line) or a .jsonl file ({"prompt": ...} per line).
    prompts_file: Optional[str] = None
    # JSONL with {"prompt", "completion"} per prompt.
    output_file: Optional[str] = None
    # Prompts completed together.
    batch_size: int = 8
    # Print tokens as they come when a batch holds a single prompt (not with strategy=beam).
    stream: bool = True


def print_streamed(_: int, text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def print_header(index: int, total: int) -> None:
    if total > 1:
        print(f"=== prompt {index + 1} of {total} ===")


def generate(config: GenerateConfig) -> list[str]:
    if config.batch_size < 1:
        raise ValueError(f"batch_size={config.batch_size} must be at least 1")
    prompts = gather_prompts(config.prompt, config.prompts_file)
    loaded = load_for_inference(config)
    warning = non_causal_warning(
        loaded.metadata, "generation runs it left to right with causal attention, which it was not trained for: "
        "expect text of little meaning"
    )
    if warning:
        print(warning, file=sys.stderr)
    generator = Generator(loaded.model, loaded.tokenizer, config, config.start_token)
    streaming = config.stream and config.strategy is not Strategy.beam and min(config.batch_size, len(prompts)) == 1
    completions: list[str] = []
    batches = range(0, len(prompts), config.batch_size)
    for start in tqdm(batches, desc="generating", unit="batch", disable=len(batches) < 2, file=sys.stderr):
        batch = prompts[start : start + config.batch_size]
        if streaming:
            print_header(start, len(prompts))
            print(batch[0], end="", flush=True)
        done = generator.complete(batch, print_streamed if streaming else None)
        if streaming:
            print()
        else:
            for offset, (prompt, completion) in enumerate(zip(batch, done)):
                print_header(start + offset, len(prompts))
                print(prompt + completion)
        completions += done
    if config.output_file:
        write_completions(config.output_file, prompts, completions)
    return completions


main = hydra_command("generate", GenerateConfig, generate)

if __name__ == "__main__":
    main()
