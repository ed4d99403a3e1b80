"""Every launcher and every pretrain command ask the CUDA allocator for expandable segments,
unless the user chose an allocator setting (and the commands pick DeepSpeed's accelerator)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pretrain.parallel.process_groups import default_cuda_allocator

REPO = Path(__file__).resolve().parents[3]
ALLOCATOR_VARIABLES = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")
# Stand-ins for python, srun and scontrol: each prints the allocator setting it was started with.
PRINT_SETTING = '#!/bin/sh\necho "PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-unset}"\n'


def environment(bin_dir: Path, **user: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_VARIABLES}
    env.update(
        PATH=f"{bin_dir}:{env['PATH']}",
        PYTHON=str(bin_dir / "python"),
        NPROC_PER_NODE="1",
        SLURM_JOB_NODELIST="node1",
        **user,
    )
    return env


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    for name in ("python", "srun", "scontrol"):
        (tmp_path / name).write_text(PRINT_SETTING)
        (tmp_path / name).chmod(0o755)
    return tmp_path


LAUNCHERS = [["launch/torchrun.sh"], ["launch/deepspeed.sh", "launch/hostfile.localhost"], ["launch/slurm.sbatch"]]


@pytest.mark.parametrize("launcher", LAUNCHERS, ids=lambda command: Path(command[0]).name)
def test_launchers_ask_for_expandable_segments_and_keep_a_users_setting(launcher: list[str], bin_dir: Path) -> None:
    def started_with(**user: str) -> str:
        out = subprocess.run(
            ["bash", *launcher], cwd=REPO, env=environment(bin_dir, **user), capture_output=True, text=True, check=True
        )
        return out.stdout.strip().splitlines()[-1]

    assert started_with() == "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"
    assert (
        started_with(PYTORCH_CUDA_ALLOC_CONF="max_split_size_mb:128") == "PYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:128"
    )
    assert started_with(PYTORCH_ALLOC_CONF="backend:native") == "PYTORCH_CUDA_ALLOC_CONF=unset"


def test_importing_sets_nothing_and_the_training_command_sets_it_before_torch_touches_cuda(tmp_path: Path) -> None:
    """Importing pretrain (even its entry point) leaves the environment alone; the command,
    when it starts, asks for expandable segments and picks DeepSpeed's CPU accelerator on a
    machine without CUDA, before DeepSpeed is imported (so it picks it without a warning)."""
    probe = f"""
import os, sys
import pretrain, pretrain.train
print(os.environ.get("PYTORCH_CUDA_ALLOC_CONF"), os.environ.get("DS_ACCELERATOR"), "deepspeed" in sys.modules)
sys.argv = ["train", "plan=true", "model.vocab_size=256", "run_dir={tmp_path}"]  # stops after the plan
pretrain.train.main()
import torch
from deepspeed.accelerator import get_accelerator
print(os.environ.get("PYTORCH_CUDA_ALLOC_CONF"), get_accelerator().device_name(), torch.cuda.is_initialized())
"""
    env = {k: v for k, v in os.environ.items() if k not in (*ALLOCATOR_VARIABLES, "DS_ACCELERATOR")}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["None", "None", "False"] and lines[-1].split() == [
        "expandable_segments:True",
        "cpu",
        "False",
    ]
    assert "Setting accelerator" not in out.stderr, out.stderr


@pytest.mark.parametrize(
    "user", [{"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128"}, {"PYTORCH_ALLOC_CONF": "backend:native"}]
)
def test_the_entry_keeps_a_users_setting(user: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ALLOCATOR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in user.items():
        monkeypatch.setenv(name, value)
    default_cuda_allocator()
    assert {name: os.environ.get(name) for name in ALLOCATOR_VARIABLES if name in os.environ} == user
