"""``train.eval_tasks``: the tasks of pretrain.evaluate, run at every evaluation of training."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist

from pretrain.config import TaskConfig
from pretrain.evaluation.contamination import TrainingData
from pretrain.evaluation.run import check_tasks, evaluate_model
from pretrain.evaluation.tasks import with_window_length
from pretrain.inference.tokenizer import TextTokenizer
from pretrain.parallel.layout import ParallelLayout

# How often a waiting rank asks whether the main rank is done (one small store request).
POLL_SECONDS = 1.0
PASSED, FAILED = b"passed", b"failed"


class EvalTasks:
    """They run on the whole model in one process (the main rank)."""

    def __init__(
        self,
        tasks: list[TaskConfig],
        tokenizer: Path,
        *,
        seq_len: int,
        layout: ParallelLayout,
        zero_stage: int,
        data: Any = None,
    ) -> None:
        if layout.pp > 1 or layout.tp > 1 or zero_stage == 3:
            raise ValueError(
                "train.eval_tasks need the whole model on one rank: not with parallel.pp > 1, parallel.tp > 1 or "
                "parallel.zero_stage=3; evaluate the checkpoints with `python -m pretrain.evaluate` instead"
            )
        check_tasks(tasks)
        self.tasks = with_window_length(tasks, seq_len)
        self.tokenizer = TextTokenizer.load(tokenizer)
        self._evaluations = 0
        self.training_data = TrainingData(data)  # `data`: the run's data config, for the contamination of each task

    def run(self, model: torch.nn.Module, *, is_main: bool, step: int) -> dict[str, float]:
        """On the main rank only; every rank returns when it is done, and an error there
        stops every rank instead of leaving them waiting in the next collective.

        The other ranks wait by polling the process group's key-value store, not inside a
        collective: a collective (NCCL's or gloo's) gives up after the process group's timeout
        (DeepSpeed's 10 minutes by default), and tasks on a large model or many examples take
        longer. A store request is answered at once, so the wait has no deadline. If the main
        rank dies meanwhile, the launcher stops the others (torchrun's agent, srun
        --kill-on-bad-exit, the deepspeed launcher), or the store, when rank 0 holds it, goes
        with it and the requests fail."""
        self._evaluations += 1
        several = dist.is_initialized() and dist.get_world_size() > 1
        key = f"pretrain/eval_tasks/{self._evaluations}"  # every rank counts the same evaluations
        store = dist.distributed_c10d._get_default_store() if several else None  # no public accessor
        metrics: dict[str, float] = {}
        failure: Optional[BaseException] = None
        if is_main:
            try:
                metrics = evaluate_model(model, self.tokenizer, self.tasks, training_data=self.training_data)
            except Exception as err:  # reported below, on every rank
                failure = err
            if store is not None:
                store.set(key, FAILED if failure is not None else PASSED)
        elif store is not None:
            while not store.check([key]):
                time.sleep(POLL_SECONDS)
            failed = store.get(key) == FAILED
            failure = RuntimeError("see rank 0's error") if failed else None
        if failure is not None:
            raise RuntimeError(f"train.eval_tasks failed at step {step} on rank 0") from failure
        return metrics
