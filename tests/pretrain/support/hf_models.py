"""Tiny random Hugging Face checkpoints of every family we import, built offline with
transformers' config classes and ``save_pretrained`` (for test_hf_import.py and its
torchrun worker)."""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 256  # the synthetic token corpus's vocabulary (conftest.py)
BASE = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=3,
)
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    # Short, so that scaling changes the frequencies a 40-token test sequence uses.
    "original_max_position_embeddings": 16,
}
FAMILIES = ("llama", "llama3", "mistral", "qwen2", "tied-llama")


def hf_config(family: str, **changes: object):  # -> transformers.PretrainedConfig
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    base = {**BASE, **changes}
    return {
        "llama": lambda: LlamaConfig(**base),
        "llama3": lambda: LlamaConfig(**base, rope_parameters=LLAMA3_ROPE),
        "mistral": lambda: MistralConfig(**base, sliding_window=64),
        "qwen2": lambda: Qwen2Config(**base),
        "tied-llama": lambda: LlamaConfig(**base, tie_word_embeddings=True),
    }[family]()


def save_tiny_model(
    directory: Path, family: str, seed: int = 0, max_shard_size: str = "50GB", **changes: object
) -> Path:
    """A random model of ``family`` (config ``changes`` applied) in ``directory``. Every
    parameter is drawn at random (norm weights and biases too), so a weight loaded into the
    wrong place shows."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config(family, **changes))
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2 if param.dim() == 2 else 0.5)
    model.save_pretrained(directory, max_shard_size=max_shard_size)
    return directory


def init_from_overrides(data: Path, checkpoint: Path, run_dir: Path, batch: int, *more: str) -> list[str]:
    """A short CLM run from ``checkpoint`` on the token shards in ``data``."""
    return [
        f"data.path={data}",
        f"init_from={checkpoint}",
        f"run_dir={run_dir}",
        "train.seq_len=32",
        "train.micro_batch_size=2",
        f"train.global_batch_size={batch}",
        "train.log_every=1",
        "train.eval_every=0",
        "train.save_every=0",
        "logging.progress_bar=false",
        *more,
    ]


def launch_init_from_runs(runs: dict[str, list[str]], workdir: Path, processes: int) -> dict[str, dict]:
    """``{name: overrides}`` in one torchrun launch of hf_parallel_worker.py: ``{"loss": {name:
    first step's loss}, "reads": {name: [what each rank read]}}``."""
    import json
    import os
    import subprocess
    import sys

    (workdir / "runs.json").write_text(json.dumps(runs))
    repo = Path(__file__).resolve().parents[3]
    launch_env = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {key: value for key, value in os.environ.items() if key not in launch_env}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(repo))
    worker = Path(__file__).parents[1] / "workers" / "hf_parallel_worker.py"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        str(worker),
        str(workdir / "runs.json"),
        str(workdir / "out.json"),
    ]
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-5000:]
    return json.loads((workdir / "out.json").read_text())


# A chat tokenizer as models on the Hub ship one: byte-level BPE, ChatML turn markers as
# special tokens, a post-processor that starts every text with BOS, and a chat_template.
# <|im_end|> has id 0: a model whose logits are all equal picks it first (greedy takes the
# lowest id), which shows where generation stops.
CHAT_SPECIALS = ["<|im_end|>", "<|endoftext|>", "<s>", "<|im_start|>"]
CHATML = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('unknown role') }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] | trim + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHAT_WORDS = "river stone law court patient dose code loop merge tensor appeal clause what is the a of".split()


def save_chat_tokenizer(directory: Path, bos_prefix: bool = True) -> Path:
    """The chat tokenizer above (320 ids) in ``directory``; ``bos_prefix``: its post-processor
    starts every text with BOS (as Llama's does), else it adds nothing (as GPT-2's)."""
    import json

    import numpy as np
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(CHAT_WORDS, size=30)) + "?" for _ in range(200)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=CHAT_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(texts, trainer)
    if bos_prefix:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 2)]
        )
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "<|endoftext|>",
        "chat_template": CHATML,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory
