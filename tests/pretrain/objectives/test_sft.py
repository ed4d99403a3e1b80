"""Fine-tuning on chat shards and chatting with the result: the sft loss is the masked mean
a brute-force computation gives (each conversation run on its own), init_from=RUN takes the
weights and nothing else, an imported model's prompts start as its own tokenizer starts
them (greedy output equals transformers'), chat generation stops at the end of the turn and
chat evaluation tasks render the template."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data_pipeline.formats.special_tokens import CHAT_TOKENS
from data_pipeline.formats.token_shards import LOSS_BIT, START_BIT, ShardError
from data_pipeline.tokenize.cli import tokenize_corpus
from data_pipeline.tokenize.config import ChatConfig, TokenizeConfig
from data_pipeline.tokenizer.chat_template import load_chat_template
from data_pipeline.tokenizer.hf_tokenizer import load_tokenizer_files
from pretrain.checkpoint.consolidate import consolidated_state_dict
from pretrain.checkpoint.directory import find_checkpoint
from pretrain.config import load_train_config
from pretrain.evaluation.run import evaluate_model
from pretrain.evaluation.tasks import TaskConfig, TaskType
from pretrain.generation.generator import Generator
from pretrain.generation.settings import GenerationSettings
from pretrain.inference.loading import InferenceConfig, load_for_inference
from pretrain.inference.tokenizer import StartToken
from pretrain.parallel.pipeline import canonical_parameters
from pretrain.parallel.process_groups import init_distributed
from pretrain.training.trainer import Trainer
from tests.pretrain.support.hf_models import CHAT_WORDS, save_chat_tokenizer, save_tiny_model

QUESTIONS = [
    [{"role": "user", "content": "what is the river?"}],
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the law of stone code?"}],
]


@pytest.fixture(scope="module")
def process():
    return init_distributed()


def chats(count: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    words = lambda n: " ".join(rng.choice(CHAT_WORDS, size=n))  # noqa: E731
    return [
        {
            "messages": [
                {"role": "user", "content": words(int(rng.integers(2, 6))) + "?"},
                {"role": "assistant", "content": words(int(rng.integers(1, 8))) + "."},
            ]
        }
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def chat_setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A Hub-style chat tokenizer, a tiny random Llama with its vocabulary, chat shards."""
    root = tmp_path_factory.mktemp("sft")
    tokenizer = save_chat_tokenizer(root / "tokenizer")
    llama = save_tiny_model(root / "llama", "llama", vocab_size=320, bos_token_id=2, eos_token_id=1, pad_token_id=1)
    (root / "chats").mkdir()
    (root / "chats" / "chat.jsonl").write_text("".join(json.dumps(record) + "\n" for record in chats(120)))
    config = TokenizeConfig(
        input=str(root / "chats"),
        tokenizer=str(tokenizer),
        output_dir=str(root / "shards"),
        workers=1,
        format="chat",
        chat=ChatConfig(seq_len=63),
        val_fraction=0.0,
        progress=False,
    )
    tokenize_corpus(config)
    return {"root": root, "tokenizer": tokenizer, "llama": llama, "shards": root / "shards"}


def sft_overrides(shards: Path, run_dir: Path, *more: str) -> list[str]:
    return [
        f"data.path={shards}",
        f"run_dir={run_dir}",
        "objective=sft",
        "train.seq_len=63",
        "train.micro_batch_size=4",
        "train.global_batch_size=4",
        "train.eval_every=0",
        "train.log_every=1",
        "logging.progress_bar=false",
        *more,
    ]


def brute_force_loss(model: torch.nn.Module, windows: np.ndarray) -> float:
    """Each conversation of each sample run on its own; cross-entropy at its loss-mask targets;
    the mean per sample, then over samples."""
    means = []
    for tokens, bits in windows:
        starts = np.flatnonzero(bits & START_BIT).tolist() + [len(tokens)]
        losses = []
        for begin, end in zip(starts, starts[1:]):
            targets = [t for t in range(begin + 1, end) if bits[t] & LOSS_BIT]
            if not targets:
                continue
            with torch.no_grad():
                logits = model(torch.tensor(tokens[begin:end])[None])[0]
            losses += [F.cross_entropy(logits[t - begin - 1], torch.tensor(int(tokens[t]))).item() for t in targets]
        means.append(sum(losses) / len(losses))
    return float(np.mean(means))


def test_sft_loss_is_the_masked_mean_of_each_conversation_alone(chat_setup: dict, process, tmp_path: Path) -> None:
    cfg = load_train_config(
        sft_overrides(
            chat_setup["shards"],
            tmp_path / "run",
            "model=tiny",
            "model.max_seq_len=64",
            "train.max_steps=1",
            "train.seed=3",
        )
    )
    trainer = Trainer(cfg, process)
    before = copy.deepcopy(trainer.engine.module).eval()
    windows = trainer.stream.sample(np.arange(4)).windows
    assert windows.shape == (4, 2, 64) and (windows[:, 1, 0] & START_BIT).all()
    assert (np.count_nonzero(windows[:, 1] & START_BIT, axis=1) > 2).any()  # packed: several conversations in a sample
    loss = trainer.fit()[0]["loss"]
    assert loss == pytest.approx(brute_force_loss(before, windows), rel=1e-5)


def test_init_from_a_run_takes_the_weights_and_starts_afresh(chat_setup: dict, process, tmp_path: Path) -> None:
    first = tmp_path / "first"
    Trainer(
        load_train_config(
            sft_overrides(chat_setup["shards"], first, f"init_from={chat_setup['llama']}", "train.max_steps=2")
        ),
        process,
    ).fit()
    cfg = load_train_config(
        sft_overrides(
            chat_setup["shards"], tmp_path / "second", f"init_from={first}", "train.max_steps=2", "optim.warmup_steps=5"
        )
    )
    trainer = Trainer(cfg, process)
    saved = consolidated_state_dict(find_checkpoint(first))
    for name, param in canonical_parameters(trainer.engine.module).items():
        assert torch.equal(param.detach(), saved[name]), name
    assert trainer.step == trainer.consumed_samples == 0 and not trainer.optimizer.state  # nothing but the weights
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(cfg.optim.lr / 5)  # its own warm-up, from its start
    assert trainer.model_cfg.hf_architecture == "LlamaForCausalLM"  # the model config came from the run


def test_chat_shards_and_objectives_must_agree(chat_setup: dict, token_corpus: Path, process, tmp_path: Path) -> None:
    with pytest.raises(ShardError, match="train them with objective=sft"):
        Trainer(
            load_train_config([*sft_overrides(chat_setup["shards"], tmp_path / "a", "model=tiny"), "objective=clm"]),
            process,
        )
    with pytest.raises(ShardError, match="set train.seq_len=63"):
        Trainer(
            load_train_config([*sft_overrides(chat_setup["shards"], tmp_path / "b", "model=tiny"), "train.seq_len=31"]),
            process,
        )
    with pytest.raises(ValueError, match="objective.document_masking=false"):
        Trainer(
            load_train_config(
                [*sft_overrides(chat_setup["shards"], tmp_path / "d", "model=tiny"), "objective.document_masking=false"]
            ),
            process,
        )
    with pytest.raises(ShardError, match="plain token shards have no loss mask"):
        Trainer(
            load_train_config(sft_overrides(token_corpus, tmp_path / "c", "model=tiny", "train.seq_len=31")), process
        )


@pytest.fixture(scope="module")
def imported_run(chat_setup: dict, process) -> Path:
    """The tiny Llama imported unchanged (a step at learning rate 0) into a run of ours."""
    run = chat_setup["root"] / "imported"
    Trainer(
        load_train_config(
            sft_overrides(
                chat_setup["shards"], run, f"init_from={chat_setup['llama']}", "train.max_steps=1", "optim.lr=0"
            )
        ),
        process,
    ).fit()
    return run


def test_generation_on_an_imported_model_equals_transformers_greedy(chat_setup: dict, imported_run: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_model = AutoModelForCausalLM.from_pretrained(
        chat_setup["llama"], dtype=torch.float32, local_files_only=True
    ).eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(str(chat_setup["tokenizer"]), local_files_only=True)
    loaded = load_for_inference(InferenceConfig(checkpoint=str(imported_run)))
    generator = Generator(loaded.model, loaded.tokenizer, GenerationSettings(max_new_tokens=12))
    prompts = ["what is the river", "law of the stone code", "merge tensor"]
    for prompt in prompts:
        ids = hf_tokenizer(prompt)["input_ids"]
        assert generator.prompt_ids(prompt) == ids and ids[0] == hf_tokenizer.bos_token_id  # the default: its own BOS
        with torch.no_grad():
            expected = hf_model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[
                0, len(ids) :
            ].tolist()
        ours = generator.complete_ids([ids])[0]
        assert ours == expected[: len(ours)] and (len(ours) == 12 or expected[len(ours)] == hf_tokenizer.eos_token_id)
    # start_token still overrides
    eos_first = Generator(loaded.model, loaded.tokenizer, GenerationSettings(max_new_tokens=12), StartToken.eos)
    assert (
        eos_first.prompt_ids(prompts[0])
        == [hf_tokenizer.eos_token_id] + hf_tokenizer(prompts[0], add_special_tokens=False)["input_ids"]
    )


def test_a_tokenizer_without_a_bos_prefix_starts_prompts_with_nothing(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from pretrain.inference.tokenizer import TextTokenizer

    directory = save_chat_tokenizer(tmp_path / "plain", bos_prefix=False)
    ours, theirs = TextTokenizer.load(directory), AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    assert ours.start_ids(StartToken.auto) + ours.encode("the river") == theirs("the river")["input_ids"]


def zero_head(run: Path, tmp_path: Path):
    """The imported model with its output projection zeroed: every logit equal, so greedy
    picks id 0, which is <|im_end|> (the chat tokenizer's end of turn), at every step."""
    loaded = load_for_inference(InferenceConfig(checkpoint=str(run)))
    with torch.no_grad():
        loaded.model.head.proj.weight.zero_()
    return loaded


def test_chat_generation_renders_the_template_and_stops_at_the_end_of_turn(
    chat_setup: dict, imported_run: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    hf_tokenizer = AutoTokenizer.from_pretrained(str(chat_setup["tokenizer"]), local_files_only=True)
    loaded = zero_head(imported_run, tmp_path)
    settings = GenerationSettings(max_new_tokens=8)
    chat = Generator(loaded.model, loaded.tokenizer, settings, chat=True)
    for messages in QUESTIONS:
        expected = hf_tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)["input_ids"]
        assert chat.prompt_ids(messages) == list(expected)
    assert chat.complete_ids([chat.prompt_ids(QUESTIONS[0])]) == [[]]  # <|im_end|> ends the turn at once
    plain = Generator(loaded.model, loaded.tokenizer, settings)
    assert plain.complete_ids([plain.prompt_ids("what is the river?")]) == [[0] * 8]  # not an end without chat


def test_chat_evaluation_tasks_answer_with_the_template(
    chat_setup: dict, imported_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoTokenizer

    hf_tokenizer = AutoTokenizer.from_pretrained(str(chat_setup["tokenizer"]), local_files_only=True)
    loaded = zero_head(imported_run, tmp_path)
    first = json.dumps({"prompt": "what is the river?", "reference": "stone"}) + "\n"
    (tmp_path / "qa.jsonl").write_text(first)
    (tmp_path / "chat.jsonl").write_text(first + json.dumps({"messages": QUESTIONS[1], "reference": "code"}) + "\n")
    seen: list[list[int]] = []
    original = Generator.complete_ids
    monkeypatch.setattr(
        Generator, "complete_ids", lambda self, prompts, on_token=None: seen.extend(prompts) or original(self, prompts)
    )
    for chat, task_file in ((False, tmp_path / "qa.jsonl"), (True, tmp_path / "chat.jsonl")):
        task = TaskConfig(
            type=TaskType.generation, path=str(task_file), chat=chat, generation=GenerationSettings(max_new_tokens=4)
        )
        metrics = evaluate_model(loaded.model, loaded.tokenizer, [task])
        assert metrics[f"generation_{task_file.stem}/examples"] == 1 + chat
    conversations = [[{"role": "user", "content": "what is the river?"}], QUESTIONS[1]]
    rendered = [
        list(hf_tokenizer.apply_chat_template(m, tokenize=True, add_generation_prompt=True)["input_ids"])
        for m in conversations
    ]
    assert seen[0] == hf_tokenizer("what is the river?")["input_ids"] and seen[-2:] == rendered
    with pytest.raises(ValueError, match="chat=true applies to type=generation"):
        TaskConfig(type=TaskType.perplexity, path=str(tmp_path / "qa.jsonl"), chat=True).validate()


def test_our_tokenizer_has_the_default_chat_template(text_tokenizer: Path) -> None:
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=str(text_tokenizer / "tokenizer.model"))
    template = load_chat_template(load_tokenizer_files(text_tokenizer))
    token = {name: processor.piece_to_id(piece) for name, piece in CHAT_TOKENS.items()}
    messages = [
        {"role": "system", "content": "kato"},
        {"role": "user", "content": "mine saka?"},
        {"role": "assistant", "content": "sane hika."},
    ]
    encoded = template.encode(messages, add_generation_prompt=False)
    parts = [[token[m["role"]], *processor.encode(m["content"]), token["end"]] for m in messages]
    assert encoded.ids == [i for part in parts for i in part]
    assert sum(encoded.assistant) == len(parts[2]) - 1  # the answer and its <|end|>, not the role token
    assert template.encode(messages[:2], add_generation_prompt=True).ids[-1] == token["assistant"]
    assert template.end_of_turn_ids == {token["end"]}


def test_chat_prompts_files_are_read_with_one_line_errors(tmp_path: Path) -> None:
    from pretrain.generation.prompts import gather_conversations

    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"messages": QUESTIONS[1]}) + "\n" + json.dumps({"prompt": "the law?"}) + "\n")
    assert gather_conversations("hi?", str(good)) == [
        [{"role": "user", "content": "hi?"}],
        QUESTIONS[1],
        [{"role": "user", "content": "the law?"}],
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"prompt": "fine"}) + "\n" + json.dumps({"messages": [{"role": "bot", "content": "x"}]}) + "\n"
    )
    with pytest.raises(ValueError, match=r"bad.jsonl:2: message 0 has role 'bot'; roles are system, user, assistant"):
        gather_conversations(None, str(bad))
