"""Export: safetensors, and a Hugging Face Llama whose logits and token ids equal ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from pretrain.checkpoint.consolidate import consolidated_state_dict
from pretrain.checkpoint.directory import find_checkpoint
from pretrain.export import ExportConfig, export
from pretrain.hf.export_config import check_exportable
from pretrain.model.config import Activation, ModelConfig, Norm, Position


def test_command_exports_a_model_transformers_reproduces(
    trained_run: Path, tmp_path: Path, run_module, assert_matches_transformers
) -> None:
    output = tmp_path / "export"
    result = run_module("pretrain.export", f"checkpoint={trained_run}", f"output_dir={output}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export"]
    assert_matches_transformers(trained_run, output)
    # The safetensors file holds our weights as they are, and the model config.
    expected = consolidated_state_dict(find_checkpoint(trained_run))
    with safe_open(output / "consolidated.safetensors", framework="pt") as stored:
        assert set(stored.keys()) == set(expected)
        assert all(torch.equal(stored.get_tensor(name), tensor) for name, tensor in expected.items())
        assert json.loads(stored.metadata()["model"])["n_kv_heads"] == 2


def test_untied_biased_multi_query_variant(train_text_model, tmp_path: Path, assert_matches_transformers) -> None:
    overrides = ("model.tie_embeddings=false", "model.bias=true", "model.n_kv_heads=1", "model.d_ff=96")
    run_dir = train_text_model(tmp_path / "run", 2, *overrides)
    export(ExportConfig(checkpoint=str(run_dir), output_dir=str(tmp_path / "export")))
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert (config["tie_word_embeddings"], config["attention_bias"], config["num_key_value_heads"]) == (False, True, 1)
    assert_matches_transformers(run_dir, tmp_path / "export")


@pytest.mark.parametrize(
    "setting, value",
    [("norm", Norm.layernorm), ("activation", Activation.gelu), ("position", Position.learned)],
)
def test_options_without_a_llama_counterpart_are_named(setting: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"model.{setting}=.*hf=false"):
        check_exportable(ModelConfig(vocab_size=100, **{setting: value}))


def test_export_refuses_a_non_empty_output_dir(trained_run: Path, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=true"):
        export(ExportConfig(checkpoint=str(trained_run), output_dir=str(tmp_path)))
