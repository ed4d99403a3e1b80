"""LoRA (pretrain/lora.py): the adapters train exactly as peft's on the same imported
Llama, export to peft's format and as a merged model, and every option acts."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pretrain.hf.peft import peft_name
from pretrain.lora import LoraConfig, LoraTarget, attach_adapters
from tests.pretrain.hf_models import VOCAB, save_tiny_model
from tests.pretrain.test_hf_import import imported, transformers_model

ALL = [t.value for t in LoraTarget]


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("llama"), "llama")


def with_adapters(directory: Path, cfg: LoraConfig, seed: int = 0):  # -> (ours, peft's)
    """Our imported model and transformers' under peft, with the same adapters (ours copied into peft's)."""
    from peft import LoraConfig as PeftConfig, get_peft_model

    from pretrain.hf.peft import peft_module

    ours = imported(directory).train()
    attach_adapters(ours, cfg, seed=seed, group=None)
    peft_cfg = PeftConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                          target_modules=[peft_module(t) for t in cfg.targets])
    theirs = get_peft_model(transformers_model(directory), peft_cfg).train()
    live = dict(theirs.named_parameters())
    with torch.no_grad():
        for name, param in adapters(ours).items():
            live[live_name(name)].copy_(param)
    return ours, theirs


def adapters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: param for name, param in model.named_parameters() if param.requires_grad}


def live_name(name: str) -> str:
    """peft's name of our adapter in a live model (adapter "default")."""
    return peft_name(name).replace(".weight", ".default.weight")


def cross_entropy(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())


@pytest.mark.parametrize(
    "cfg",
    [LoraConfig(rank=4, alpha=16.0, dropout=0.1, targets=[LoraTarget(t) for t in ALL]), LoraConfig(rank=2)],
    ids=["all-targets-dropout", "defaults"],
)
def test_adapters_train_exactly_like_peft(llama: Path, cfg: LoraConfig) -> None:
    """Same imported Llama, same adapters, same batches, torch AdamW: equal losses and adapter
    gradients at every one of 10 steps (dropout too: both draw one mask per adapter, in the
    same order)."""
    ours, theirs = with_adapters(llama, cfg)
    assert len(adapters(ours)) == len(adapters(theirs)) == 2 * len(cfg.targets) * ours.cfg.n_layers
    optimizers = [torch.optim.AdamW(adapters(m).values(), lr=1e-2) for m in (ours, theirs)]
    live = dict(theirs.named_parameters())
    batches = torch.randint(0, VOCAB, (10, 2, 24), generator=torch.Generator().manual_seed(3))
    for step, ids in enumerate(batches):
        torch.manual_seed(step)
        loss = cross_entropy(ours(ids), ids)
        torch.manual_seed(step)
        reference = cross_entropy(theirs(input_ids=ids).logits, ids)
        assert loss.item() == pytest.approx(reference.item(), abs=1e-5), step
        for optimizer, value in zip(optimizers, (loss, reference)):
            optimizer.zero_grad()
            value.backward()
        for name, param in adapters(ours).items():
            torch.testing.assert_close(param.grad, live[live_name(name)].grad, rtol=0, atol=1e-5)
        for optimizer in optimizers:
            optimizer.step()
    assert all(p.grad is None for p in ours.parameters() if not p.requires_grad)  # the base is frozen
