"""Hugging Face checkpoints in and out: every family we import reproduces transformers'
logits and greedy generations, export gives back the very same tensors and config, and
what we cannot express fails with one line naming it. Tiny random models, built offline."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open

from data_pipeline.formats.special_tokens import SpecialTokens
from pretrain.generation.generator import Generator
from pretrain.generation.settings import GenerationSettings
from pretrain.hf.import_config import UnsupportedConfig, model_config_from_hf
from pretrain.hf.weights import load_hf_weights
from pretrain.hf.writer import write_hf_model
from pretrain.model.config import ModelConfig, RopeScaling
from pretrain.model.gpt import GPT
from tests.pretrain.support.hf_models import (
    FAMILIES,
    VOCAB,
    init_from_overrides,
    launch_init_from_runs,
    save_tiny_model,
)

SPECIAL = SpecialTokens.synthetic(VOCAB)
# Config fields an export must carry over unchanged (the token ids come from our tokenizer).
ARCHITECTURE_FIELDS = (
    "architectures",
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_parameters",
    "tie_word_embeddings",
    "attention_bias",
    "mlp_bias",
    "sliding_window",
    "use_sliding_window",
)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {family: save_tiny_model(tmp_path_factory.mktemp(family), family) for family in FAMILIES}


def imported(directory: Path) -> GPT:
    cfg = model_config_from_hf(directory)
    model = GPT(cfg)
    load_hf_weights(directory, cfg, dict(model.named_parameters()))
    return model.eval()


def transformers_model(directory: Path):  # -> transformers.PreTrainedModel
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()


def greedy_transformers(model, prompts: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy decoding with transformers' forward alone (its generate() is slow on a busy CPU)."""
    tokens = prompts
    with torch.no_grad():
        for _ in range(new_tokens):
            tokens = torch.cat([tokens, model(tokens).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return tokens[:, prompts.shape[1] :]


@pytest.mark.parametrize("family", FAMILIES)
def test_imported_model_reproduces_transformers(family: str, checkpoints: dict[str, Path]) -> None:
    ours, theirs = imported(checkpoints[family]), transformers_model(checkpoints[family])
    ids = torch.randint(0, VOCAB, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(ids).logits, rtol=0, atol=1e-4)
    prompts = ids[:, :8]
    settings = GenerationSettings(max_new_tokens=16, use_cache=True)
    # The generator needs ids only: a tokenizer stand-in whose EOS lies past the model's
    # vocabulary, so that all 16 tokens are generated.
    tokenizer = SimpleNamespace(
        special=replace(SPECIAL, vocab_size=VOCAB + 1, eos_id=VOCAB), vocab_size=VOCAB, decode=str
    )
    completions = Generator(ours, tokenizer, settings).complete_ids(prompts.tolist())
    assert completions == greedy_transformers(theirs, prompts, 16).tolist()


def test_llama3_rope_scaling_takes_effect(checkpoints: dict[str, Path]) -> None:
    ours = imported(checkpoints["llama3"])
    unscaled = GPT(replace(ours.cfg, rope_scaling=RopeScaling()))
    unscaled.load_state_dict(ours.state_dict())
    ids = torch.randint(0, VOCAB, (1, 40))
    with torch.no_grad():
        assert (ours(ids) - unscaled.eval()(ids)).abs().max() > 1e-2


@pytest.mark.parametrize("family", FAMILIES)
def test_export_gives_back_the_imported_tensors_and_config(
    family: str, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    source = checkpoints[family]
    model = imported(source)
    write_hf_model(tmp_path, {name: p.detach() for name, p in model.state_dict().items()}, model.cfg, SPECIAL)
    with (
        safe_open(source / "model.safetensors", framework="pt") as original,
        safe_open(tmp_path / "model.safetensors", framework="pt") as exported,
    ):
        expected = set(original.keys()) - ({"lm_head.weight"} if model.cfg.tie_embeddings else set())
        assert set(exported.keys()) == expected
        for name in expected:
            assert torch.equal(exported.get_tensor(name), original.get_tensor(name)), name
    before, after = (json.loads((d / "config.json").read_text()) for d in (source, tmp_path))
    for field in ARCHITECTURE_FIELDS:
        assert after.get(field) == before.get(field), field


def write_config(directory: Path, **changes: object) -> Path:
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **changes}))
    return directory


def copy_checkpoint(source: Path, target: Path) -> Path:
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"model_type": "gemma"}, r"model_type='gemma' is not supported; supported: llama .*mistral, qwen2"),
        ({"num_experts": 8}, r"num_experts=8 is not supported"),
        ({"hidden_act": "gelu"}, r"hidden_act='gelu' is not supported; supported: silu"),
        ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, r"rope_scaling.rope_type='yarn' is not supported"),
        ({"head_dim": 32}, r"head_dim=32 is not supported"),
    ],
)
def test_unsupported_configs_are_one_clear_error(
    changes: dict, message: str, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    directory = write_config(copy_checkpoint(checkpoints["llama"], tmp_path / "model"), **changes)
    with pytest.raises(UnsupportedConfig, match=message) as error:
        model_config_from_hf(directory)
    assert "\n" not in str(error.value)


def test_the_older_rope_theta_and_rope_scaling_fields_import_alike(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """Configs saved before transformers 5 (most on the Hub) spell rope settings this way."""
    config = json.loads((checkpoints["llama3"] / "config.json").read_text())
    rope = config.pop("rope_parameters")
    older = {**config, "rope_theta": rope.pop("rope_theta"), "rope_scaling": {**rope, "type": rope.pop("rope_type")}}
    directory = tmp_path / "older"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(older))
    assert model_config_from_hf(directory) == model_config_from_hf(checkpoints["llama3"])


def test_qwen2_sliding_window_is_refused(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    directory = write_config(copy_checkpoint(checkpoints["qwen2"], tmp_path / "model"), use_sliding_window=True)
    with pytest.raises(UnsupportedConfig, match="use_sliding_window=True"):
        model_config_from_hf(directory)


def test_mistral_sequences_beyond_the_sliding_window_are_refused(checkpoints: dict[str, Path]) -> None:
    from pretrain.config import load_train_config
    from pretrain.hf.init_from import with_imported_model

    within = with_imported_model(load_train_config([f"init_from={checkpoints['mistral']}", "train.seq_len=64"]))
    assert (within.model.sliding_window, within.model.hf_architecture) == (64, "MistralForCausalLM")
    with pytest.raises(ValueError, match=r"train.seq_len=65 exceeds the checkpoint's sliding_window=64"):
        with_imported_model(load_train_config([f"init_from={checkpoints['mistral']}", "train.seq_len=65"]))
    with pytest.raises(ValueError, match="model.sliding_window=64"):
        imported(checkpoints["mistral"])(torch.zeros(1, 65, dtype=torch.long))


def test_shape_mismatch_names_the_tensor(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    directory = write_config(copy_checkpoint(checkpoints["llama"], tmp_path / "model"), intermediate_size=128)
    with pytest.raises(
        ValueError, match=r"tensor model\.layers\.0\.mlp\.up_proj\.weight has shape \[96, 64\].*\[128, 64\]"
    ):
        imported(directory)


def test_sharded_checkpoint_loads_like_a_single_file(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    sharded = save_tiny_model(tmp_path, "qwen2", max_shard_size="40KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    ids = torch.randint(0, VOCAB, (1, 16))
    with torch.no_grad():
        assert torch.equal(imported(sharded)(ids), imported(checkpoints["qwen2"])(ids))


# -- init_from in training: every layout starts from the same model -------------------------
PARALLEL_RUNS = {
    "tp2": ("qwen2", ["parallel=tp2"]),
    "pp2": ("tied-llama", ["parallel=pp2"]),
    "pp2xtp2": ("qwen2", ["parallel=3d"]),
    "zero0": ("llama3", ["parallel=single"]),
    "zero2": ("llama3", ["parallel=zero2"]),
    "zero3": ("llama3", ["parallel=zero3"]),
}


def training(corpus: Path, checkpoint: Path, run_dir: Path, *overrides: str) -> list[str]:
    return init_from_overrides(corpus, checkpoint, run_dir, 8, "train.max_steps=1", *overrides)


@pytest.fixture(scope="module")
def process():  # -> ProcessInfo
    from pretrain.parallel.process_groups import init_distributed

    return init_distributed()


@pytest.fixture(scope="module")
def single_process_losses(
    checkpoints: dict[str, Path], token_corpus: Path, tmp_path_factory, process
) -> dict[str, float]:
    from pretrain.config import load_train_config
    from pretrain.training.trainer import Trainer

    losses = {}
    for family in {family for family, _ in PARALLEL_RUNS.values()}:
        run_dir = tmp_path_factory.mktemp(f"single-{family}")
        losses[family] = Trainer(
            load_train_config(training(token_corpus, checkpoints[family], run_dir)), process
        ).fit()[0]["loss"]
    return losses


@pytest.fixture(scope="module")
def parallel_runs(checkpoints: dict[str, Path], token_corpus: Path, tmp_path_factory) -> dict[str, dict]:
    """All layouts in one four-process torchrun launch."""
    workdir = tmp_path_factory.mktemp("hf-parallel")
    runs = {
        name: training(token_corpus, checkpoints[family], workdir / name, *overrides)
        for name, (family, overrides) in PARALLEL_RUNS.items()
    }
    return launch_init_from_runs(runs, workdir, processes=4)


@pytest.mark.parametrize("name", PARALLEL_RUNS)
def test_every_layout_starts_from_the_same_model_reading_only_its_slices(
    name: str, parallel_runs: dict, single_process_losses: dict, checkpoints: dict[str, Path]
) -> None:
    family, _ = PARALLEL_RUNS[name]
    run = {field: values[name] for field, values in parallel_runs.items()}
    assert run["loss"] == pytest.approx(single_process_losses[family], rel=1e-5)
    with torch.device("meta"):
        whole_model = sum(param.numel() for param in GPT(model_config_from_hf(checkpoints[family])).parameters())
    for rank in run["reads"]:
        # Exactly this rank's parameters and slices were read, nothing more.
        assert (rank["tensors"], rank["elements"]) == (rank["local_tensors"], rank["local_elements"])
        if name.startswith(("tp", "pp", "zero3")):
            assert rank["elements"] < 0.75 * whole_model, rank


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"sliding_window": 0}, "model.sliding_window must be positive"),
        (
            {"rope_scaling": RopeScaling(factor=8.0, low_freq_factor=4.0, high_freq_factor=1.0)},
            "model.rope_scaling needs",
        ),
    ],
)
def test_new_model_options_are_checked(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig(vocab_size=VOCAB, **changes).validate()
