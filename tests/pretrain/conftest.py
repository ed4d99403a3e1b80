"""A small generated token corpus that a tiny model can learn from, and a tiny model trained
on text with a real tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_pipeline.formats.special_tokens import SpecialTokens
from data_pipeline.formats.token_shards import TokenShardWriter, shard_prefix

VOCAB = 256
SPECIAL = SpecialTokens.synthetic(VOCAB, num_sentinels=100)
FIRST_ORDINARY = 105


def markov_documents(count: int, seed: int) -> list[np.ndarray]:
    """Documents from a mostly deterministic chain over the ordinary ids, each ending in EOS."""
    rng = np.random.default_rng(seed)
    span = 40  # few distinct ids: even the unigram statistics are far below a uniform guess
    documents = []
    for _ in range(count):
        length = int(rng.integers(20, 200))
        ids = np.empty(length + 1, dtype=np.int64)
        ids[0] = rng.integers(span)
        for i in range(1, length):
            ids[i] = (ids[i - 1] * 7 + 3) % span if rng.random() < 0.9 else rng.integers(span)
        ids[:length] += FIRST_ORDINARY
        ids[length] = SPECIAL.eos_id
        documents.append(ids)
    return documents


def write_corpus(directory: Path, train_shards: int = 2, docs_per_shard: int = 120, seed: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    SPECIAL.save(directory)
    for index in range(train_shards):
        with TokenShardWriter(shard_prefix(directory, "train", index), VOCAB, SPECIAL.tokenizer_hash) as writer:
            writer.add_documents(markov_documents(docs_per_shard, seed * 100 + index))
    with TokenShardWriter(shard_prefix(directory, "val", 0), VOCAB, SPECIAL.tokenizer_hash) as writer:
        writer.add_documents(markov_documents(40, seed * 100 + 99))
    return directory


@pytest.fixture(scope="session")
def token_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("tokens"))


def write_chat_corpus(directory: Path, sample_tokens: int = 33, seed: int = 0) -> Path:
    """Chat shards (as tokenize format=chat writes them) in the synthetic vocabulary: a prompt
    of chain tokens, then an answer (the chain's continuation) that the loss mask marks;
    conversations packed into samples of ``sample_tokens`` tokens (train.seq_len + 1)."""
    from data_pipeline.formats.token_shards import LOSS_BIT, START_BIT, SplitIndex
    from data_pipeline.tokenize.chat import SamplePacker

    directory.mkdir(parents=True, exist_ok=True)
    SPECIAL.save(directory)
    rng = np.random.default_rng(seed)
    for split, count in (("train", 160), ("val", 20)):
        with TokenShardWriter(
            shard_prefix(directory, split, 0), VOCAB, SPECIAL.tokenizer_hash, loss_mask=True
        ) as writer:
            packer = SamplePacker(writer, sample_tokens, SPECIAL.pad_id, pack=True)
            for _ in range(count):
                prompt, answer = int(rng.integers(2, 8)), int(rng.integers(2, 10))
                chain = [int(rng.integers(40))]
                for _ in range(prompt + answer - 1):
                    chain.append((chain[-1] * 7 + 3) % 40)
                bits = np.array([START_BIT] + [0] * (prompt - 1) + [LOSS_BIT] * answer, dtype=np.uint8)
                packer.add([token + FIRST_ORDINARY for token in chain], bits)
            packer.close_sample()
        shard = {"name": f"{split}-00000", "num_tokens": writer.num_tokens, "num_documents": writer.num_documents}
        SplitIndex(split, SPECIAL.tokenizer_hash, writer.num_tokens, [shard], sample_tokens=sample_tokens).save(
            directory
        )
    return directory


@pytest.fixture(scope="session")
def chat_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_chat_corpus(tmp_path_factory.mktemp("chat_tokens"))


# A tiny model trained on text, with a real SentencePiece tokenizer: what generation,
# evaluation and export read (a run dir with checkpoints/ and tokenizer/).
SYLLABLES = "ka to mi ne ru sa lo pe di fu ga hi jo ba ce".split()
TEXT_WORDS = [a + b for a in SYLLABLES for b in SYLLABLES[:4]]  # 60 words


def word_chain(rng: np.random.Generator, length: int) -> str:
    """Words that mostly follow a fixed successor rule: easy to learn, so generations are sharp."""
    index = int(rng.integers(len(TEXT_WORDS)))
    words = []
    for _ in range(length):
        words.append(TEXT_WORDS[index])
        index = (index * 7 + 3) % len(TEXT_WORDS) if rng.random() < 0.9 else int(rng.integers(len(TEXT_WORDS)))
    return " ".join(words) + "."


def text_documents(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [word_chain(rng, int(rng.integers(10, 60))) for _ in range(count)]


@pytest.fixture(scope="session")
def text_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tokenizer.model (400 pieces, so the model pads its vocabulary to 512), metadata, HF files."""
    from data_pipeline.tokenizer.train import TokenizerConfig, train_tokenizer

    corpus = tmp_path_factory.mktemp("text_corpus")
    with open(corpus / "docs.jsonl", "w") as stream:
        for text in text_documents(400, seed=1):
            stream.write(json.dumps({"text": text}) + "\n")
    output = tmp_path_factory.mktemp("text_tokenizer")
    settings = dict(input=str(corpus), output_dir=str(output), vocab_size=400, num_sentinels=4, num_threads=1)
    train_tokenizer(TokenizerConfig(**settings))
    return output


@pytest.fixture(scope="session")
def text_shards(tmp_path_factory: pytest.TempPathFactory, text_tokenizer: Path) -> Path:
    import sentencepiece as spm

    special = SpecialTokens.load(text_tokenizer)
    processor = spm.SentencePieceProcessor(model_file=str(text_tokenizer / "tokenizer.model"))
    directory = tmp_path_factory.mktemp("text_shards")
    for split, count, seed in (("train", 300, 2), ("val", 40, 3)):
        with TokenShardWriter(shard_prefix(directory, split, 0), special.vocab_size, special.tokenizer_hash) as writer:
            writer.add_documents(ids + [special.eos_id] for ids in processor.encode(text_documents(count, seed)))
    return directory


@pytest.fixture(scope="session")
def train_text_model(text_shards: Path, text_tokenizer: Path):
    """``train(run_dir, steps, *overrides) -> run_dir``: a tiny CLM run on the text shards."""
    from pretrain.config import load_train_config
    from pretrain.parallel.process_groups import init_distributed
    from pretrain.training.trainer import Trainer

    process = init_distributed()

    def train(run_dir: Path, steps: int, *overrides: str) -> Path:
        settings = [f"data.path={text_shards}", f"data.tokenizer={text_tokenizer}", f"run_dir={run_dir}"]
        settings += ["train.seq_len=64", "train.micro_batch_size=8", "train.global_batch_size=8", "train.eval_every=0"]
        settings += ["train.save_every=0", "optim.lr=1e-2", "optim.warmup_steps=2", "logging.progress_bar=false"]
        Trainer(load_train_config([*settings, f"train.max_steps={steps}", *overrides]), process).fit()
        return run_dir

    return train


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, train_text_model) -> Path:
    return train_text_model(tmp_path_factory.mktemp("trained_run"), 12)


@pytest.fixture(scope="session")
def run_module():
    """``run(module, *args, cwd=dir)``: ``python -m module args`` from this checkout, offline."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]

    # A process group this test process started must not be joined by the command's own.
    launch_env = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

    def run(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
        env = {
            **{k: v for k, v in os.environ.items() if k not in launch_env},
            "PYTHONPATH": str(repo),
            "HF_HUB_OFFLINE": "1",
        }
        return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, env=env)

    return run


@pytest.fixture(scope="session")
def assert_matches_transformers():
    """``check(run_dir, export_dir, device="cpu")``: the exported model and tokenizer, loaded
    offline by transformers, give our logits (<= 1e-4, both models in fp32 on ``device``) and
    our token ids."""
    import torch

    from pretrain.checkpoint.consolidate import load_trained_model

    text = "kato mine saka sane hika\nlo pe <mask> <s> é 12 ✓"

    def check(run_dir: Path, export_dir: Path, device: str = "cpu") -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        ours, special, _ = load_trained_model(run_dir, device)
        hf_model = AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.float32, local_files_only=True)
        hf_model = hf_model.to(device).eval()
        hf_tokenizer = AutoTokenizer.from_pretrained(export_dir, local_files_only=True)
        import sentencepiece as spm

        ids = spm.SentencePieceProcessor(model_file=str(run_dir / "tokenizer" / "tokenizer.model")).encode(text)
        assert hf_tokenizer(text)["input_ids"] == ids
        assert len(hf_tokenizer) == special.vocab_size < hf_model.config.vocab_size == ours.cfg.padded_vocab_size
        batch = torch.tensor([[special.eos_id] + ids, [special.bos_id] + ids[::-1]], device=device)
        with torch.no_grad():
            difference = (ours(batch) - hf_model(batch).logits).abs().max()
        assert difference <= 1e-4

    return check


@pytest.fixture(scope="session")
def common():
    """``common(corpus, run_dir) -> overrides``: the tiny 4-layer runs of the parallel tests."""

    def settings(corpus: Path, run_dir: Path) -> list[str]:
        return [
            f"data.path={corpus}",
            f"run_dir={run_dir}",
            "train.seq_len=32",
            "train.micro_batch_size=2",
            "train.global_batch_size=8",
            "train.log_every=1",
            "train.eval_every=0",
            "train.save_every=0",
            "logging.progress_bar=false",
            "model.n_layers=4",
        ]

    return settings


@pytest.fixture(scope="session")
def launch_runs():
    """``launch(nproc, {name: overrides}, workdir, worker="parallel_worker.py") -> dict``: the
    runs, in order, in one torchrun launch of the worker script beside this file (each launch
    costs seconds of start-up); the worker's report, e.g. {"losses": {name: [...]},
    "state_error": {name: float}}."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    launch_env = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

    def launch(nproc: int, runs: dict[str, list[str]], workdir: Path, worker: str = "parallel_worker.py") -> dict:
        runs_file, out_file = workdir / f"runs-{nproc}.json", workdir / f"out-{nproc}.json"
        runs_file.write_text(json.dumps(runs))
        env = {k: v for k, v in os.environ.items() if k not in launch_env}
        env["OMP_NUM_THREADS"] = "1"
        # Large blocks straight from mmap and back on free, so that the memory tests see
        # what is allocated, not what malloc keeps for later.
        env["MALLOC_MMAP_THRESHOLD_"] = str(2**16)
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            str(Path(__file__).with_name(worker)),
            str(runs_file),
            str(out_file),
        ]
        done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
        log = workdir / f"launch-{nproc}.log"
        log.write_text(done.stderr)
        assert done.returncode == 0, f"{log}: {done.stderr[-3000:]}"
        return json.loads(out_file.read_text())

    return launch
