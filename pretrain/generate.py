"""``python -m pretrain.generate checkpoint=<run dir or checkpoint> prompt="..."``: complete
prompts with a trained model. Options: configs/generate.yaml and docs/evaluation.md."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Optional

from data_pipeline.command import hydra_command
from data_pipeline.progress import progress_bar
from pretrain.generation.generator import Generator
from pretrain.generation.prompts import gather_conversations, gather_prompts, write_chat_completions, write_completions
from pretrain.generation.settings import GenerationSettings, Strategy
from pretrain.inference.loading import InferenceConfig, load_for_inference, non_causal_warning
from pretrain.parallel.process_groups import set_process_defaults


@dataclass
class GenerateConfig(InferenceConfig, GenerationSettings):
    prompt: Optional[str] = None
    # A text file (one prompt per line) or a .jsonl file ({"prompt": ...} per line; with chat
    # also {"messages": [{"role", "content"}, ...]}).
    prompts_file: Optional[str] = None
    # JSONL with {"prompt", "completion"} per prompt (chat: {"messages"}, the answer appended).
    output_file: Optional[str] = None
    # Answer as the assistant: render the prompt (a user message) or conversation with the
    # tokenizer's chat template and stop at the end of the turn (docs/sft.md).
    chat: bool = False
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
    set_process_defaults()  # before DeepSpeed is imported and CUDA touched
    if config.batch_size < 1:
        raise ValueError(f"batch_size={config.batch_size} must be at least 1")
    prompts = (
        gather_conversations(config.prompt, config.prompts_file)
        if config.chat
        else gather_prompts(config.prompt, config.prompts_file)
    )
    shown = [conversation[-1]["content"] + "\n" if config.chat else conversation for conversation in prompts]
    loaded = load_for_inference(config)
    warning = non_causal_warning(
        loaded.metadata,
        "generation runs it left to right with causal attention, which it was not trained for: "
        "expect text of little meaning",
    )
    if warning:
        print(warning, file=sys.stderr)
    generator = Generator(loaded.model, loaded.tokenizer, config, config.start_token, chat=config.chat)
    streaming = config.stream and config.strategy is not Strategy.beam and min(config.batch_size, len(prompts)) == 1
    completions: list[str] = []
    batches = range(0, len(prompts), config.batch_size)
    for start in progress_bar(batches, desc="generating", unit="batch", disable=len(batches) < 2):
        batch = prompts[start : start + config.batch_size]
        if streaming:
            print_header(start, len(prompts))
            print(shown[start], end="", flush=True)
        done = generator.complete(batch, print_streamed if streaming else None)
        if streaming:
            print()
        else:
            for offset, completion in enumerate(done):
                print_header(start + offset, len(prompts))
                print(shown[start + offset] + completion)
        completions += done
    if config.output_file:
        (write_chat_completions if config.chat else write_completions)(config.output_file, prompts, completions)
    return completions


main = hydra_command("generate", GenerateConfig, generate)

if __name__ == "__main__":
    main()
