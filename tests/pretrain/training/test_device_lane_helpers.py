"""The GPU lane's whole-run checks (tests/gpu/test_training.py) on CPU: the same helpers, so
their logic runs in every CPU suite."""

from __future__ import annotations

from pathlib import Path

from pretrain.parallel.process_groups import init_distributed
from tests.pretrain.support.training_checks import assert_zero3_starts_from_the_single_process_values
from tests.pretrain.training.test_train import config


def test_zero3_in_one_process_starts_from_the_single_process_values(token_corpus: Path, tmp_path: Path) -> None:
    settings = lambda name, zero: config(token_corpus, tmp_path / name, zero)  # noqa: E731
    assert_zero3_starts_from_the_single_process_values(settings, init_distributed())
