"""Continued pretraining with the checkpoint's own tokenizer: a Hugging Face tokenizer
directory tokenizes a corpus to the ids ``tokenizers`` gives, a run starts from the
checkpoint on those shards (CLM; MLM and span refuse), resumes from its own checkpoints
rather than the import, and exports the imported architecture with that tokenizer."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data_pipeline.tokenize import TokenizeConfig, tokenize_corpus
from data_pipeline.tokenize_shard import TRAIN
from pretrain.config import load_train_config
from pretrain.consolidate import load_trained_model
from pretrain.data.shards import TokenShard, find_shards
from pretrain.distributed import init_distributed
from pretrain.export import ExportConfig, export
from pretrain.model import GPT
from pretrain.trainer import Trainer
from tests.pretrain.hf_models import init_from_overrides, save_tiny_model

WORDS = "river stone law court patient dose code loop merge tensor appeal clause".split()
EOS, BOS = "<|endoftext|>", "<s>"


def domain_texts(count: int) -> list[str]:
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(20, 60)))) + "." for _ in range(count)]


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE tokenizer (~300 ids) as transformers saves one, built with tokenizers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[EOS, BOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(domain_texts(200), trainer)
    directory = tmp_path_factory.mktemp("hf_tokenizer")
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": EOS, "add_prefix_space": False}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("domain_corpus")
    with open(directory / "docs.jsonl", "w") as stream:
        for index, text in enumerate(domain_texts(240)):
            stream.write(json.dumps({"id": f"doc-{index}", "text": text}) + "\n")
    return directory


@pytest.fixture(scope="module")
def shards(corpus: Path, hf_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("domain_tokens")
    config = TokenizeConfig(input=str(corpus), tokenizer=str(hf_tokenizer), output_dir=str(output), workers=1,
                            val_fraction=0.0, progress=False)
    assert not tokenize_corpus(config).failed
    return output


def test_hf_tokenizer_gives_the_ids_of_tokenizers_itself(shards: Path, corpus: Path, hf_tokenizer: Path) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(hf_tokenizer / "tokenizer.json"))
    eos = tokenizer.token_to_id(EOS)
    texts = [json.loads(line)["text"] for line in (corpus / "docs.jsonl").read_text().splitlines()]
    expected = np.concatenate([tokenizer.encode(text, add_special_tokens=False).ids + [eos] for text in texts])
    stored = np.concatenate([np.asarray(TokenShard(prefix).tokens) for prefix in find_shards(shards, TRAIN)])
    assert np.array_equal(stored, expected)
    meta = json.loads((shards / "tokenizer_meta.json").read_text())
    assert (meta["eos_id"], meta["bos_id"], meta["pad_id"], meta["mask_id"]) == (eos, tokenizer.token_to_id(BOS), eos, None)


def run_overrides(shards: Path, checkpoint: Path, run_dir: Path, *more: str) -> list[str]:
    return init_from_overrides(shards, checkpoint, run_dir, 4, "optim.lr=1e-4", "optim.warmup_steps=4", *more)


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Qwen2 whose 320-row embedding covers the tokenizer's 300 ids (as real ones do)."""
    return save_tiny_model(tmp_path_factory.mktemp("qwen2_320"), "qwen2", vocab_size=320, num_hidden_layers=2)


@pytest.fixture(scope="module")
def domain_run(shards: Path, hf_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    run_dir = tmp_path_factory.mktemp("domain_run")
    records = Trainer(load_train_config(run_overrides(shards, hf_model, run_dir, "train.max_steps=2")), init_distributed()).fit()
    return run_dir, records


def test_a_run_starts_from_the_checkpoint_with_a_fresh_warm_up(domain_run: tuple[Path, list[dict]], hf_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    run_dir, records = domain_run
    assert [r["step"] for r in records] == [1, 2] and records[0]["lr"] < 1e-4  # in warm-up
    trained, _, _ = load_trained_model(run_dir)
    original = AutoModelForCausalLM.from_pretrained(hf_model, dtype=torch.float32).eval()
    random_start = GPT(trained.cfg, seed=1234).eval()  # where the run would start without init_from
    ids = torch.randint(0, 300, (1, 24))
    with torch.no_grad():
        moved = (trained(ids) - original(ids).logits).abs().max()
        random_gap = (random_start(ids) - original(ids).logits).abs().max()
    assert 0 < moved < random_gap / 10  # two small steps away from the checkpoint


def test_a_run_with_checkpoints_resumes_and_says_init_from_was_ignored(
    domain_run: tuple[Path, list[dict]], shards: Path, hf_model: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir, _ = domain_run
    records = Trainer(load_train_config(run_overrides(shards, hf_model, run_dir, "train.max_steps=3")), init_distributed()).fit()
    assert [r["step"] for r in records] == [3]
    assert f"init_from={hf_model} was ignored: resuming from this run's checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("objective, message", [("mlm", "needs a mask token"), ("span", "a Hugging Face tokenizer has none")])
def test_mlm_and_span_refuse_a_tokenizer_without_mask_or_sentinels(
    objective: str, message: str, shards: Path, hf_model: Path, tmp_path: Path
) -> None:
    cfg = load_train_config(run_overrides(shards, hf_model, tmp_path, f"objective={objective}", "train.max_steps=1"))
    with pytest.raises(ValueError, match=message):
        Trainer(cfg, init_distributed())


def test_export_writes_the_imported_architecture_and_tokenizer(
    domain_run: tuple[Path, list[dict]], hf_tokenizer: Path, tmp_path: Path
) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, _ = domain_run
    output = export(ExportConfig(checkpoint=str(run_dir), output_dir=str(tmp_path / "export")))
    config = json.loads((output / "config.json").read_text())
    assert (config["architectures"], config["vocab_size"], config["use_sliding_window"]) == (["Qwen2ForCausalLM"], 320, False)
    ours, _, _ = load_trained_model(run_dir)
    theirs = AutoModelForCausalLM.from_pretrained(output, dtype=torch.float32).eval()
    ids = torch.randint(0, 300, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, ours(ids), rtol=0, atol=1e-4)
    text = "the court merge tensor appeal."
    expected = Tokenizer.from_file(str(hf_tokenizer / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    assert AutoTokenizer.from_pretrained(output).encode(text, add_special_tokens=False) == expected
