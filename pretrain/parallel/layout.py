"""The parallel layout: checked against the config before any process group exists, then
turned into DeepSpeed's topology and process groups."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass

from torch import nn

from pretrain.config import TrainConfig
from pretrain.model.config import Activation
from pretrain.model.fused_linear import fused_parameters
from pretrain.parallel.context import check_context_parallel


@dataclass(frozen=True)
class ParallelLayout:
    tp: int
    pp: int
    dp: int
    cp: int = 1

    @property
    def world_size(self) -> int:
        return self.tp * self.pp * self.dp * self.cp

    @property
    def gradient_peers(self) -> int:
        """Ranks holding the same parameters, over which DeepSpeed averages gradients and
        ZeRO shards: the data-parallel replicas and, within each, the context-parallel ranks."""
        return self.dp * self.cp


def launched_world_size() -> int:
    """World size from the launcher's environment: torchrun and the deepspeed launcher set
    WORLD_SIZE, srun SLURM_NTASKS; 1 when started alone."""
    return int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")))


def validate_layout(cfg: TrainConfig, world_size: int) -> ParallelLayout:
    """The layout for ``world_size`` processes, or one clear error naming the setting and the fix."""
    par, model = cfg.parallel, cfg.model
    cfg.lora.validate(gated_mlp=model.activation is Activation.swiglu)
    if par.tp < 1 or par.pp < 1 or par.cp < 1:
        raise ValueError(f"parallel.tp={par.tp}, parallel.pp={par.pp} and parallel.cp={par.cp} must be at least 1")
    model_ranks = par.tp * par.pp * par.cp
    if world_size % model_ranks:
        raise ValueError(
            f"world size {world_size} is not divisible by parallel.tp × parallel.pp × parallel.cp = "
            f"{par.tp} × {par.pp} × {par.cp}; launch a multiple of {model_ranks} processes or change the layout"
        )
    if par.cp > 1:
        check_context_parallel(cfg)
    if par.pp > 1 and par.zero_stage > 1:
        raise ValueError(
            f"parallel.zero_stage={par.zero_stage} with parallel.pp={par.pp}: DeepSpeed's pipeline engine supports "
            "ZeRO stage 0 or 1 only; set parallel.zero_stage=1"
        )
    if par.pp > 1 and par.zero_stage == 0 and cfg.optim.grad_clip > 0:
        # DeepSpeed 0.19's ZeRO-0 pipeline path counts only the first stage's replicated
        # parameters in the gradient norm, so it would clip by the wrong norm.
        raise ValueError(
            f"parallel.pp={par.pp} with parallel.zero_stage=0 clips gradients by a wrong norm in DeepSpeed; "
            "set parallel.zero_stage=1 (or optim.grad_clip=0)"
        )
    if par.sequence_parallel:
        _check_sequence_parallel(cfg)
    if par.zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"parallel.zero_stage={par.zero_stage}: DeepSpeed ZeRO stages are 0, 1, 2 and 3")
    kv_heads = model.n_kv_heads if model.n_kv_heads is not None else model.n_heads
    for name, value in (
        ("model.n_heads", model.n_heads),
        ("model.n_kv_heads", kv_heads),
        ("the MLP width", model.ffn_dim),
    ):
        if value % par.tp:
            raise ValueError(f"{name}={value} is not divisible by parallel.tp={par.tp}; choose a tp that divides it")
    if model.pad_vocab_multiple % par.tp:
        raise ValueError(
            f"model.pad_vocab_multiple={model.pad_vocab_multiple} must be a multiple of parallel.tp={par.tp}"
        )
    if model.n_layers < par.pp:
        raise ValueError(f"model.n_layers={model.n_layers} is less than parallel.pp={par.pp}: each stage needs a layer")
    if par.pp > 1 and par.checkpoint_interval < 1:
        raise ValueError(f"parallel.checkpoint_interval={par.checkpoint_interval} must be at least 1")
    if cfg.train.compile and par.zero_stage == 3:
        raise ValueError("train.compile=true fails with parallel.zero_stage=3 in DeepSpeed 0.19; use zero_stage<=2")
    dp = world_size // model_ranks
    per_step = cfg.train.micro_batch_size * dp
    if cfg.train.micro_batch_size < 1 or cfg.train.global_batch_size < 1 or cfg.train.global_batch_size % per_step:
        raise ValueError(
            f"train.global_batch_size={cfg.train.global_batch_size} must be a positive multiple of "
            f"train.micro_batch_size={cfg.train.micro_batch_size} × data-parallel size {dp} = {per_step}"
        )
    return ParallelLayout(tp=par.tp, pp=par.pp, dp=dp, cp=par.cp)


def _check_sequence_parallel(cfg: TrainConfig) -> None:
    par = cfg.parallel
    if par.tp < 2:
        raise ValueError(
            f"parallel.sequence_parallel=true needs parallel.tp > 1 (it is {par.tp}); "
            "set parallel.sequence_parallel=false"
        )
    if par.pp > 1:
        # DeepSpeed's pipeline engine splits the activations it sends between stages over the
        # tensor-parallel ranks, taking them to be the same on each; sequence shards are not.
        raise ValueError(
            f"parallel.sequence_parallel=true does not work with parallel.pp={par.pp} (DeepSpeed's pipeline takes "
            "the activations to be the same on every tensor-parallel rank); "
            "set parallel.pp=1 or sequence_parallel=false"
        )
    if cfg.train.seq_len % par.tp:
        raise ValueError(
            f"parallel.sequence_parallel=true splits each sequence over parallel.tp={par.tp} ranks, but "
            f"train.seq_len={cfg.train.seq_len} is not divisible by it; choose a multiple of {par.tp}"
        )


def build_grid(layout: ParallelLayout):  # type: ignore[no-untyped-def]
    """DeepSpeed's process grid (pipe × data × model axes); every rank builds every group,
    in the same order, as torch.distributed requires. Its data axis spans dp × cp ranks
    (context-parallel ranks are data-parallel peers for gradients and ZeRO), cp varying
    fastest: ranks are ordered [pp][dp][cp][tp] (``pretrain.parallel.context``)."""
    from deepspeed.runtime.pipe.topology import PipelineParallelGrid, PipeModelDataParallelTopology

    topology = PipeModelDataParallelTopology(num_pp=layout.pp, num_mp=layout.tp, num_dp=layout.gradient_peers)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the whole topology
        return PipelineParallelGrid(topology=topology)


def sharded_construction(ds_config: dict, grid, zero_stage: int):  # type: ignore[no-untyped-def]
    """Where to build the model: under ZeRO-3, ``deepspeed.zero.Init``, which partitions each
    module's parameters as soon as the module is built, so a rank never holds more than its
    partitions and the module being built (``pretrain.model.init`` then fills only the
    partitions); otherwise modules build on the meta device and each rank materializes its
    own tensor-parallel slice."""
    import deepspeed

    return deepspeed.zero.Init(
        config_dict_or_path=ds_config,
        mpu=grid,
        # not the world: tensor-parallel ranks hold different slices
        data_parallel_group=grid.get_data_parallel_group(),
        enabled=zero_stage == 3,
    )


def register_fused_parameters(model: nn.Module) -> None:
    """ZeRO-3 gathers a module's own parameters in the module's forward (and backward) hooks;
    attention and the MLP read their q|k|v and gate|up linears' parameters for one GEMM
    without calling those linears (``pretrain.model.fused_linear``), so the parameters are
    registered as theirs too (DeepSpeed's ``register_external_parameter``). Unregistered,
    DeepSpeed would still gather each one when first touched, but one at a time and outside
    its prefetching."""
    import deepspeed

    for module, param in fused_parameters(model):
        deepspeed.zero.register_external_parameter(module, param)
