"""Run evaluation tasks on a model: the one function both ``python -m pretrain.evaluate``
and a training loop call."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from pretrain.evaluation.contamination import CONTAMINATION, TrainingData, contamination_metric
from pretrain.evaluation.multiple_choice import multiple_choice
from pretrain.evaluation.open_ended import open_ended
from pretrain.evaluation.perplexity import perplexity
from pretrain.evaluation.tasks import TaskConfig, TaskType
from pretrain.inference.tokenizer import StartToken, TextTokenizer
from pretrain.model.gpt import GPT

# (model, tokenizer, task, batch_size, start_token, clean=None): with `clean` (one flag per item)
# also the scores of the clean items alone, as clean_<metric>
TaskRunner = Callable[..., dict[str, float]]
RUNNERS: dict[TaskType, TaskRunner] = {
    TaskType.perplexity: perplexity,
    TaskType.multiple_choice: multiple_choice,
    TaskType.generation: open_ended,
}


def check_tasks(tasks: Sequence[TaskConfig]) -> None:
    """Every task's settings, and distinct labels: one clear error before any work."""
    labels = [task.label for task in tasks]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"tasks {duplicates} appear more than once; give them distinct names (name=...)")
    for task in tasks:
        task.validate()


def evaluate_model(
    model: GPT,
    tokenizer: TextTokenizer,
    tasks: Sequence[TaskConfig],
    batch_size: int = 8,
    start_token: StartToken = StartToken.auto,
    training_data: Optional[TrainingData] = None,
) -> dict[str, float]:
    """Flat ``{"<task>/<metric>": value}`` of every task. The model is evaluated in eval
    mode and handed back in the mode it came in. With ``training_data``, every task also
    reports its contamination and its scores on the clean items (contamination.py)."""
    check_tasks(tasks)
    was_training = model.training
    model.eval()
    try:
        metrics: dict[str, float] = {}
        for task in tasks:
            clean = training_data.clean_items(task) if training_data is not None else None
            results = RUNNERS[task.type](model, tokenizer, task, batch_size, start_token, clean=clean)
            if training_data is not None and training_data.audits(task):
                results[CONTAMINATION] = contamination_metric(clean)
            metrics.update({f"{task.label}/{name}": value for name, value in results.items()})
        return metrics
    finally:
        model.train(was_training)
