"""ZeRO's communication settings come from ``parallel.*``: the generated DeepSpeed config
carries each, DeepSpeed's optimizer receives them, and they do not change the numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from pretrain.config import Precision, load_train_config
from pretrain.parallel.deepspeed_config import batch_plan, deepspeed_config
from pretrain.parallel.process_groups import init_distributed
from pretrain.training.trainer import Trainer

NON_DEFAULT = {
    "overlap_comm": False,
    "contiguous_gradients": False,
    "reduce_bucket_size": 4096,
    "allgather_bucket_size": 2048,
}


def zero_section(*overrides: str) -> dict:
    cfg = load_train_config(["data.path=tokens", "train.micro_batch_size=4", *overrides])
    return deepspeed_config(cfg, batch_plan(cfg.train, dp_size=1), Precision.fp32)["zero_optimization"]


def test_defaults_are_overlapped_contiguous_and_200m_element_buckets() -> None:
    assert zero_section("parallel=zero2") == {
        "stage": 2,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": 200_000_000,
        "allgather_bucket_size": 200_000_000,
    }


@pytest.mark.parametrize("name,value", NON_DEFAULT.items())
def test_each_setting_reaches_the_deepspeed_config(name: str, value: object) -> None:
    assert zero_section(f"parallel.{name}={value}")[name] == value


@pytest.mark.parametrize("name", ["reduce_bucket_size", "allgather_bucket_size"])
def test_an_empty_bucket_is_one_clear_error(name: str) -> None:
    with pytest.raises(ValueError, match=f"parallel.{name}=0: a bucket holds at least one element"):
        zero_section(f"parallel.{name}=0")


def test_a_run_with_non_default_settings_gives_deepspeed_them_and_the_same_losses(
    token_corpus: Path, tmp_path: Path
) -> None:
    process = init_distributed()
    common = [
        f"data.path={token_corpus}",
        "parallel=zero1",
        "train.seq_len=32",
        "train.micro_batch_size=4",
        "train.global_batch_size=8",
        "train.max_steps=2",
        "train.log_every=1",
        "train.eval_every=0",
        "train.save_every=0",
        "logging.progress_bar=false",
        "resume=never",
    ]
    default_run = Trainer(load_train_config([*common, f"run_dir={tmp_path}/default"]), process)
    tuned_run = Trainer(
        load_train_config(
            [*common, f"run_dir={tmp_path}/tuned", *(f"parallel.{k}={v}" for k, v in NON_DEFAULT.items())]
        ),
        process,
    )
    zero_optimizer = tuned_run.engine.optimizer
    assert (zero_optimizer.overlap_comm, zero_optimizer.contiguous_gradients) == (False, False)
    assert (zero_optimizer.reduce_bucket_size, zero_optimizer.allgather_bucket_size) == (4096, 2048)
    assert default_run.engine.optimizer.overlap_comm and default_run.engine.optimizer.reduce_bucket_size == 200_000_000
    assert [r["loss"] for r in tuned_run.fit()] == [r["loss"] for r in default_run.fit()]
