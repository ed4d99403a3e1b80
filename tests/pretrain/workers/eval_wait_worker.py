"""A training rank whose process group gives up after a few seconds and whose rank 0 spends
longer than that on ``train.eval_tasks``: tests/pretrain/training/test_eval_wait.py starts two.
Usage: python tests/pretrain/workers/eval_wait_worker.py TIMEOUT_S TASK_S OVERRIDE..."""

from __future__ import annotations

import sys
import time
from datetime import timedelta

from deepspeed import constants

import pretrain.training.eval_tasks as eval_tasks
from pretrain.config import load_train_config
from pretrain.parallel.process_groups import init_distributed
from pretrain.training.trainer import Trainer

if __name__ == "__main__":
    timeout_s, task_s, *overrides = sys.argv[1:]
    constants.default_pg_timeout = timedelta(seconds=float(timeout_s))  # the default group's collectives
    evaluate = eval_tasks.evaluate_model

    def slow_evaluation(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(float(task_s))
        return evaluate(*args, **kwargs)

    eval_tasks.evaluate_model = slow_evaluation
    Trainer(load_train_config(overrides), init_distributed()).fit()
