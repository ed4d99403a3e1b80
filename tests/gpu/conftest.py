"""The GPU lane: what only a CUDA device can show, run explicitly and alone,

    python -m pytest tests/gpu -x -q

on a machine where CUDA is visible (tests/conftest.py hides CUDA from every other run, so
that the CPU suite gives the same results on a GPU machine; asked for alone, tests/gpu keeps
it). Without CUDA, as inside the CPU suite, every test here is skipped. The checks reuse the
CPU suite's helpers and fixtures (tests/pretrain), which the CPU suite runs on CPU.

Two separate runs on the GPU must give the same bits (resume, background save): cuBLAS
gets a fixed workspace and torch its deterministic kernels, the settings torch's
reproducibility notes name; ``warn_only`` names any kernel that has no deterministic form
instead of stopping the lane.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

# Read by cuBLAS when CUDA starts: before any test touches the device.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

# The CPU suite's fixtures (a token corpus, a tiny model trained on text, the export check).
from tests.pretrain.conftest import (  # noqa: E402,F401
    assert_matches_transformers,
    text_shards,
    text_tokenizer,
    token_corpus,
    train_text_model,
    trained_run,
)

HOW_TO_RUN = "the GPU lane needs CUDA: run `python -m pytest tests/gpu -x -q` alone on a machine with a GPU"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: a test of the GPU lane (tests/gpu), which needs CUDA")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here + os.sep):
            item.add_marker(pytest.mark.gpu)


@pytest.fixture(autouse=True, scope="session")
def cuda_deterministic() -> Iterator[None]:
    """Skips every test here without CUDA; with it, deterministic kernels for the session."""
    if not torch.cuda.is_available():
        pytest.skip(HOW_TO_RUN)
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(False)
