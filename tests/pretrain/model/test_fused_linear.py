"""q|k|v and gate|up each run as one GEMM over the canonical separate parameters: the GEMMs a
layer runs, the same values, gradients and saved activations as separate linears (also under
autocast), and ZeRO-3 gathering the parameters for the module that reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import pretrain.model.gpt
import pretrain.training.build
from pretrain.config import load_train_config
from pretrain.model.config import Activation, ModelConfig
from pretrain.model.fused_linear import fused_linear, fused_parameters
from pretrain.model.gpt import GPT
from pretrain.parallel.process_groups import init_distributed
from pretrain.training.trainer import Trainer
from tests.pretrain.parallel.test_tensor_parallel_comm import BASE, batch, loss_of, saved_activation_bytes

GEMMS = {torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm}
# Grouped-query attention (4 query heads, 2 key/value heads) with biases on every linear.
GQA_BIAS = dict(BASE, bias=True, n_layers=2)


class GemmCounter(TorchDispatchMode):
    """Counts the matrix multiplications torch runs (a linear on a 3-d input is one mm or addmm)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.count += func.overloadpacket in GEMMS
        return func(*args, **(kwargs or {}))


def gemms(activation: Activation, n_layers: int) -> tuple[int, int]:
    """GEMMs of one forward and one backward pass."""
    model = GPT(ModelConfig(**BASE, activation=activation, n_layers=n_layers))
    inputs, labels = batch()
    with GemmCounter() as forward:
        loss = model.layers.token_losses(model(inputs), labels).mean()
    with GemmCounter() as backward:
        loss.backward()
    return forward.count, backward.count


@pytest.mark.parametrize("activation", [Activation.swiglu, Activation.gelu])
def test_a_layer_runs_one_gemm_for_qkv_and_one_for_gate_and_up(activation: Activation) -> None:
    """Four GEMMs a layer, each with two in the backward pass (input and weight gradients):
    SwiGLU q|k|v, the attention output, gate|up, down (six with separate linears); GELU
    q|k|v, output, up, down (five)."""
    (forward_2, backward_2), (forward_4, backward_4) = gemms(activation, 2), gemms(activation, 4)
    assert (forward_4 - forward_2) / 2 == 4
    assert (backward_4 - backward_2) / 2 == 8


def test_frozen_weights_cost_no_weight_gradient_gemm() -> None:
    """LoRA freezes the base: the backward pass of q|k|v then runs the input's gradient GEMM
    alone, and the frozen weights get no gradient."""
    linears = tuple(nn.Linear(8, width).requires_grad_(False) for width in (8, 4, 4))
    x = torch.randn(2, 5, 8, requires_grad=True)
    out = torch.cat(fused_linear(x, linears), dim=-1)
    with GemmCounter() as backward:
        out.sum().backward()
    assert backward.count == 1
    assert x.grad is not None and all(p.grad is None for linear in linears for p in linear.parameters())


def separate_linears(x: torch.Tensor, linears: tuple[nn.Module, ...]) -> tuple[torch.Tensor, ...]:
    """The reference: each linear on its own."""
    return tuple(linear(x) for linear in linears)


def test_fused_projections_equal_separate_linears(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ModelConfig(**GQA_BIAS)
    fused = GPT(cfg)
    fused_loss, fused_saved = loss_of(fused), saved_activation_bytes(GPT(cfg))
    monkeypatch.setattr(pretrain.model.gpt, "fused_linear", separate_linears)
    separate = GPT(cfg)
    separate_loss, separate_saved = loss_of(separate), saved_activation_bytes(GPT(cfg))
    assert abs(fused_loss - separate_loss).item() < 1e-6
    expected = dict(separate.named_parameters())
    for name, param in fused.named_parameters():
        assert (param.grad - expected[name].grad).abs().max().item() < 1e-6, name
    # The concatenated weights are temporaries, and v's copy frees the projections' output.
    assert fused_saved == separate_saved


def test_under_autocast_the_gemm_runs_in_the_autocast_type_as_separate_linears_do() -> None:
    torch.manual_seed(0)
    linears = [nn.Linear(32, width) for width in (32, 16, 16)]
    x = torch.randn(2, 8, 32, requires_grad=True)
    outputs = {}
    for name, run in (("fused", fused_linear), ("separate", separate_linears)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = run(x, linears)
        torch.cat(out, dim=-1).float().square().sum().backward()
        outputs[name] = (
            [t.detach() for t in out] + [x.grad] + [p.grad for linear in linears for p in linear.parameters()]
        )
        x.grad = None
        for linear in linears:
            linear.zero_grad(set_to_none=True)
    for fused, separate in zip(outputs["fused"], outputs["separate"]):
        assert fused.dtype == separate.dtype
        torch.testing.assert_close(fused, separate, rtol=1e-2, atol=1e-2)
    assert outputs["fused"][0].dtype == torch.bfloat16


class ReadsItsLinears(nn.Module):
    """Fuses linears it holds, as the model's attention and MLP do."""

    def __init__(self, linears: list[nn.Module]) -> None:
        super().__init__()
        self.linears = nn.ModuleList(linears)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return fused_linear(x, list(self.linears))


@pytest.mark.parametrize(
    "widths,autocast,bias",
    [((32, 16, 16), False, False), ((24, 24), False, False), ((24, 24), True, True)],
    ids=["qkv", "gate-up", "gate-up-autocast-bias"],
)
def test_without_gradients_one_gemm_and_one_compiled_graph(widths: tuple[int, ...], autocast: bool, bias: bool) -> None:
    """Evaluation (no_grad) takes plain autograd: the values of separate linears (also under
    autocast), one GEMM, and a graph torch.compile does not break (through the autograd
    function, Dynamo broke it twice per call under no_grad)."""
    torch.manual_seed(0)
    linears = [nn.Linear(32, width, bias=bias) for width in widths]
    x = torch.randn(2, 8, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        counter = GemmCounter()
        with counter:
            fused = fused_linear(x, linears)
        separate = separate_linears(x, linears)
        explained = torch._dynamo.explain(ReadsItsLinears(linears))(x)
    assert counter.count == 1
    for a, b in zip(fused, separate):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=1e-2 if autocast else 1e-6, atol=1e-2 if autocast else 1e-6)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)


def test_linears_with_and_without_bias_are_refused() -> None:
    with pytest.raises(ValueError, match="every linear has a bias or none has"):
        fused_linear(torch.randn(2, 4), [nn.Linear(4, 4), nn.Linear(4, 4, bias=False)])


def test_zero3_gathers_the_fused_parameters_for_the_module_that_reads_them(
    token_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every parameter partitioned (a tiny model's would otherwise all stay gathered, under
    DeepSpeed's persistence threshold): attention and the MLP find q, k, v, gate and up
    gathered when they start, from the first step on, and the losses equal ZeRO-0's."""
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    build_config = pretrain.training.build.deepspeed_config

    def fully_partitioned(*args: Any) -> dict:
        config = build_config(*args)
        config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
        return config

    monkeypatch.setattr(pretrain.training.build, "deepspeed_config", fully_partitioned)
    process = init_distributed()
    common = [
        f"data.path={token_corpus}",
        "model=tiny",
        "optim=sgd",
        "optim.lr=0.1",
        "train.seq_len=32",
        "train.micro_batch_size=4",
        "train.global_batch_size=4",
        "train.max_steps=2",
        "train.log_every=1",
        "train.eval_every=0",
        "train.save_every=0",
        "logging.progress_bar=false",
        "resume=never",
    ]
    zero3 = Trainer(load_train_config([*common, "parallel=zero3", f"run_dir={tmp_path}/zero3"]), process)
    read_by: dict[nn.Module, list[nn.Parameter]] = {}
    for module, param in fused_parameters(zero3.engine.module):
        read_by.setdefault(module, []).append(param)
    found: list[set] = []
    for module, params in read_by.items():  # each runs after DeepSpeed's hook, registered before
        module.register_forward_pre_hook(
            lambda _module, _args, params=params: found.append({p.ds_status for p in params})
        )
    losses = [record["loss"] for record in zero3.fit()]
    reference = Trainer(load_train_config([*common, "parallel=single", f"run_dir={tmp_path}/single"]), process)
    assert found and all(statuses == {ZeroParamStatus.AVAILABLE} for statuses in found)
    assert losses == pytest.approx([record["loss"] for record in reference.fit()], abs=1e-6)
