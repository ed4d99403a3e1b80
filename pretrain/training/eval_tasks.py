"""``train.eval_tasks``: the tasks of pretrain.evaluate, run at every evaluation of training."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist

from pretrain.config import TaskConfig
from pretrain.evaluation.contamination import TrainingData
from pretrain.evaluation.run import check_tasks, evaluate_model
from pretrain.evaluation.tasks import with_window_length
from pretrain.inference.tokenizer import TextTokenizer
from pretrain.parallel.layout import Layout


class EvalTasks:
    """They run on the whole model in one process (the main rank)."""

    def __init__(self, tasks: list[TaskConfig], tokenizer: Path, *, seq_len: int, layout: Layout, zero_stage: int, data: Any = None) -> None:
        if layout.pp > 1 or layout.tp > 1 or zero_stage == 3:
            raise ValueError(
                "train.eval_tasks need the whole model on one rank: not with parallel.pp > 1, parallel.tp > 1 or "
                "parallel.zero_stage=3; evaluate the checkpoints with `python -m pretrain.evaluate` instead"
            )
        check_tasks(tasks)
        self.tasks = with_window_length(tasks, seq_len)
        self.tokenizer = TextTokenizer.load(tokenizer)
        self.training_data = TrainingData(data)  # `data`: the run's data config, for the contamination of each task

    def run(self, model: torch.nn.Module, *, is_main: bool, device: torch.device, step: int) -> dict[str, float]:
        """Collective. On the main rank only; the others wait and learn whether it failed, so
        an error there stops every rank instead of leaving them waiting in the next collective."""
        metrics: dict[str, float] = {}
        failure: Optional[BaseException] = None
        if is_main:
            try:
                metrics = evaluate_model(model, self.tokenizer, self.tasks, training_data=self.training_data)
            except Exception as err:  # reported below, on every rank
                failure = err
        failed = torch.tensor([float(failure is not None)], device=device)
        dist.all_reduce(failed)
        if failed.item():
            raise RuntimeError(f"train.eval_tasks failed at step {step} on rank 0") from failure
        return metrics
