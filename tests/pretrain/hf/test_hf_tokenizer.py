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

from data_pipeline.formats.token_shards import TokenShard, find_shards
from data_pipeline.tokenize.cli import tokenize_corpus
from data_pipeline.tokenize.config import TokenizeConfig
from data_pipeline.tokenize.output_dir import TRAIN
from pretrain.checkpoint.consolidate import load_trained_model
from pretrain.config import load_train_config
from pretrain.export import ExportConfig, export
from pretrain.model.gpt import GPT
from pretrain.parallel.process_groups import init_distributed
from pretrain.training.trainer import Trainer
from tests.pretrain.support.hf_models import init_from_overrides, launch_init_from_runs, save_tiny_model

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
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=[EOS, BOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(domain_texts(200), trainer)
    directory = tmp_path_factory.mktemp("hf_tokenizer")
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "add_prefix_space": False,
    }
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
    config = TokenizeConfig(
        input=str(corpus),
        tokenizer=str(hf_tokenizer),
        output_dir=str(output),
        workers=1,
        val_fraction=0.0,
        progress=False,
    )
    assert tokenize_corpus(config).documents[TRAIN] == 240
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
    assert (meta["eos_id"], meta["bos_id"], meta["pad_id"], meta["mask_id"]) == (
        eos,
        tokenizer.token_to_id(BOS),
        eos,
        None,
    )


def run_overrides(shards: Path, checkpoint: Path, run_dir: Path, *more: str) -> list[str]:
    return init_from_overrides(shards, checkpoint, run_dir, 4, "optim.lr=1e-4", "optim.warmup_steps=4", *more)


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Qwen2 whose 320-row embedding covers the tokenizer's 300 ids (as real ones do)."""
    return save_tiny_model(tmp_path_factory.mktemp("qwen2_320"), "qwen2", vocab_size=320, num_hidden_layers=2)


@pytest.fixture(scope="module")
def domain_run(shards: Path, hf_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    run_dir = tmp_path_factory.mktemp("domain_run")
    records = Trainer(
        load_train_config(run_overrides(shards, hf_model, run_dir, "train.max_steps=2")), init_distributed()
    ).fit()
    return run_dir, records


def test_a_run_starts_from_the_checkpoint_with_a_fresh_warm_up(
    domain_run: tuple[Path, list[dict]], hf_model: Path
) -> None:
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
    records = Trainer(
        load_train_config(run_overrides(shards, hf_model, run_dir, "train.max_steps=3")), init_distributed()
    ).fit()
    assert [r["step"] for r in records] == [3]
    assert f"init_from={hf_model} was ignored: resuming from this run's checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(
    "objective, message", [("mlm", "needs a mask token"), ("span", "a Hugging Face tokenizer has none")]
)
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
    assert (config["architectures"], config["vocab_size"], config["use_sliding_window"]) == (
        ["Qwen2ForCausalLM"],
        320,
        False,
    )
    ours, _, _ = load_trained_model(run_dir)
    theirs = AutoModelForCausalLM.from_pretrained(output, dtype=torch.float32).eval()
    ids = torch.randint(0, 300, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, ours(ids), rtol=0, atol=1e-4)
    text = "the court merge tensor appeal."
    expected = Tokenizer.from_file(str(hf_tokenizer / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    assert AutoTokenizer.from_pretrained(output).encode(text, add_special_tokens=False) == expected


# add_special_tokens=true: a mask token and sentinels appended, the embedding and head grown.
NUM_SENTINELS = 8


@pytest.fixture(scope="module")
def grown_shards(corpus: Path, hf_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("grown_tokens")
    config = TokenizeConfig(
        input=str(corpus),
        tokenizer=str(hf_tokenizer),
        output_dir=str(output),
        workers=1,
        val_fraction=0.0,
        progress=False,
        add_special_tokens=True,
        num_sentinels=NUM_SENTINELS,
    )
    assert tokenize_corpus(config).documents[TRAIN] == 240
    return output


def tokenizer_size(hf_tokenizer: Path) -> int:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(hf_tokenizer / "tokenizer.json")).get_vocab_size(with_added_tokens=True)


def test_added_tokens_follow_the_vocabulary_and_leave_every_other_id_alone(
    grown_shards: Path, shards: Path, hf_tokenizer: Path
) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    size = tokenizer_size(hf_tokenizer)
    meta = json.loads((grown_shards / "tokenizer_meta.json").read_text())
    assert (meta["vocab_size"], meta["mask_id"]) == (size + 1 + NUM_SENTINELS, size)
    assert meta["sentinel_ids"] == list(range(size + 1, size + 1 + NUM_SENTINELS))
    grown = [np.asarray(TokenShard(prefix).tokens) for prefix in find_shards(grown_shards, TRAIN)]
    plain = [np.asarray(TokenShard(prefix).tokens) for prefix in find_shards(shards, TRAIN)]
    assert np.array_equal(np.concatenate(grown), np.concatenate(plain))
    theirs = AutoTokenizer.from_pretrained(grown_shards)
    assert theirs.mask_token_id == size
    ids = theirs.encode("law <mask> court <extra_id_7>", add_special_tokens=False)
    assert size in ids and size + NUM_SENTINELS in ids
    assert ids == Tokenizer.from_file(str(grown_shards / "tokenizer.json")).encode("law <mask> court <extra_id_7>").ids


def test_add_special_tokens_is_refused_for_our_tokenizer(text_tokenizer: Path, corpus: Path, tmp_path: Path) -> None:
    config = TokenizeConfig(
        input=str(corpus),
        tokenizer=str(text_tokenizer),
        output_dir=str(tmp_path),
        workers=1,
        progress=False,
        add_special_tokens=True,
    )
    with pytest.raises(ValueError, match="has a mask token and sentinels already"):
        tokenize_corpus(config)


@pytest.fixture(scope="module")
def exact_hf_model(hf_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Qwen2 (untied: embedding and head) with exactly the tokenizer's rows, as many have."""
    directory = tmp_path_factory.mktemp("qwen2_exact")
    return save_tiny_model(directory, "qwen2", vocab_size=tokenizer_size(hf_tokenizer), num_hidden_layers=2)


def test_a_larger_tokenizer_without_added_tokens_is_refused(
    shards: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    small = save_tiny_model(tmp_path_factory.mktemp("qwen2_256"), "qwen2", vocab_size=256, num_hidden_layers=1)
    cfg = load_train_config(run_overrides(shards, small, tmp_path_factory.mktemp("refused"), "train.max_steps=1"))
    with pytest.raises(ValueError, match="are not the mask and sentinels tokenize's add_special_tokens=true appends"):
        Trainer(cfg, init_distributed())


@pytest.mark.parametrize("objective", ["mlm", "span"])
def test_a_grown_model_keeps_the_imported_rows_initializes_the_new_ones_and_trains(
    objective: str,
    grown_shards: Path,
    exact_hf_model: Path,
    hf_tokenizer: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    from safetensors.torch import load_file

    size = tokenizer_size(hf_tokenizer)
    cfg = load_train_config(
        run_overrides(grown_shards, exact_hf_model, tmp_path, f"objective={objective}", "train.max_steps=2")
    )
    trainer = Trainer(cfg, init_distributed())
    assert f"grown to {trainer.model_cfg.padded_vocab_size} rows" in capsys.readouterr().err
    params = dict(trainer.engine.module.named_parameters())
    stored = load_file(str(exact_hf_model / "model.safetensors"))
    fresh = dict(GPT(trainer.model_cfg, seed=cfg.train.seed).named_parameters())  # the model's own initialization
    for ours, theirs in (("embed.tokens.weight", "model.embed_tokens.weight"), ("head.proj.weight", "lm_head.weight")):
        grown = params[ours].detach()
        assert grown.shape[0] >= size + 1 + NUM_SENTINELS
        assert torch.equal(grown[:size], stored[theirs])
        assert torch.equal(grown[size:], fresh[ours].detach()[size:])
        assert abs(grown[size:].std().item() - trainer.model_cfg.init_std) < 0.01  # N(0, init_std): 0.02, not 0.2
    records = trainer.fit()
    assert [r["step"] for r in records] == [1, 2] and all(np.isfinite(r["loss"]) for r in records)


def grown_overrides(grown_shards: Path, exact_hf_model: Path, run_dir: Path, *layout: str) -> list[str]:
    return run_overrides(grown_shards, exact_hf_model, run_dir, "objective=mlm", "train.max_steps=1", *layout)


@pytest.fixture(scope="module")
def grown_run(grown_shards: Path, exact_hf_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """One MLM step of the grown model in one process: its run dir and loss."""
    run_dir = tmp_path_factory.mktemp("grown_run")
    records = Trainer(
        load_train_config(grown_overrides(grown_shards, exact_hf_model, run_dir)), init_distributed()
    ).fit()
    return run_dir, records[0]["loss"]


def test_a_grown_model_starts_alike_under_tp_and_zero3_reading_only_imported_rows(
    grown_run: tuple[Path, float], grown_shards: Path, exact_hf_model: Path, hf_tokenizer: Path, tmp_path: Path
) -> None:
    run_dir, single = grown_run
    runs = {
        name: grown_overrides(grown_shards, exact_hf_model, tmp_path / name, f"parallel={name}")
        for name in ("tp2", "zero3")
    }
    runs = launch_init_from_runs(runs, tmp_path, processes=2)
    assert runs["loss"] == pytest.approx({"tp2": single, "zero3": single}, rel=1e-5)
    cfg = load_trained_model(run_dir)[0].cfg
    size, rows = tokenizer_size(hf_tokenizer), cfg.padded_vocab_size
    new_values = 2 * (rows - size) * cfg.d_model  # the embedding's and the head's new rows
    unread = {
        name: [rank["local_elements"] - rank["elements"] for rank in reads] for name, reads in runs["reads"].items()
    }
    half = rows // 2  # tp2: each rank holds half of the vocabulary's rows
    assert unread["tp2"] == [2 * cfg.d_model * len(range(max(size, r * half), (r + 1) * half)) for r in (0, 1)]
    assert sum(unread["zero3"]) == new_values and min(unread["zero3"]) >= 0
    assert all(rank["tensors"] == rank["local_tensors"] for reads in runs["reads"].values() for rank in reads)


def test_export_of_a_grown_run_writes_the_grown_vocabulary_and_tokenizer(
    grown_run: tuple[Path, float], grown_shards: Path, hf_tokenizer: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, _ = grown_run
    output = export(ExportConfig(checkpoint=str(run_dir), output_dir=str(tmp_path / "export")))
    size = tokenizer_size(hf_tokenizer)
    theirs = AutoModelForCausalLM.from_pretrained(output, dtype=torch.float32).eval()
    ours, _, _ = load_trained_model(run_dir)
    assert theirs.config.vocab_size == ours.cfg.padded_vocab_size >= size + 1 + NUM_SENTINELS
    ids = torch.randint(0, size + 1 + NUM_SENTINELS, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, ours(ids), rtol=0, atol=1e-4)
    text = "the court <mask> tensor <extra_id_0> appeal."
    exported = AutoTokenizer.from_pretrained(output)
    assert exported.mask_token_id == size
    assert exported.encode(text, add_special_tokens=False) == AutoTokenizer.from_pretrained(grown_shards).encode(
        text, add_special_tokens=False
    )
