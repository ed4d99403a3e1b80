"""Context parallelism (parallel.cp) trains exactly like one process: the loss and every
gradient for 10 steps under cp2 and cp4, for clm, document masking, span (prefix-LM) and
mlm (with recompute); whole training runs under cp2, cp2 × tp2 with sequence parallelism,
dp2 × cp2 and cp2 with ZeRO-3; a checkpoint resumes across cp2 -> cp1 -> cp4 exactly; each
layer's collectives are counted. Two torchrun launches (2 and 4 processes, gloo on CPU); the
one-process reference runs in this process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from pretrain.checkpoint.directory import read_metadata
from pretrain.config import load_train_config
from pretrain.model.flex_attention import mask_mod
from pretrain.model.gpt import AttentionMode, AttentionSpec, attention_mask
from pretrain.parallel.context import chunk_positions
from pretrain.parallel.layout import validate_layout
from pretrain.parallel.process_groups import ProcessInfo, init_distributed
from pretrain.training.trainer import Trainer

# Momentum buffers: optimizer state that the cp2 -> cp1 -> cp4 resumes must carry across.
SGD = ["optim=sgd", "optim.lr=0.05", "optim.momentum=0.9", "optim.schedule=constant", "train.max_steps=10"]
NO_SAVE = ["train.save_at_end=false"]
# The model-level checks: 10 SGD steps of the model split over every rank, against whole
# sequences (context_parallel_worker.py); tiny: 2 layers, grouped-query attention (4 heads, 2 kv).
GRADIENTS = {
    "grads-clm": ["train.seq_len=32"],
    "grads-docmask": ["train.seq_len=32", "objective.document_masking=true"],
    "grads-span": ["train.seq_len=32", "objective=span"],
    "grads-mlm-recompute": ["train.seq_len=32", "objective=mlm", "objective.document_masking=true", "recompute=true"],
}
GRADIENTS_4 = {name: GRADIENTS[name] for name in ("grads-clm", "grads-docmask", "grads-span")}


@pytest.fixture(scope="module")
def process() -> ProcessInfo:
    return init_distributed()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("context_parallel")


@pytest.fixture(scope="module")
def reference(token_corpus: Path, workdir: Path, process: ProcessInfo, common) -> dict[str, list[float]]:
    """One process's clm run: every whole training run below must reproduce it (the
    objectives differ only in the batches, which the gradient checks cover)."""
    records = Trainer(load_train_config(common(token_corpus, workdir / "single") + SGD + NO_SAVE), process).fit()
    return {"loss": [record["loss"] for record in records], "grad_norm": [record["grad_norm"] for record in records]}


def run(corpus: Path, run_dir: Path, common, *overrides: str) -> list[str]:
    return [*common(corpus, run_dir), *overrides]


@pytest.fixture(scope="module")
def cp2(token_corpus: Path, workdir: Path, reference: dict, common, launch_runs) -> dict:
    runs = dict(GRADIENTS)
    runs["cp2-clm"] = run(token_corpus, workdir / "cp2-clm", common, "parallel.cp=2", *SGD, *NO_SAVE)
    runs["cp2-zero3"] = run(
        token_corpus, workdir / "cp2-zero3", common, "parallel=zero3", "parallel.cp=2", *SGD, *NO_SAVE
    )
    # The first leg of cp2 -> cp1 -> cp4 (the clm run, stopped): three steps, then a checkpoint.
    runs["resume-cp2"] = run(token_corpus, workdir / "resumed", common, "parallel.cp=2", *SGD, "train.max_steps=3")
    return launch_runs(2, runs, workdir, worker="context_parallel_worker.py")


@pytest.fixture(scope="module")
def resumed_in_one_process(token_corpus: Path, workdir: Path, cp2: dict, process: ProcessInfo, common) -> list[float]:
    cfg = load_train_config(run(token_corpus, workdir / "resumed", common, *SGD, "train.max_steps=6"))
    return [record["loss"] for record in Trainer(cfg, process).fit()]


@pytest.fixture(scope="module")
def cp4(token_corpus: Path, workdir: Path, resumed_in_one_process: list, common, launch_runs) -> dict:
    runs = dict(GRADIENTS_4)
    runs["cp2xtp2-sp"] = run(
        token_corpus, workdir / "cp2xtp2", common, "parallel=tp2", "parallel.cp=2", "parallel.sequence_parallel=true"
    )
    runs["cp2xtp2-sp"] += [*SGD, *NO_SAVE]
    # Two data-parallel replicas, each split over two ranks (the parallel=cp2 preset, ZeRO-1).
    runs["dp2xcp2"] = run(token_corpus, workdir / "dp2xcp2", common, "parallel=cp2", *SGD, *NO_SAVE)
    runs["resume-cp4"] = run(token_corpus, workdir / "resumed", common, "parallel.cp=4", *SGD)
    return launch_runs(4, runs, workdir, worker="context_parallel_worker.py")


def assert_parity(actual: list[float], expected: list[float]) -> None:
    assert len(actual) == len(expected)
    assert actual == pytest.approx(expected, rel=1e-6), (actual, expected)


@pytest.mark.parametrize("launch, name", [("cp2", n) for n in GRADIENTS] + [("cp4", n) for n in GRADIENTS_4])
def test_loss_and_every_gradient_equal_one_process_for_10_steps(launch: str, name: str, request) -> None:
    report = request.getfixturevalue(launch)
    assert report["loss_error"][name] < 1e-6
    assert report["grad_error"][name] < 1e-6


def test_cp2_training_equals_one_process(cp2: dict, reference: dict) -> None:
    assert_parity(cp2["losses"]["cp2-clm"], reference["loss"])
    # Without ZeRO the logged gradient norm is the averaged gradient's: the whole batch's.
    assert_parity(cp2["grad_norms"]["cp2-clm"], reference["grad_norm"])


def test_cp2_with_zero3_equals_one_process(cp2: dict, reference: dict) -> None:
    assert_parity(cp2["losses"]["cp2-zero3"], reference["loss"])


@pytest.mark.parametrize("name", ["cp2xtp2-sp", "dp2xcp2"])
def test_four_rank_layouts_equal_one_process(name: str, cp4: dict, reference: dict) -> None:
    assert_parity(cp4["losses"][name], reference["loss"])


def test_checkpoint_resumes_from_cp2_to_cp1_to_cp4_exactly(
    workdir: Path, cp2: dict, resumed_in_one_process: list, cp4: dict, reference: dict
) -> None:
    first = read_metadata(workdir / "resumed" / "checkpoints" / "step-00000003")
    assert first["layout"]["cp"] == 2
    losses = cp2["losses"]["resume-cp2"] + resumed_in_one_process + cp4["losses"]["resume-cp4"]
    assert_parity(losses, reference["loss"])


def test_each_layer_all_gathers_keys_and_values_once_and_reduce_scatters_their_gradients(cp2: dict) -> None:
    layers = 2
    counts = cp2["collectives"]["grads-clm"]
    # Forward: one all-gather of K and V per layer, and the loss's per-sample token counts.
    assert counts["forward"] == {"all_gather_single": layers, "reduce_scatter_single": 0, "all_reduce": 1}
    assert counts["backward"] == {"all_gather_single": 0, "reduce_scatter_single": layers, "all_reduce": 0}
    # Activation checkpointing gathers again when it recomputes a layer.
    recomputed = cp2["collectives"]["grads-mlm-recompute"]["backward"]
    assert recomputed == {"all_gather_single": layers, "reduce_scatter_single": layers, "all_reduce": 0}


def test_chunks_balance_causal_work_and_cover_the_sequence() -> None:
    size, seq = 4, 64
    held = [chunk_positions(seq, size, rank) for rank in range(size)]
    assert sorted(torch.cat(held).tolist()) == list(range(seq))
    pairs = [int((p + 1).sum()) for p in held]  # keys each rank's queries see under the causal mask
    assert len(set(pairs)) == 1


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("mode", [AttentionMode.causal, AttentionMode.prefix, AttentionMode.bidirectional])
def test_flex_attention_mask_equals_the_sdpa_mask_for_local_queries(mode: AttentionMode) -> None:
    """The CUDA path's block mask (mask_mod over global positions) allows what SDPA's does;
    FlexAttention runs eagerly here (forward only: no CPU backward in torch 2.13)."""
    seq, batch = 32, 2
    generator = torch.Generator().manual_seed(0)
    doc_ids = torch.cumsum(torch.rand(batch, seq, generator=generator) < 0.2, dim=1)
    prefix_len = torch.tensor([5, 20]) if mode is AttentionMode.prefix else None
    queries = chunk_positions(seq, 2, 1)
    spec = AttentionSpec(mode=mode, prefix_len=prefix_len, doc_ids=doc_ids, query_positions=queries)
    sdpa_mask, _ = attention_mask(spec, seq, torch.device("cpu"))
    allowed = mask_mod(mode is not AttentionMode.bidirectional, prefix_len, doc_ids, queries)
    b, q, k = torch.arange(batch)[:, None, None], torch.arange(len(queries))[:, None], torch.arange(seq)
    assert torch.equal(allowed(b, 0, q, k), sdpa_mask[:, 0])
    block = create_block_mask(allowed, B=batch, H=None, Q_LEN=len(queries), KV_LEN=seq, device="cpu")
    qs, ks, vs = (torch.randn(batch, 2, n, 8, generator=generator) for n in (len(queries), seq, seq))
    expected = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=sdpa_mask)
    torch.testing.assert_close(flex_attention(qs, ks, vs, block_mask=block), expected)


@pytest.mark.parametrize(
    "overrides, world_size, message",
    [
        (["parallel.cp=2"], 3, "parallel.cp = 1 × 1 × 2"),
        (["parallel=pp2", "parallel.cp=2"], 4, "parallel.pp=1"),
        (["parallel.cp=4", "train.seq_len=36"], 4, "train.seq_len=36"),
        (
            ["parallel=tp2", "parallel.tp=4", "model.n_kv_heads=4", "parallel.sequence_parallel=true"]
            + ["parallel.cp=2", "train.seq_len=12"],
            8,
            "divisible by 8",
        ),
        (["parallel.cp=2", "train.eval_tasks=[{type: perplexity, path: x.jsonl}]"], 2, "train.eval_tasks"),
        (["parallel.cp=0"], 1, "parallel.cp=0"),
    ],
)
def test_unsupported_context_parallel_settings_fail_in_one_line(
    overrides: list[str], world_size: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        validate_layout(load_train_config(overrides), world_size)
