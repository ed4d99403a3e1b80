"""The chunked cross-entropy equals the whole-vocabulary fp32 one (today's dense loss) in
value and gradient, dense and vocabulary-parallel, and never makes an fp32 copy of the
logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import pretrain.model.loss
from pretrain.model.loss import chunked_token_losses, token_losses

BATCH, SEQ, VOCAB = 3, 5, 96


def example(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits, labels and an upstream gradient (the per-token weights of a masked mean)."""
    generator = torch.Generator().manual_seed(0)
    logits = (4 * torch.randn(BATCH, SEQ, VOCAB, generator=generator)).to(dtype)
    labels = torch.randint(0, VOCAB, (BATCH, SEQ), generator=generator)
    return logits, labels, torch.rand(BATCH, SEQ, generator=generator)


def reference(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and gradient of the whole-vocabulary fp32 cross-entropy."""
    logits = logits.detach().requires_grad_()
    loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)
    (loss * weights).sum().backward()
    return loss.detach(), logits.grad


def chunked(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, **kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = logits.detach().requires_grad_()
    loss = chunked_token_losses(logits, labels, **kwargs)
    (loss * weights).sum().backward()
    return loss.detach(), logits.grad


@pytest.mark.parametrize("chunk", [7, 32, 96, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dense_loss_and_gradient_equal_the_whole_vocabulary_loss(chunk: int, dtype: torch.dtype) -> None:
    logits, labels, weights = example(dtype)
    loss, grad = chunked(logits, labels, weights, chunk=chunk)
    expected_loss, expected_grad = reference(logits, labels, weights)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=1e-6)
    tolerance = 1e-6 if dtype is torch.float32 else 1e-2  # the gradient is stored in the logits' dtype
    torch.testing.assert_close(grad, expected_grad, rtol=tolerance, atol=tolerance)


def test_the_model_loss_is_torch_kernel_for_fp32_and_chunked_otherwise(monkeypatch) -> None:
    """fp32 logits: torch's cross-entropy (no memory to save, faster), bit for bit; bf16 ones:
    the chunked loss, which makes no fp32 copy of the whole vocabulary."""
    calls = []

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(args[0].dtype)
        return chunked_token_losses(*args, **kwargs)

    monkeypatch.setattr(pretrain.model.loss, "chunked_token_losses", counted)
    logits, labels, weights = example(torch.float32)
    assert torch.equal(token_losses(logits, labels), reference(logits, labels, weights)[0])
    bf16 = logits.bfloat16()
    torch.testing.assert_close(token_losses(bf16, labels), reference(bf16, labels, weights)[0], rtol=1e-6, atol=1e-6)
    assert calls == [torch.bfloat16]


class LargestFloat32(TorchDispatchMode):
    """Records the largest fp32 tensor any operation produces."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32:
                self.largest = max(self.largest, tensor.numel())
        return out


def test_fp32_memory_is_tokens_times_chunk_not_tokens_times_vocab() -> None:
    logits, labels, weights = example(torch.bfloat16)
    with LargestFloat32() as chunked_run:
        chunked(logits, labels, weights, chunk=16)
    with LargestFloat32() as whole_run:
        reference(logits, labels, weights)
    tokens = BATCH * SEQ
    assert chunked_run.largest == tokens * 16
    assert whole_run.largest == tokens * VOCAB  # the check sees today's fp32 copy


PARALLEL_CHUNKS = (5, 48)  # one that cuts a shard unevenly, one as wide as a shard


def vocab_parallel_worker(rank: int, world: int, store_path: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=world)
    logits, labels, weights = example(torch.float32)
    shard = logits.chunk(world, dim=-1)[rank]  # rank r holds a contiguous block of the vocabulary
    for chunk in PARALLEL_CHUNKS:
        loss, grad = chunked(shard, labels, weights, group=dist.group.WORLD, chunk=chunk)
        torch.save({"loss": loss, "grad": grad}, Path(out_dir) / f"chunk{chunk}-rank{rank}.pt")
    dist.destroy_process_group()


def test_vocab_parallel_loss_and_gradient_equal_the_whole_vocabulary_loss(tmp_path: Path) -> None:
    world = 2
    mp.spawn(vocab_parallel_worker, args=(world, str(tmp_path / "store"), str(tmp_path)), nprocs=world)
    expected_loss, expected_grad = reference(*example(torch.float32))
    for chunk in PARALLEL_CHUNKS:
        for rank, expected_shard in enumerate(expected_grad.chunk(world, dim=-1)):
            result = torch.load(tmp_path / f"chunk{chunk}-rank{rank}.pt")
            torch.testing.assert_close(result["loss"], expected_loss, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(result["grad"], expected_shard, rtol=1e-6, atol=1e-6)
