"""The CPU suite hides CUDA from itself and from every process it starts (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from tests.conftest import runs_only_the_gpu_lane


def test_the_suite_and_its_subprocesses_see_no_cuda() -> None:
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""  # inherited by every child
    assert not torch.cuda.is_available()
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, torch; print(os.environ['CUDA_VISIBLE_DEVICES'] == '', torch.cuda.is_available())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.split() == ["True", "False"]


def test_only_the_gpu_lane_asked_for_alone_keeps_cuda() -> None:
    assert runs_only_the_gpu_lane(["tests/gpu"])
    assert runs_only_the_gpu_lane(["tests/gpu/test_attention.py::test_backward", "-x"])
    assert not runs_only_the_gpu_lane([])  # the whole suite (testpaths)
    assert not runs_only_the_gpu_lane(["tests"])
    assert not runs_only_the_gpu_lane(["tests/gpu", "tests/pretrain/model/test_model.py"])
    assert not runs_only_the_gpu_lane(["tests/benchmarks/test_gpu_benchmark.py"])
