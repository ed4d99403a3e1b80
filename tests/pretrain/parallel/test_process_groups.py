"""Device choice and process-group set-up on GPU machines, with CUDA mocked (no GPU needed)."""

from __future__ import annotations

import os

import deepspeed
import pytest
import torch

from pretrain.parallel.process_groups import init_distributed


@pytest.fixture
def four_ranks_on_one_visible_gpu(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Local rank 3 of 4 on a node where Slurm (--gpus-per-task=1) shows each task one GPU."""
    seen: dict = {"set_device": [], "init_process_group": []}
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", seen["set_device"].append)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(
        torch.distributed,
        "init_process_group",
        lambda *args, **kwargs: seen["init_process_group"].append((args, kwargs)),
    )
    monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None: 3)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 4)
    monkeypatch.setattr(deepspeed, "init_distributed", lambda **kwargs: None)
    return seen


def test_a_task_that_sees_one_gpu_uses_it_whatever_its_local_rank(four_ranks_on_one_visible_gpu: dict) -> None:
    process = init_distributed()
    assert process.local_rank == 3
    assert process.device == torch.device("cuda", 0)
    assert four_ranks_on_one_visible_gpu["set_device"] == [torch.device("cuda", 0)]
    ((args, kwargs),) = four_ranks_on_one_visible_gpu["init_process_group"]
    assert args == ("nccl",)
    assert kwargs["device_id"] == torch.device("cuda", 0)  # NCCL binds its communicator to this GPU
    assert os.environ["LOCAL_RANK"] == "0"  # DeepSpeed's engine and zero.Init read it as the device index


def test_local_ranks_take_their_own_gpu_where_all_are_visible(
    four_ranks_on_one_visible_gpu: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert init_distributed().device == torch.device("cuda", 3)
    assert os.environ["LOCAL_RANK"] == "3"
    assert four_ranks_on_one_visible_gpu["init_process_group"][0][1]["device_id"] == torch.device("cuda", 3)
