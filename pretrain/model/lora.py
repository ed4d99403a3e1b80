"""LoRA: low-rank adapters on a frozen model (Hu et al. 2021, "LoRA: Low-Rank Adaptation of
Large Language Models").

A targeted linear ``y = W x`` becomes ``y = W x + (alpha / rank) · B A dropout(x)`` with
``A`` (rank × in) drawn as ``peft`` draws it (Kaiming-uniform with a = √5, i.e. U(±1/√in))
and ``B`` (out × rank) zero, so training starts from the base model exactly; every other
parameter is frozen: no gradient, no optimizer state, nothing in the checkpoint.

The adapter is a child module of its linear (``blocks.3.attn.wq.lora.a``); the linear adds
its output (``pretrain.model.fused_linear.with_adapter``), also where q|k|v and gate|up run as one
GEMM, which stays one GEMM over the frozen weights. Adapters are attached to the model a
layout built (``attach_adapters``), tensor-parallel or a pipeline stage, and split as its
linear is: for a column-parallel linear (output features split) ``B`` is split by rows and
``A`` is whole; for a row-parallel one (input features split) ``A`` is split by columns and
``B`` is whole, and ``B A_local x_local`` joins the partial output before the linear's
reduction (``B`` is linear, so the sum over ranks is ``B A x``). The whole factor sees only
this rank's part of the product, so its gradient is summed over the tensor-parallel group.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from pretrain.checkpoint.directory import COMPLETE_MARKER, find_checkpoint
from pretrain.choices import Choice
from pretrain.model.init import full_shape, local_shape, set_local, shard_of
from pretrain.parallel.tensor import mark_shard, summed_gradient


class LoraTarget(Choice):
    q = "q"
    k = "k"
    v = "v"
    o = "o"
    gate = "gate"
    up = "up"
    down = "down"


# Where each target lives in a Block.
TARGET_MODULES = {
    LoraTarget.q: "attn.wq",
    LoraTarget.k: "attn.wk",
    LoraTarget.v: "attn.wv",
    LoraTarget.o: "attn.wo",
    LoraTarget.gate: "mlp.gate",
    LoraTarget.up: "mlp.up",
    LoraTarget.down: "mlp.down",
}


@dataclass
class LoraConfig:
    # Rank of the adapters; 0 trains the whole model (no adapters).
    rank: int = 0
    # The update is scaled by alpha / rank (peft's lora_alpha; its default 8).
    alpha: float = 8.0
    # Dropout on the adapters' input (peft's lora_dropout).
    dropout: float = 0.0
    # The linears that get adapters; peft's default for Llama is q and v.
    targets: list[LoraTarget] = field(default_factory=lambda: [LoraTarget.q, LoraTarget.v])

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def validate(self, gated_mlp: bool) -> None:
        if self.rank < 0:
            raise ValueError(f"lora.rank={self.rank} must be >= 0 (0 switches LoRA off)")
        if not self.enabled:
            return
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout={self.dropout} must be in [0, 1)")
        if not self.targets:
            raise ValueError("lora.targets is empty; name at least one of q, k, v, o, gate, up, down")
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"lora.targets={[str(t) for t in self.targets]} names a linear twice")
        if LoraTarget.gate in self.targets and not gated_mlp:
            raise ValueError(
                "lora.targets has gate, but model.activation=gelu has no gate linear; drop it from lora.targets"
            )


class FeatureShardDropout(nn.Dropout):
    """Dropout of this rank's block of input features: the mask of all features is drawn
    (the tensor-parallel ranks' generators agree) and this rank's block kept, so the ranks'
    masks are the one process's mask, cut."""

    def __init__(self, p: float, rank: int, size: int) -> None:
        super().__init__(p)
        self.rank, self.size = rank, size

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        mask = x.new_empty((*x.shape[:-1], x.shape[-1] * self.size)).bernoulli_(1.0 - self.p)
        return x * mask.chunk(self.size, dim=-1)[self.rank].div(1.0 - self.p)


class LoraAdapter(nn.Module):
    """``scaling · B A dropout(x)`` for the linear ``base``, split as ``base`` is."""

    def __init__(self, base: nn.Module, cfg: LoraConfig, group: Optional[dist.ProcessGroup]) -> None:
        super().__init__()
        out_features, in_features = local_shape(base.weight)
        self.scaling = cfg.scaling
        split = getattr(base.weight, "tp_split_dim", None)
        self.a = nn.Parameter(torch.empty(cfg.rank, in_features))
        self.b = nn.Parameter(torch.zeros(out_features, cfg.rank))
        self.dropout: nn.Module = nn.Dropout(cfg.dropout)
        # The factor held whole, whose gradient sums over the group (None without tp).
        self.whole: Optional[str] = None
        self.group = group if split is not None else None
        if split is not None:
            rank, size = base.weight.tp_rank, base.weight.tp_size
            mark_shard(self.b if split == 0 else self.a, split, rank, size)
            self.whole = "a" if split == 0 else "b"
            if split == 1:
                self.dropout = FeatureShardDropout(cfg.dropout, rank, size)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.a, self.b
        if self.whole == "a":
            a = summed_gradient(a, self.group)
        elif self.whole == "b":
            b = summed_gradient(b, self.group)
        return F.linear(F.linear(self.dropout(x), a), b) * self.scaling


def initial_a(name: str, shape: torch.Size, seed: int) -> Tensor:
    """The whole ``A`` of ``shape`` (rank, in): U(±1/√in), which is what peft's
    ``kaiming_uniform_(a=√5)`` draws; from a generator seeded by the parameter's name,
    so every layout starts from the same adapters (as ``pretrain.model.init`` does for weights)."""
    generator = torch.Generator().manual_seed((seed << 32) ^ zlib.crc32(name.encode()))
    bound = 1.0 / math.sqrt(shape[1])
    return torch.rand(shape, generator=generator).mul_(2 * bound).sub_(bound)


def _roots(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name in the whole GPT, module) of a GPT, or of each stage a pipeline rank holds."""
    stages = [(m.canonical_prefix, m) for m in model.modules() if hasattr(m, "canonical_prefix")]
    return stages or [("", model)]


def targeted(name: str, cfg: LoraConfig) -> bool:
    return any(name == TARGET_MODULES[t] or name.endswith("." + TARGET_MODULES[t]) for t in cfg.targets)


@torch.no_grad()
def attach_adapters(model: nn.Module, cfg: LoraConfig, seed: int, group: Optional[dist.ProcessGroup]) -> int:
    """Give every targeted linear of ``model`` an adapter and freeze everything else;
    returns the number of adapters. ``group``: the tensor-parallel group (None without tp).
    Under ``deepspeed.zero.Init`` the adapters are partitioned as they are built."""
    for param in model.parameters():
        param.requires_grad_(False)
    count = 0
    for prefix, root in _roots(model):
        for name, module in list(root.named_modules()):
            if not targeted(name, cfg):
                continue
            module.lora = LoraAdapter(module, cfg, group)
            a = module.lora.a
            whole_a = initial_a(f"{prefix}{name}.lora.a", full_shape(a), seed)
            set_local(a, shard_of(whole_a, a).to(a.ds_tensor.device if hasattr(a, "ds_tensor") else a.device))
            count += 1
    return count


def is_adapter(name: str) -> bool:
    return ".lora." in name


def base_weight_name(adapter_name: str) -> str:
    """``blocks.0.attn.wq.lora.a`` -> ``blocks.0.attn.wq.weight``."""
    return adapter_name.rsplit(".lora.", 1)[0] + ".weight"


def merged(base: dict[str, Tensor], adapters: dict[str, Tensor], scaling: float) -> dict[str, Tensor]:
    """The base weights with every adapter folded in: ``W + scaling · B A`` (fp32)."""
    weights = dict(base)
    for name in adapters:
        if is_adapter(name) and name.endswith(".a"):
            target = base_weight_name(name)
            b = adapters[name[:-1] + "b"]
            weights[target] = (weights[target].float() + scaling * (b.float() @ adapters[name].float())).to(
                weights[target].dtype
            )
    return weights


def adapter_parameter_count(model: nn.Module, cfg: LoraConfig) -> int:
    """Values in the adapters ``attach_adapters`` would give ``model`` (a whole GPT, e.g. on meta)."""
    shapes = [module.weight.shape for name, module in model.named_modules() if targeted(name, cfg)]
    return sum(cfg.rank * (out_features + in_features) for out_features, in_features in shapes)


# Bytes of each weight file's data read into the base's fingerprint.
FINGERPRINT_BYTES = 2**20


def base_identity(init_from: Optional[str], seed: int) -> dict[str, Any]:
    """What a LoRA run's checkpoints record of the base they belong to: the run's seed (the
    weights it initialized) and, with ``init_from``, that directory (for a run of ours, its
    newest complete checkpoint, whose ``complete.json`` is fingerprinted) and a fingerprint of its
    ``config.json`` and of each safetensors file's size, header (tensor names, shapes,
    dtypes) and first MiB of values: another model is caught, an edit deep inside a file
    is not (hashing every byte of a large model at each start would take minutes)."""
    if not init_from:
        return {"seed": seed, "init_from": None, "fingerprint": None}
    directory = Path(init_from).resolve()
    if not (directory / "config.json").is_file():  # a run of ours: its checkpoint's record names it
        directory = find_checkpoint(directory)
    digest = hashlib.sha256()
    for path in [directory / "config.json", directory / COMPLETE_MARKER, *sorted(directory.glob("*.safetensors"))]:
        if path.is_file():
            with open(path, "rb") as stream:
                header = int.from_bytes(stream.read(8), "little") if path.suffix == ".safetensors" else 0
                digest.update(f"{path.name}:{path.stat().st_size}:".encode() + stream.read(header + FINGERPRINT_BYTES))
    return {"seed": seed, "init_from": str(directory), "fingerprint": digest.hexdigest()}


def check_same_base(saved: Optional[dict[str, Any]], current: dict[str, Any], where: Path) -> None:
    """Adapters only fit the base they were trained on: refuse another (the directory may
    have moved; its fingerprint and the seed must agree)."""
    if saved is None:
        raise ValueError(
            f"{where} was not written by a LoRA run (it holds the whole model, no adapters): to train adapters on it, "
            "export it (python -m pretrain.export checkpoint=... output_dir=...) "
            "and start a new run with init_from=<that export>"
        )
    same = ("seed", "fingerprint")
    if any(saved.get(key) != current[key] for key in same):
        raise ValueError(
            f"{where}: its LoRA adapters were trained on the base {saved}, but this run's base is {current}; "
            "set init_from (and train.seed) to that base"
        )
