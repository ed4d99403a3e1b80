"""The GPT laid out as DeepSpeed pipeline stages, from the same modules as ``pretrain.model.gpt``.

Between stages travels a tuple of tensors: the hidden states, the prefix lengths and the
document ids (zero-filled when the objective does not use them: the pipeline engine passes
tensors only). The attention mode is fixed for a run, so each block stage knows it from
construction; each block picks its attention kernel as the whole model does
(``pretrain.model.gpt.attention_inputs``: FlexAttention block masks on CUDA, SDPA on CPU).
Parameter names inside a stage are the block's own; ``canonical_parameters``
maps them back to the names of the whole ``GPT`` (``blocks.3.attn.wq.weight``), which
initialization and the sharded checkpoint use.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from pretrain.config import PartitionMethod
from pretrain.model.config import ModelConfig
from pretrain.model.flex_attention import BlockMask
from pretrain.model.gpt import (
    AttentionMode,
    AttentionSpec,
    Block,
    Embedding,
    LayerFactory,
    OutputHead,
    attention_inputs,
)
from pretrain.model.init import materialize

StageTensors = tuple[Tensor, Tensor, Tensor]  # (hidden or input ids, prefix_len, doc_ids)


def _positions(x: Tensor) -> Tensor:
    return torch.arange(x.shape[1], device=x.device)


class EmbeddingStage(Embedding):
    canonical_prefix = "embed."

    def __init__(self, cfg: ModelConfig, layers: LayerFactory, seed: int) -> None:
        with torch.device("meta"):  # allocated once, by materialize (pretrain/model/init.py)
            super().__init__(cfg, layers)
        materialize(self, self.canonical_prefix, cfg, seed)

    def forward(self, inputs: StageTensors) -> StageTensors:  # type: ignore[override]
        input_ids, prefix_len, doc_ids = inputs
        return super().forward(input_ids, _positions(input_ids)), prefix_len, doc_ids


def _storage_key(tensor: Optional[Tensor]) -> Optional[tuple]:
    """The same for a tensor and its detached views, until either is written in place."""
    if tensor is None:
        return None
    return (
        tensor.device,
        tensor.untyped_storage().data_ptr(),
        tensor.storage_offset(),
        tensor.shape,
        tensor.stride(),
        tensor._version,
    )


class StageMasks:
    """The attention mask of each micro-batch, built once for all the blocks of a pipeline
    stage (and for their recomputation in the backward pass) instead of once per block.

    The pipeline engine hands the blocks tensors only, so a micro-batch is known by its
    prefix-length and document-id tensors: their storage and version, which recomputation's
    detached views share (each micro-batch's arrive as fresh tensors, from the batch or
    cloned out of the receive buffers). An entry holds those tensors, so their storage is
    not reused by another micro-batch while it is cached. ``size`` micro-batches are kept:
    with a 1F1B schedule at most one per stage is in flight on a stage. An entry is a block
    mask (a few int32 tiles per 128 × 128 block) on CUDA, and on CPU a dense
    (batch, 1, seq, seq) boolean mask."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[tuple, tuple[AttentionSpec, Optional[Tensor | BlockMask], bool]] = OrderedDict()

    def __call__(self, spec: AttentionSpec, seq_len: int, device: torch.device, dropout: float):
        """``pretrain.model.gpt.attention_inputs`` of the micro-batch, built on its first call."""
        key = (_storage_key(spec.prefix_len), _storage_key(spec.doc_ids), seq_len, device, dropout)
        if key in self._entries:
            self._entries.move_to_end(key)
        else:
            self._entries[key] = (spec, *attention_inputs(spec, seq_len, device, dropout))
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)
        _, mask, is_causal = self._entries[key]
        return mask, is_causal


class BlockStage(Block):
    def __init__(
        self,
        cfg: ModelConfig,
        layers: LayerFactory,
        seed: int,
        index: int,
        mode: AttentionMode,
        uses_doc_ids: bool,
        masks: StageMasks,
    ) -> None:
        with torch.device("meta"):
            super().__init__(cfg, layers)
        self.canonical_prefix = f"blocks.{index}."
        self.mode = mode
        self.uses_doc_ids = uses_doc_ids
        self.masks = masks  # shared by the blocks of the pipeline
        materialize(self, self.canonical_prefix, cfg, seed)

    def forward(self, inputs: StageTensors) -> StageTensors:  # type: ignore[override]
        hidden, prefix_len, doc_ids = inputs
        spec = AttentionSpec(
            mode=self.mode,
            prefix_len=prefix_len if self.mode is AttentionMode.prefix else None,
            doc_ids=doc_ids if self.uses_doc_ids else None,
        )
        mask, is_causal = self.masks(spec, hidden.shape[1], hidden.device, self.attn.dropout if self.training else 0.0)
        return super().forward(hidden, _positions(hidden), mask, is_causal), prefix_len, doc_ids


class FinalNormStage(nn.Module):
    """The output head's norm, on its own when the projection is the tied embedding."""

    canonical_prefix = "head."

    def __init__(self, cfg: ModelConfig, layers: LayerFactory, seed: int) -> None:
        super().__init__()
        with torch.device("meta"):
            self.norm = layers.norm(cfg)
        materialize(self, self.canonical_prefix, cfg, seed)

    def forward(self, inputs: StageTensors) -> Tensor:
        return self.norm(inputs[0])


class HeadStage(OutputHead):
    canonical_prefix = "head."

    def __init__(self, cfg: ModelConfig, layers: LayerFactory, seed: int) -> None:
        with torch.device("meta"):
            super().__init__(cfg, layers)
        materialize(self, self.canonical_prefix, cfg, seed)

    def forward(self, inputs: StageTensors) -> Tensor:  # type: ignore[override]
        return super().forward(inputs[0])


def _tied_logits(embedding: EmbeddingStage, hidden: Tensor) -> Tensor:
    return embedding.layers.tied_logits(hidden, embedding.tokens.weight)


def build_pipeline(
    cfg: ModelConfig,
    layers: LayerFactory,
    seed: int,
    mode: AttentionMode,
    uses_doc_ids: bool,
    grid,  # deepspeed PipelineParallelGrid
    loss_fn: Callable[[Tensor, tuple[Tensor, Tensor]], Tensor],
    partition_method: PartitionMethod,
    checkpoint_interval: int,
):  # -> deepspeed.pipe.PipelineModule
    from deepspeed.pipe import LayerSpec, PipelineModule, TiedLayerSpec

    specs: list = []
    if cfg.tie_embeddings:
        specs.append(TiedLayerSpec("embed", EmbeddingStage, cfg, layers, seed, tied_weight_attr="tokens.weight"))
    else:
        specs.append(LayerSpec(EmbeddingStage, cfg, layers, seed))
    masks = StageMasks(size=grid.get_pipe_parallel_world_size())
    specs += [
        LayerSpec(BlockStage, cfg, layers, seed, index, mode, uses_doc_ids, masks) for index in range(cfg.n_layers)
    ]
    if cfg.tie_embeddings:
        specs.append(LayerSpec(FinalNormStage, cfg, layers, seed))
        specs.append(
            TiedLayerSpec(
                "embed", EmbeddingStage, cfg, layers, seed, forward_fn=_tied_logits, tied_weight_attr="tokens.weight"
            )
        )
    else:
        specs.append(LayerSpec(HeadStage, cfg, layers, seed))
    method = {PartitionMethod.blocks: "type:BlockStage"}.get(partition_method, partition_method.value)
    return PipelineModule(
        layers=specs,
        topology=grid.topology(),
        loss_fn=loss_fn,
        partition_method=method,
        activation_checkpoint_interval=checkpoint_interval,
        # Only blocks: checkpointing the embedding would feed integer ids to autograd.
        checkpointable_layers=["BlockStage"],
    )


def canonical_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """Parameters under their names in the whole GPT, for a GPT or a pipeline stage's module.
    A tied embedding that a stage holds twice appears once."""
    stages = [m for m in module.modules() if hasattr(m, "canonical_prefix")]
    if not stages:
        return dict(module.named_parameters())
    named: dict[str, nn.Parameter] = {}
    for stage in stages:
        for name, param in stage.named_parameters():
            named.setdefault(stage.canonical_prefix + name, param)
    return named


def stage_inputs(input_ids: Tensor, prefix_len: Optional[Tensor], doc_ids: Optional[Tensor]) -> StageTensors:
    """The first stage's input tuple, with zero tensors standing in for unused parts."""
    batch, seq = input_ids.shape
    if prefix_len is None:
        prefix_len = torch.zeros(batch, dtype=torch.int64, device=input_ids.device)
    if doc_ids is None:
        doc_ids = torch.zeros(batch, seq, dtype=torch.int64, device=input_ids.device)
    return input_ids, prefix_len, doc_ids
