"""Tensor parallelism communicates like Megatron: per layer 2 all-reduces forward and 2
backward, or with sequence parallelism 2 reduce-scatters + 2 all-gathers each way (plus the
norm weights' small gradient sums); and a tp2 model, with or without sequence parallelism,
computes the single-process model's loss and gradients (with embedding and residual dropout
too); the activations it saves are those the planner predicts; attention dropout draws each
rank's own masks, residual dropout the same ones, and recompute replays them. Two gloo processes, tiny models."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pretrain.model.config import Activation, ModelConfig, Norm, Position
from pretrain.model.gpt import GPT
from pretrain.model.init import shard_of
from pretrain.parallel import rng
from pretrain.parallel.tensor import TensorParallelLayers
from pretrain.planning.activations import ActivationSetting, stage_activations

WORLD = 2
COLLECTIVES = ("all_reduce", "all_gather_single", "reduce_scatter_single")
# Grouped-query attention (4 query heads, 2 key/value heads: one of each per rank), SwiGLU,
# RMSNorm, rotary, tied embeddings ...
BASE = dict(
    vocab_size=96, pad_vocab_multiple=32, d_model=32, n_heads=4, n_kv_heads=2, max_seq_len=16, ffn_multiple_of=16
)
# ... and the other layers tensor and sequence parallelism treat apart: biases (row-parallel
# ones added after the reduce-scatter), LayerNorm's bias, learned positions, an untied head.
VARIANT = dict(
    BASE, bias=True, norm=Norm.layernorm, position=Position.learned, activation=Activation.gelu, tie_embeddings=False
)
# Embedding and residual dropout (sequence parallelism draws them on sequence shards), with
# activation checkpointing; the generator is seeded alike before each model's pass, as the
# trainer seeds every rank.
DROPOUT = dict(BASE, embed_dropout=0.3, residual_dropout=0.3)
# Attention dropout too: inside the tensor-parallel region, each rank's own stream.
ATTENTION_DROPOUT = dict(BASE, attn_dropout=0.5, residual_dropout=0.5)


class CollectiveCounter:
    """Counts torch.distributed collectives by (phase, name, dimensions of the tensor)."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str, int]] = Counter()
        self.phase = "forward"
        self.originals: dict[str, Callable[..., Any]] = {}

    def __enter__(self) -> CollectiveCounter:
        for name in COLLECTIVES:
            original = self.originals[name] = getattr(dist, name)

            def counted(
                tensor: torch.Tensor, *args: Any, _name: str = name, _original: Callable = original, **kwargs: Any
            ):
                self.calls[(self.phase, _name, tensor.dim())] += 1
                return _original(tensor, *args, **kwargs)

            setattr(dist, name, counted)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self.originals.items():
            setattr(dist, name, original)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, BASE["vocab_size"], (2, 9), generator=generator)
    return tokens[:, :-1], tokens[:, 1:]


def loss_of(model: GPT, counter: CollectiveCounter | None = None) -> torch.Tensor:
    inputs, labels = batch()
    loss = model.layers.token_losses(model(inputs), labels).mean()
    if counter is not None:
        counter.phase = "backward"
    loss.backward()
    return loss.detach()


def saved_activation_bytes(model: GPT) -> int:
    """Bytes of the distinct tensors autograd saves for the backward pass of one forward,
    parameters left out (what the planner calls stored activations)."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    inputs, labels = batch()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model.layers.token_losses(model(inputs), labels).mean().backward()
    return sum(storages.values())


def same_heads_everywhere(model: GPT) -> None:
    """Every query, key and value head on every rank gets the same weights, so the heads'
    outputs differ only where their dropout masks do."""
    attn, cfg = model.blocks[0].attn, model.cfg
    head = torch.randn(cfg.head_dim, cfg.d_model, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for linear in attn.fused_linears():
            linear.weight.copy_(head.repeat(linear.weight.shape[0] // cfg.head_dim, 1))


def attention_dropout_masks(layers: TensorParallelLayers) -> dict[str, torch.Tensor]:
    """This rank's heads' attention outputs (the row-parallel input), with dropout and without,
    and the block's output (replicated: residual dropout outside the region)."""
    model = GPT(ModelConfig(**ATTENTION_DROPOUT, n_layers=1), layers)
    same_heads_everywhere(model)
    seen: dict[str, torch.Tensor] = {}
    model.blocks[0].attn.wo.register_forward_pre_hook(lambda module, args: seen.__setitem__("heads", args[0].detach()))
    model.blocks[0].register_forward_hook(lambda module, args, out: seen.__setitem__("block", out.detach()))
    inputs, _ = batch()
    torch.manual_seed(1)  # alike on both ranks, as the trainer seeds a tensor-parallel group
    rng.seed(1, dist.get_rank(layers.group))
    with torch.no_grad():
        model(inputs)
        result = {"heads": seen["heads"], "block": seen["block"]}
        model.eval()
        model(inputs)
    return {**result, "heads without dropout": seen["heads"]}


def recompute_gradients(layers: TensorParallelLayers, checkpointing: bool) -> dict[str, torch.Tensor]:
    model = GPT(ModelConfig(**ATTENTION_DROPOUT, n_layers=2), layers)
    model.activation_checkpointing = checkpointing
    torch.manual_seed(1)
    rng.seed(1, dist.get_rank(layers.group))
    loss_of(model)
    return {name: param.grad for name, param in model.named_parameters()}


def worker(rank: int, store: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    results: dict[str, Any] = {}
    for sequence_parallel in (False, True):
        layers = TensorParallelLayers(dist.group.WORLD, sequence_parallel)
        for n_layers in (2, 4):
            with CollectiveCounter() as counter:
                loss_of(GPT(ModelConfig(**BASE, n_layers=n_layers), layers), counter)
            results[f"calls sp={sequence_parallel} layers={n_layers}"] = dict(counter.calls)
            saved = saved_activation_bytes(GPT(ModelConfig(**BASE, n_layers=n_layers), layers))
            results[f"saved sp={sequence_parallel} layers={n_layers}"] = saved
        for name, config in (("base", BASE), ("variant", VARIANT), ("dropout", DROPOUT)):
            cfg = ModelConfig(**config, n_layers=2)
            dense, parallel = GPT(cfg), GPT(cfg, layers)
            # Recomputed blocks redo their collectives and dropout masks in the backward pass.
            parallel.activation_checkpointing = name == "dropout"
            torch.manual_seed(1)
            expected_loss = loss_of(dense)
            torch.manual_seed(1)
            loss = loss_of(parallel)
            grads = dict(dense.named_parameters())
            error = max(
                (p.grad - shard_of(grads[n].grad, p)).abs().max().item() for n, p in parallel.named_parameters()
            )
            results[f"parity sp={sequence_parallel} {name}"] = (abs(loss - expected_loss).item(), error)
    layers = TensorParallelLayers(dist.group.WORLD)
    results["attention dropout"] = attention_dropout_masks(layers)
    stored, recomputed = recompute_gradients(layers, False), recompute_gradients(layers, True)
    results["recompute error"] = max((stored[name] - recomputed[name]).abs().max().item() for name in stored)
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("tp-comm")
    mp.spawn(worker, args=(str(directory / "store"), str(directory)), nprocs=WORLD)
    return [torch.load(directory / f"rank{rank}.pt") for rank in range(WORLD)]


def per_layer(calls: dict[str, Any], sequence_parallel: bool) -> dict[tuple[str, str, int], float]:
    """Collectives one more layer adds: (4 layers - 2 layers) / 2."""
    more, fewer = calls[f"calls sp={sequence_parallel} layers=4"], calls[f"calls sp={sequence_parallel} layers=2"]
    return {
        key: (more.get(key, 0) - fewer.get(key, 0)) / 2
        for key in more.keys() | fewer.keys()
        if more.get(key, 0) != fewer.get(key, 0)
    }


def test_a_layer_costs_two_all_reduces_forward_and_two_backward(results: list[dict]) -> None:
    for calls in results:
        assert per_layer(calls, False) == {("forward", "all_reduce", 3): 2, ("backward", "all_reduce", 3): 2}


def test_sequence_parallel_layer_reduce_scatters_and_all_gathers_instead(results: list[dict]) -> None:
    expected = {
        ("forward", "all_gather_single", 3): 2,  # into attention and the MLP
        ("forward", "reduce_scatter_single", 3): 2,  # out of them
        ("backward", "all_gather_single", 3): 2,
        ("backward", "reduce_scatter_single", 3): 2,
        ("backward", "all_reduce", 1): 2,  # the two norm weights' gradients, d_model values each
    }
    for calls in results:
        assert per_layer(calls, True) == expected


@pytest.mark.parametrize("sequence_parallel", [False, True])
@pytest.mark.parametrize("config", ["base", "variant", "dropout"])
def test_tp2_loss_and_gradients_equal_one_process(results: list[dict], sequence_parallel: bool, config: str) -> None:
    for rank_results in results:
        loss_error, grad_error = rank_results[f"parity sp={sequence_parallel} {config}"]
        assert loss_error < 1e-6
        assert grad_error < 1e-6


def test_the_planner_predicts_what_sequence_parallelism_saves(results: list[dict]) -> None:
    """The activations one more layer stores, and what sequence parallelism saves on the whole
    model, as measured (autograd's saved tensors) and as the planner predicts them."""
    inputs, _ = batch()
    cfg = {n: ModelConfig(**BASE, n_layers=n) for n in (2, 4)}

    def predicted(sequence_parallel: bool, n_layers: int) -> float:
        setting = ActivationSetting(
            seq_len=inputs.shape[1],
            micro_batch=inputs.shape[0],
            element_bytes=4,
            tp=WORLD,
            sequence_parallel=sequence_parallel,
            sharded_linear_inputs=False,
        )
        return stage_activations(cfg[n_layers], setting, layers=n_layers, in_flight=1, has_head=True).stored

    for saved in results:
        for sequence_parallel in (False, True):
            per_layer = (
                saved[f"saved sp={sequence_parallel} layers=4"] - saved[f"saved sp={sequence_parallel} layers=2"]
            ) / 2
            expected = (predicted(sequence_parallel, 4) - predicted(sequence_parallel, 2)) / 2
            assert per_layer == pytest.approx(expected, rel=0.1)
        measured_saving = saved["saved sp=False layers=4"] - saved["saved sp=True layers=4"]
        # Was negative while each column-parallel linear copied (and saved) the strided gathered input.
        assert measured_saving == pytest.approx(predicted(False, 4) - predicted(True, 4), rel=0.1)


def test_attention_dropout_draws_each_ranks_masks_and_residual_dropout_the_same(results: list[dict]) -> None:
    """Megatron's streams: with every head alike, tp ranks' heads come out the same without
    dropout and differ with it (one shared stream would give them the same masks); the
    block's output, after residual dropout on replicated activations, is the same on both."""
    first, second = (rank_results["attention dropout"] for rank_results in results)
    assert torch.equal(first["heads without dropout"], second["heads without dropout"])
    assert not torch.equal(first["heads"], second["heads"])
    assert torch.equal(first["block"], second["block"])


def test_recompute_replays_the_tensor_parallel_masks(results: list[dict]) -> None:
    """Activation checkpointing gives the gradients of the stored pass: the recomputed
    attention draws the masks of the first forward from the rank's stream."""
    for rank_results in results:
        assert rank_results["recompute error"] < 1e-6
