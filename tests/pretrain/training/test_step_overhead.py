"""What a dense step leaves out on one rank: DeepSpeed's gradient all-reduce over a
data-parallel group of one (a flatten and a copy back of every gradient, for nothing)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pretrain.parallel.process_groups import init_distributed
from pretrain.training.trainer import Trainer
from tests.pretrain.training.test_train import config, losses


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_one_rank_without_zero_skips_the_gradient_all_reduce_and_trains_the_same(
    precision: str, token_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deepspeed.accelerator import get_accelerator

    monkeypatch.setattr(type(get_accelerator()), "is_fp16_supported", lambda self: True)  # as test_train.py
    process = init_distributed()
    settings = ("train.max_steps=3", "train.global_batch_size=4", f"train.precision={precision}")
    skipping = Trainer(config(token_corpus, tmp_path / "skipping", *settings), process)
    reducing = Trainer(config(token_corpus, tmp_path / "reducing", *settings), process)
    reducing.engine.enable_backward_allreduce = True  # DeepSpeed's default, as before
    calls: Counter[str] = Counter()
    for name, trainer in (("skipping", skipping), ("reducing", reducing)):
        reduce = trainer.engine.allreduce_gradients

        def counted(*args: Any, _name: str = name, _reduce: Any = reduce, **kwargs: Any) -> Any:
            calls[_name] += 1
            return _reduce(*args, **kwargs)

        trainer.engine.allreduce_gradients = counted
    assert losses(skipping.fit()) == losses(reducing.fit())
    assert calls == {"reducing": 3}


def test_data_parallel_and_zero_runs_keep_it(token_corpus: Path, tmp_path: Path) -> None:
    trainer = Trainer(config(token_corpus, tmp_path, "train.max_steps=1", "parallel=zero1"), init_distributed())
    assert trainer.engine.enable_backward_allreduce
