"""``python -m pretrain.evaluate checkpoint=<run dir or checkpoint> tasks='[{type: perplexity, path: DIR}]'``:
perplexity, multiple choice and open-ended tasks. Options: configs/evaluate.yaml and docs/evaluation.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from data_pipeline.command import hydra_command
from pretrain.evaluation.contamination import TrainingData
from pretrain.evaluation.report import format_table, write_results
from pretrain.evaluation.run import evaluate_model
from pretrain.evaluation.tasks import TaskConfig, with_window_length
from pretrain.inference.loading import InferenceConfig, load_for_inference
from pretrain.parallel.process_groups import set_process_defaults


@dataclass
class EvaluateConfig(InferenceConfig):
    tasks: list[TaskConfig] = field(default_factory=list)
    # Sequences (perplexity windows, choices, prompts) per forward pass.
    batch_size: int = 8
    # The results JSON; default: <run dir>/eval/<checkpoint name>.json.
    output_file: Optional[str] = None


def evaluate(config: EvaluateConfig) -> dict[str, float]:
    set_process_defaults()  # before DeepSpeed is imported and CUDA touched
    if not config.tasks:
        raise ValueError("no tasks: give e.g. tasks='[{type: perplexity, path: <token dir>}]' (see docs/evaluation.md)")
    if config.batch_size < 1:
        raise ValueError(f"batch_size={config.batch_size} must be at least 1")
    loaded = load_for_inference(config)
    tasks = with_window_length(config.tasks, loaded.metadata["config"]["train"]["seq_len"])
    training_data = TrainingData(
        loaded.metadata["config"].get("data", {})
    )  # the run's token dirs: their n-gram fingerprints
    metrics = evaluate_model(
        loaded.model, loaded.tokenizer, tasks, config.batch_size, config.start_token, training_data
    )
    default_output = loaded.checkpoint.parent.parent / "eval" / f"{loaded.checkpoint.name}.json"
    output = Path(config.output_file) if config.output_file else default_output
    settings = {task.label: OmegaConf.to_container(OmegaConf.structured(task), enum_to_str=True) for task in tasks}
    write_results(
        output, metrics, settings, {"checkpoint": str(loaded.checkpoint), "step": loaded.metadata.get("step")}
    )
    print(format_table(metrics))
    print(f"results: {output}")
    return metrics


main = hydra_command("evaluate", EvaluateConfig, evaluate)

if __name__ == "__main__":
    main()
