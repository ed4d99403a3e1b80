"""One optimizer step over this rank's micro-batches, dense or pipelined, behind one
interface (``TrainStep``), so the loop never asks which layout it runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Protocol

import torch
import torch.distributed as dist
from deepspeed.runtime.base_optimizer import ZeROOptimizer

from pretrain.config import Precision
from pretrain.model.gpt import LayerFactory
from pretrain.model.loss import sample_mean_loss
from pretrain.objectives import Batch
from pretrain.parallel.context import ContextParallel
from pretrain.parallel.pipeline import stage_inputs
from pretrain.training.optim import NonFiniteLosses


class StepLoss:
    """A micro-batch's loss: the mean over samples of each sample's mean token loss. In
    training every one is counted in ``nonfinite``, which the optimizer's guard reads. Under
    context parallelism, this rank's share of it, scaled so that the ranks' mean is the loss."""

    def __init__(
        self, layers: LayerFactory, nonfinite: NonFiniteLosses, context: Optional[ContextParallel] = None
    ) -> None:
        self.layers = layers
        self.nonfinite = nonfinite
        self.context = context

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
        losses = self.layers.token_losses(logits, labels)
        if self.context is None:
            loss = sample_mean_loss(losses, loss_mask)
        else:
            loss = self.context.sample_mean_loss(losses, loss_mask)
        if torch.is_grad_enabled():  # the pipeline's evaluation comes through here too
            self.nonfinite.note(loss)
        return loss

    def of_pipeline(self, logits: torch.Tensor, targets: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The pipeline's last stage hands the labels and loss mask as one tuple."""
        return self(logits, *targets)


@dataclass
class StepOutput:
    loss: torch.Tensor  # this rank's mean loss over the step's micro-batches (0-dim, on the device)
    grad_norm: Optional[float]


class TrainStep(Protocol):
    def train(self, batches: list[Batch], *, with_grad_norm: bool) -> StepOutput:
        """Forward, backward and the optimizer step over one step's micro-batches."""
        ...

    def validation_loss(self, batches: list[Batch]) -> float:
        """Collective: the mean loss of these micro-batches over the data-parallel ranks."""
        ...


def deepspeed_grad_norm(engine) -> Optional[float]:  # type: ignore[no-untyped-def]
    """The norm DeepSpeed computed on the (sharded) gradients of the last step."""
    norm = engine.get_global_grad_norm()
    return None if norm is None else float(norm)


class DenseStep:
    """Forward and backward per micro-batch; DeepSpeed accumulates and steps at the last."""

    def __init__(
        self,
        engine,  # type: ignore[no-untyped-def]
        loss: StepLoss,
        *,
        precision: Precision,
        zero_stage: int,
        tp_group: Optional[dist.ProcessGroup],
        dp_group: dist.ProcessGroup,
        dp_size: int,
        device: torch.device,
    ) -> None:
        self.engine = engine
        self.loss = loss
        self.precision = precision
        self.zero_stage = zero_stage
        self.tp_group = tp_group
        self.dp_group = dp_group
        self.dp_size = dp_size
        self.device = device
        if zero_stage == 0 and dp_size == 1:
            # DeepSpeed would still all-reduce the gradients over this one rank: a flatten and
            # a copy back of every gradient each step (~1 ms of a tiny model's 40 ms CPU step).
            engine.enable_backward_allreduce = False

    def train(self, batches: list[Batch], *, with_grad_norm: bool) -> StepOutput:
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        grad_norm = None
        for micro_step, batch in enumerate(batches):
            loss = self.loss(self.engine(batch.input_ids, batch.attention), batch.labels, batch.loss_mask)
            loss_sum += loss.detach().double()  # kept on the device: no host sync per micro-step
            self.engine.backward(loss * self._unapplied_loss_scale())
            if micro_step == len(batches) - 1 and with_grad_norm:
                grad_norm = self._unsharded_grad_norm()
            self.engine.step()
        if grad_norm is None and with_grad_norm:
            grad_norm = deepspeed_grad_norm(self.engine)
        return StepOutput(loss=loss_sum / len(batches), grad_norm=grad_norm)

    @torch.no_grad()
    def validation_loss(self, batches: list[Batch]) -> float:
        self.engine.eval()
        total = torch.zeros(1, dtype=torch.float64, device=self.device)
        for batch in batches:
            logits = self.engine(batch.input_ids, batch.attention)
            total += self.loss(logits, batch.labels, batch.loss_mask).double()
        self.engine.train()
        dist.all_reduce(total, group=self.dp_group)
        return float(total) / (len(batches) * self.dp_size)

    def _unapplied_loss_scale(self) -> float:
        """fp16 without ZeRO: DeepSpeed 0.19's ``engine.backward`` applies the loss scale only
        for ZeRO optimizers, yet its ZeRO-0 fp16 wrapper (``FP16_UnfusedOptimizer``) divides
        the gradients by it at the step: unscaled, fp16 gradients underflow, clipping never
        acts and AdamW's eps swamps the update (5.21 vs fp32's 5.16 after one step)."""
        scaling = getattr(self.engine.optimizer, "loss_scale_config", None)
        if scaling is None or self.precision is not Precision.fp16 or isinstance(self.engine.optimizer, ZeROOptimizer):
            return 1.0  # DeepSpeed scales it itself
        return float(scaling.cur_scale)

    def _unsharded_grad_norm(self) -> Optional[float]:
        """Without ZeRO DeepSpeed does not report the norm, but every rank holds the whole
        averaged gradient of its parameters after the last backward of the step: sum the
        squares of the tensor-parallel shards over the group, count replicated ones once."""
        if self.zero_stage != 0:
            return None
        params = [p for p in self.engine.module.parameters() if p.grad is not None]
        if not params:
            return None

        def sum_of_squares(group: list[torch.nn.Parameter]) -> torch.Tensor:
            return torch.stack(
                [p.grad.float().square().sum() for p in group] or [torch.zeros((), device=self.device)]
            ).sum()

        sharded = sum_of_squares([p for p in params if getattr(p, "tp_split_dim", None) is not None])
        if self.tp_group is not None:
            dist.all_reduce(sharded, group=self.tp_group)
        replicated = sum_of_squares([p for p in params if getattr(p, "tp_split_dim", None) is None])
        return float((sharded + replicated).sqrt()) / self._unapplied_loss_scale()


class PipelinedStep:
    """DeepSpeed's pipeline schedule runs the micro-batches through the stages."""

    def __init__(self, engine) -> None:  # type: ignore[no-untyped-def]
        self.engine = engine

    def train(self, batches: list[Batch], *, with_grad_norm: bool) -> StepOutput:
        loss = self.engine.train_batch(data_iter=_stage_batches(batches))
        return StepOutput(
            loss=loss.detach().double(), grad_norm=deepspeed_grad_norm(self.engine) if with_grad_norm else None
        )

    def validation_loss(self, batches: list[Batch]) -> float:
        return float(self.engine.eval_batch(data_iter=_stage_batches(batches), num_micro_batches=len(batches)))


def _stage_batches(batches: list[Batch]) -> Iterator[tuple]:
    """What the first stage takes as inputs and the last as loss targets."""
    return iter(
        (stage_inputs(b.input_ids, b.attention.prefix_len, b.attention.doc_ids), (b.labels, b.loss_mask))
        for b in batches
    )
