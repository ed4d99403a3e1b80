"""Sharded start-up: a rank builds only its share of the model, with the same initial
values as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pretrain.model.init as init_module
from pretrain.model.config import ModelConfig
from pretrain.model.gpt import GPT
from pretrain.model.init import draw_slice, initial_slice, initial_value

REPO = Path(__file__).resolve().parents[3]


def test_gpt_13b_under_tp8_zero3_materializes_only_this_ranks_bytes() -> None:
    script = Path(__file__).parents[1] / "workers" / "startup_accounting.py"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(script), "13"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["all_meta"]  # built without allocating a parameter
    assert report["whole_numel"] > 11e9  # configs/model/gpt-13b.yaml with SwiGLU and grouped-query attention
    # Its tensor-parallel slice is an eighth of the model, but for the norms every rank holds.
    assert report["tp_numel"] == (report["whole_numel"] - report["replicated_numel"]) // 8 + report["replicated_numel"]
    assert report["replicated_numel"] < 1e6
    # What ZeRO-3 materializes for this rank: 1/16 of the model in bf16 (1.4 GB of 23 GB).
    assert report["zero3_bytes"] <= 2 * report["whole_numel"] / 16 + 2 * report["replicated_numel"]
    # The process itself never came near one rank's share, let alone the model (46 GB in fp32).
    assert report["peak_rss_bytes"] < 2e9


def test_a_model_built_on_meta_has_the_layout_independent_initial_values() -> None:
    cfg = ModelConfig(vocab_size=64, n_layers=2, d_model=32, n_heads=4, bias=True)
    model = GPT(cfg, seed=7)
    for name, param in model.named_parameters():
        assert not param.is_meta
        torch.testing.assert_close(
            param.detach(), initial_value(name, param.shape, cfg, 7, param.device), rtol=0, atol=0
        )
    with torch.device("meta"):  # counted or loaded later: nothing allocated
        assert all(p.is_meta for p in GPT(cfg).parameters())


class OnTheGPU(torch.Tensor):
    """A CPU tensor that says it lives on a GPU, as ZeRO-3's partitions do there."""

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return torch.device("cuda", 0)


def test_zero3_partitions_on_the_gpu_start_from_the_single_process_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA generator would draw other values than the CPU's (on a CPU-only torch it
    cannot even be made): the partitions are filled from the CPU draw."""
    cfg = ModelConfig(vocab_size=64, n_layers=2, d_model=32, n_heads=4, bias=True)
    single = dict(GPT(cfg, seed=7).named_parameters())
    partitioned = GPT(cfg, seed=0)
    monkeypatch.setattr(init_module.dist, "get_rank", lambda group=None: 1)  # the second of two partitions
    for param in partitioned.parameters():
        param.ds_tensor = torch.Tensor._make_subclass(OnTheGPU, torch.full(((param.numel() + 1) // 2,), float("nan")))
        param.ds_process_group = None
    init_module.init_parameters(partitioned, "", cfg, seed=7)
    for name, param in partitioned.named_parameters():
        half = param.ds_tensor.numel()
        expected = torch.cat([single[name].detach().reshape(-1)[half:], torch.zeros(2 * half - param.numel())])
        torch.testing.assert_close(param.ds_tensor.as_subclass(torch.Tensor), expected, rtol=0, atol=0)


# (shape, split dim): whole rows (column-parallel, embedding) or columns of every row
# (row-parallel), sizes that are and are not multiples of 16, one below 16 values.
SLICED = [((96, 40), 0), ((40, 96), 1), ((34, 7), 0), ((7, 34), 1), ((4, 3), 0), ((3, 4), 1)]


@pytest.mark.parametrize("shape,dim", SLICED)
def test_a_tensor_parallel_slice_is_drawn_as_cut_from_the_whole_tensor(
    monkeypatch: pytest.MonkeyPatch, shape, dim
) -> None:
    monkeypatch.setattr(init_module, "DRAW_PIECE", 64)  # many pieces, the last one partial
    for size in (1, 2):
        whole = torch.randn(shape, generator=torch.Generator().manual_seed(3))
        for rank in range(size):
            drawn = draw_slice(torch.Size(shape), (dim, rank, size), torch.Generator().manual_seed(3))
            torch.testing.assert_close(drawn, whole.chunk(size, dim=dim)[rank], rtol=0, atol=0)


def test_a_rank_draws_its_slice_a_bounded_piece_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    piece, shape, size = 4096, torch.Size((512, 256)), 4
    monkeypatch.setattr(init_module, "DRAW_PIECE", piece)
    drawn: list[int] = []
    randn = torch.randn
    monkeypatch.setattr(torch, "randn", lambda *args, **kwargs: drawn.append(randn(*args, **kwargs)) or drawn[-1])
    cfg = ModelConfig(vocab_size=64, n_layers=2, d_model=32, n_heads=4)
    for dim in (0, 1):
        drawn.clear()
        initial_slice("blocks.0.mlp.up.weight", shape, (dim, 0, size), cfg, 0, torch.device("cpu"))
        assert max(t.numel() for t in drawn) <= piece + 16  # never the whole 131072 values
        # Rank 0 of a split over whole rows stops after its rows.
        assert sum(t.numel() for t in drawn) == (shape.numel() // size if dim == 0 else shape.numel())
