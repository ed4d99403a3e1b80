"""LoRA (pretrain/model/lora.py): the adapters train exactly as peft's on the same imported
Llama, export to peft's format and as a merged model, and every option acts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pretrain.hf.peft import peft_name
from pretrain.model.lora import LoraConfig, LoraTarget, attach_adapters
from tests.pretrain.hf.test_hf_import import imported, transformers_model
from tests.pretrain.support.hf_models import VOCAB, save_tiny_model

ALL = [t.value for t in LoraTarget]


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("llama"), "llama", num_hidden_layers=2)


def with_adapters(directory: Path, cfg: LoraConfig, seed: int = 0):  # -> (ours, peft's)
    """Our imported model and transformers' under peft, with the same adapters (ours copied into peft's)."""
    from peft import LoraConfig as PeftConfig
    from peft import get_peft_model

    from pretrain.hf.peft import peft_module

    ours = imported(directory).train()
    attach_adapters(ours, cfg, seed=seed, group=None)
    peft_cfg = PeftConfig(
        r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=[peft_module(t) for t in cfg.targets]
    )
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


def test_unmerged_adapters_act_under_no_grad(llama: Path) -> None:
    """Evaluation and generation run without autograd (the fused q|k|v and gate|up take
    another path there): the adapters still add their update, as peft's do in eval mode."""
    ours, theirs = with_adapters(llama, LoraConfig(rank=2, targets=[LoraTarget(t) for t in ALL]))
    live = dict(theirs.named_parameters())
    with torch.no_grad():
        for name, param in adapters(ours).items():  # B is zero at the start: give it values
            param.normal_(generator=torch.Generator().manual_seed(len(name)))
            live[live_name(name)].copy_(param)
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        base = imported(llama).eval()(ids)
        logits, reference = ours.eval()(ids), theirs.eval()(input_ids=ids).logits
    assert (logits - base).abs().max() > 1e-2  # the adapters changed the output
    torch.testing.assert_close(logits, reference, rtol=0, atol=1e-4)


# -- every layout trains the adapters like one process; checkpoints reshard ------------------
LORA = ["lora.rank=4", "lora.alpha=16", "lora.targets=[q,k,v,o,gate,up,down]"]
ADAMW = ["optim=adamw", "optim.lr=1e-2", "optim.warmup_steps=0", "optim.schedule=constant"]
STEPS, SAVED_AT = 6, 3
LAYOUTS = {
    "tp2": ["parallel=tp2", f"train.save_every={SAVED_AT}"],
    # The row-parallel adapters' part joins the reduce-scatter of the sequence shards.
    "tp2-sp": ["parallel=tp2", "parallel.sequence_parallel=true"],
    "pp2": ["parallel=pp2"],
    # ZeRO-1/2 partition the optimizer state (and gradients) of the adapters alone.
    "zero1": ["parallel=zero1"],
    "zero2": ["parallel=zero2"],
    "zero3": ["parallel=zero3"],
}


def lora_run(corpus: Path, checkpoint: Path, run_dir: Path, *more: str) -> list[str]:
    from tests.pretrain.support.hf_models import init_from_overrides

    return init_from_overrides(corpus, checkpoint, run_dir, 8, *LORA, *ADAMW, f"train.max_steps={STEPS}", *more)


@pytest.fixture(scope="module")
def tied_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tied-llama"), "tied-llama", num_hidden_layers=2)


def train(overrides: list[str]):  # -> (losses, Trainer)
    from pretrain.config import load_train_config
    from pretrain.parallel.process_groups import init_distributed
    from pretrain.training.trainer import Trainer

    trainer = Trainer(load_train_config(overrides), init_distributed())
    return [record["loss"] for record in trainer.fit()], trainer


@pytest.fixture(scope="module")
def single_trainer(
    token_corpus: Path, tied_llama: Path, tmp_path_factory: pytest.TempPathFactory
):  # -> (losses, Trainer)
    return train(lora_run(token_corpus, tied_llama, tmp_path_factory.mktemp("single")))


@pytest.fixture(scope="module")
def single(single_trainer) -> tuple[list[float], Path]:
    losses, trainer = single_trainer
    return losses, trainer.run_dir


def test_only_the_adapters_train_and_hold_optimizer_state(single_trainer) -> None:
    _, trainer = single_trainer
    params = dict(trainer.engine.module.named_parameters())
    trained = {name for name, param in params.items() if param.requires_grad}
    assert trained and all(".lora." in name for name in trained)
    assert all(param.grad is None for name, param in params.items() if name not in trained)
    held = {id(param) for param in trainer.optimizer.state}
    assert held == {id(params[name]) for name in trained}
    moments = sum(
        value.numel() for state in trainer.optimizer.state.values() for key, value in state.items() if key != "step"
    )
    assert moments == 2 * trainer.trained_parameters == 2 * sum(params[name].numel() for name in trained)


def test_bf16_trains_the_adapters_alone_and_tracks_fp32(
    single: tuple, token_corpus: Path, tied_llama: Path, tmp_path: Path
) -> None:
    """train.precision=bf16 (DeepSpeed's bf16 optimizer over the adapters alone): the base
    stays the imported one (rounded to bf16), the adapters move, the losses track fp32's."""
    fp32_losses, _ = single
    losses, trainer = train(lora_run(token_corpus, tied_llama, tmp_path, "train.precision=bf16", "train.max_steps=3"))
    assert losses == pytest.approx(fp32_losses[:3], rel=2e-2)
    params = dict(trainer.engine.module.named_parameters())
    base = dict(imported(tied_llama).named_parameters())  # fp32; the bf16 module holds it rounded
    assert all(torch.equal(params[name], base[name].to(params[name].dtype)) for name in base)
    assert all(params[name].abs().max() > 0 for name in params if name.endswith(".lora.b"))


@pytest.fixture(scope="module")
def two_processes(
    token_corpus: Path, tied_llama: Path, tmp_path_factory: pytest.TempPathFactory, launch_runs
) -> tuple[dict, Path]:
    workdir = tmp_path_factory.mktemp("lora-parallel")
    runs = {name: lora_run(token_corpus, tied_llama, workdir / name, *more) for name, more in LAYOUTS.items()}
    return launch_runs(2, runs, workdir), workdir


def saved_adapters(run_dir: Path) -> dict[str, torch.Tensor]:
    from pretrain.checkpoint.consolidate import consolidated_state_dict
    from pretrain.checkpoint.directory import find_checkpoint

    return consolidated_state_dict(find_checkpoint(run_dir))


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_layouts_train_the_adapters_like_one_process(
    name: str, two_processes: tuple[dict, Path], single: tuple
) -> None:
    """Tied Llama (the pipeline's two embedding copies stay frozen), every target: the
    column-parallel and the row-parallel split of the adapters."""
    report, workdir = two_processes
    losses, run_dir = single
    assert report["losses"][name] == pytest.approx(losses, abs=1e-5)
    assert report["state_error"][name] == 0.0  # the checkpoint holds the live adapters and moments
    ours, reference = saved_adapters(workdir / name), saved_adapters(run_dir)
    assert sorted(ours) == sorted(reference) and all(".lora." in key for key in ours)  # adapters only
    for key in reference:
        # Adam divides by the gradients' running scale, which magnifies the rounding of
        # another reduction order (a few 1e-5 after 6 steps; the losses agree to 1e-5).
        torch.testing.assert_close(ours[key], reference[key], rtol=0, atol=1e-4)


def test_tp2_checkpoint_resumes_in_one_process(
    two_processes: tuple[dict, Path], single: tuple, token_corpus: Path, tied_llama: Path, tmp_path: Path
) -> None:
    from pretrain.checkpoint.directory import tag_for

    _, workdir = two_processes
    losses, run_dir = single
    saved = workdir / "tp2" / "checkpoints" / tag_for(SAVED_AT)
    resumed, _ = train(lora_run(token_corpus, tied_llama, tmp_path / "resumed", f"resume={saved}"))
    assert resumed == pytest.approx(losses[SAVED_AT:], abs=1e-5)


# -- export: merged into the model, or apart in peft's format ---------------------------------
TEXT_LORA = ["lora.rank=4", "lora.alpha=16", "lora.targets=[q,k,v,o,gate,up,down]"]


@pytest.fixture(scope="module")
def lora_text_run(train_text_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA run on a seeded (not imported) base, with a real tokenizer: exportable."""
    return train_text_model(tmp_path_factory.mktemp("lora-text"), 6, *TEXT_LORA)


def peft_logits(base_dir: Path, adapter_dir: Path, ids: torch.Tensor) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, local_files_only=True)
    with torch.no_grad():
        return PeftModel.from_pretrained(base, adapter_dir).eval()(input_ids=ids).logits


def test_merged_export_is_what_transformers_runs(
    lora_text_run: Path, assert_matches_transformers, tmp_path: Path
) -> None:
    from pretrain.export import ExportConfig, export

    export(ExportConfig(checkpoint=str(lora_text_run), output_dir=str(tmp_path)))
    assert_matches_transformers(lora_text_run, tmp_path)  # logits <= 1e-4 of our merged model
    assert not (tmp_path / "adapter").exists()


def test_peft_adapter_export_loads_onto_the_exported_base(lora_text_run: Path, tmp_path: Path) -> None:
    from pretrain.checkpoint.consolidate import load_trained_model
    from pretrain.export import ExportConfig, LoraExport, export

    export(ExportConfig(checkpoint=str(lora_text_run), output_dir=str(tmp_path), lora=LoraExport.adapter))
    ours, _, _ = load_trained_model(lora_text_run)
    ids = torch.randint(0, 400, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ours(ids)
    assert (peft_logits(tmp_path, tmp_path / "adapter", ids) - expected).abs().max() <= 1e-4
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32, local_files_only=True)
    with torch.no_grad():
        assert (base(input_ids=ids).logits - expected).abs().max() > 1e-3  # the adapters learned something


def test_an_imported_base_is_read_again_for_the_merged_model(single: tuple, tied_llama: Path, tmp_path: Path) -> None:
    """The checkpoint of an init_from run holds adapters only; the model is init_from's
    weights with them merged, as peft runs the same adapters on transformers' model."""
    from safetensors.torch import save_file

    from pretrain.checkpoint.consolidate import load_trained_model
    from pretrain.hf.peft import ADAPTER_CONFIG, ADAPTER_WEIGHTS, adapter_config, peft_name

    _, run_dir = single
    ours, _, metadata = load_trained_model(run_dir)
    adapters = saved_adapters(run_dir)
    save_file({peft_name(name): value for name, value in adapters.items()}, str(tmp_path / ADAPTER_WEIGHTS))
    lora = LoraConfig(rank=4, alpha=16.0, targets=[LoraTarget(t) for t in ALL])
    (tmp_path / ADAPTER_CONFIG).write_text(json.dumps(adapter_config(lora, str(tied_llama))))
    ids = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (peft_logits(tied_llama, tmp_path, ids) - ours(ids)).abs().max() <= 1e-4
    assert metadata["lora_base"]["init_from"] == str(tied_llama.resolve())


def test_adapter_export_needs_a_lora_checkpoint(trained_run: Path, tmp_path: Path) -> None:
    from pretrain.export import ExportConfig, LoraExport, export

    with pytest.raises(ValueError, match=r"lora=adapter: .* was not trained with LoRA \(lora.rank=0\)"):
        export(ExportConfig(checkpoint=str(trained_run), output_dir=str(tmp_path), lora=LoraExport.adapter))


def test_the_planner_counts_the_adapters_alone(single_trainer) -> None:
    """pretrain.plan and the start-up memory check predict a LoRA run's gradients and
    optimizer state from the adapters (fp32, ZeRO 0: 4 + 8 bytes per adapter value)."""
    from dataclasses import replace

    from pretrain.config import Precision
    from pretrain.parallel.layout import ParallelLayout
    from pretrain.planning.memory import lora_elements_per_layer, rank_memory
    from pretrain.planning.shapes import StageParameters

    _, trainer = single_trainer
    cfg = replace(trainer.cfg, model=trainer.model_cfg)
    assert lora_elements_per_layer(cfg, tp=1) * cfg.model.n_layers == trainer.trained_parameters
    stage = StageParameters(
        sizes=(10**6,), group_sizes=(10**6,), layers=cfg.model.n_layers, largest_block=10**6, first=True, last=True
    )
    memory = rank_memory(cfg, ParallelLayout(tp=1, pp=1, dp=1), Precision.fp32, [stage], 0)
    assert (memory.gradients, memory.optimizer) == (4 * trainer.trained_parameters, 8 * trainer.trained_parameters + 4)


# -- options and errors ---------------------------------------------------------------------
def test_row_parallel_dropout_cuts_the_one_process_mask() -> None:
    from pretrain.model.lora import FeatureShardDropout

    x = torch.randn(2, 5, 8)
    torch.manual_seed(0)
    whole = torch.nn.Dropout(0.3)(x)
    for rank in range(2):
        torch.manual_seed(0)
        torch.testing.assert_close(FeatureShardDropout(0.3, rank, 2)(x.chunk(2, -1)[rank]), whole.chunk(2, -1)[rank])


def test_the_base_is_named_by_seed_and_fingerprint(tied_llama: Path, tmp_path: Path) -> None:
    import shutil

    from pretrain.model.lora import base_identity, check_same_base

    moved = shutil.copytree(tied_llama, tmp_path / "moved")
    other = save_tiny_model(tmp_path / "other", "tied-llama", seed=1, num_hidden_layers=2)  # same shapes, other values
    trained = base_identity(str(tied_llama), seed=0)
    check_same_base(trained, base_identity(str(moved), seed=0), tmp_path)  # a moved base is the same base
    for changed in (
        base_identity(str(other), seed=0),
        base_identity(str(tied_llama), seed=1),
        base_identity(None, seed=0),
    ):
        with pytest.raises(ValueError, match="its LoRA adapters were trained on the base"):
            check_same_base(trained, changed, tmp_path)
    with pytest.raises(ValueError, match="was not written by a LoRA run"):  # resume=force onto a full-model checkpoint
        check_same_base(None, trained, tmp_path)


def test_a_run_base_is_named_by_its_newest_checkpoint(tmp_path: Path) -> None:
    """init_from=RUN (a run of ours): the base is that run's newest complete checkpoint, and
    another step of it is another base."""
    from pretrain.model.lora import base_identity, check_same_base

    def complete(step: int) -> None:
        path = tmp_path / "run" / "checkpoints" / f"step-{step:08d}"
        path.mkdir(parents=True)
        (path / "complete.json").write_text(json.dumps({"step": step}))

    complete(2)
    trained = base_identity(str(tmp_path / "run"), seed=0)
    assert trained["init_from"].endswith("step-00000002") and trained["fingerprint"] is not None
    check_same_base(trained, base_identity(str(tmp_path / "run" / "checkpoints"), seed=0), tmp_path)
    complete(4)  # the base run went on: its weights are no longer the adapters' base
    with pytest.raises(ValueError, match="its LoRA adapters were trained on the base"):
        check_same_base(trained, base_identity(str(tmp_path / "run"), seed=0), tmp_path)
