"""``tokenize format=chat``: conversations rendered exactly as transformers' apply_chat_template,
a loss mask that covers exactly the assistant tokens, packing or padding into whole samples,
and every malformed or overlong conversation counted with its file and line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_pipeline.formats.token_shards import LOSS_BIT, START_BIT, SplitIndex, TokenShard, find_shards
from data_pipeline.io.readers import BadInputError
from data_pipeline.tokenize.cli import tokenize_corpus
from data_pipeline.tokenize.config import ChatConfig, TokenizeConfig
from data_pipeline.tokenize.output_dir import SPLITS
from data_pipeline.tokenizer.chat_template import load_chat_template
from data_pipeline.tokenizer.hf_tokenizer import load_tokenizer_files
from tests.pretrain.support.hf_models import CHAT_WORDS, save_chat_tokenizer


def conversations(count: int, seed: int = 0) -> list[list[dict]]:
    """Conversations of 1-3 exchanges, some with a system message."""
    rng = np.random.default_rng(seed)
    words = lambda low, high: " ".join(rng.choice(CHAT_WORDS, size=int(rng.integers(low, high))))  # noqa: E731
    result = []
    for _ in range(count):
        messages = [{"role": "system", "content": words(2, 5)}] if rng.random() < 0.3 else []
        for _ in range(int(rng.integers(1, 4))):
            messages += [
                {"role": "user", "content": words(2, 8) + "?"},
                {"role": "assistant", "content": words(1, 10) + "."},
            ]
        result.append(messages)
    return result


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_chat_tokenizer(tmp_path_factory.mktemp("chat_tokenizer"))


@pytest.fixture(scope="module")
def hf(chat_tokenizer: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(chat_tokenizer), local_files_only=True)


def hf_ids(hf, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    return list(
        hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)["input_ids"]
    )


def write_chats(path: Path, chats: list[list[dict]], extra_lines: tuple[str, ...] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as stream:
        for messages in chats:
            stream.write(json.dumps({"messages": messages}) + "\n")
        for line in extra_lines:
            stream.write(line + "\n")
    return path


def run_chat(
    tmp_path: Path, tokenizer: Path, chats: list[list[dict]], extra_lines: tuple[str, ...] = (), **chat: object
):
    write_chats(tmp_path / "in" / "chat.jsonl", chats, extra_lines)
    settings = {"seq_len": 127, **chat}
    config = TokenizeConfig(
        input=str(tmp_path / "in"),
        tokenizer=str(tokenizer),
        output_dir=str(tmp_path / "out"),
        workers=1,
        format="chat",
        chat=ChatConfig(**settings),
        val_fraction=0.0,
        progress=False,
    )
    return tokenize_corpus(config), tmp_path / "out"


def stored(output: Path) -> tuple[np.ndarray, np.ndarray]:
    shards = [TokenShard(prefix) for split in SPLITS for prefix in find_shards(output, split)]
    return (
        np.concatenate([np.asarray(shard.tokens) for shard in shards]),
        np.concatenate([np.asarray(shard.mask) for shard in shards]),
    )


def test_chat_template_renders_as_transformers(chat_tokenizer: Path, hf) -> None:
    template = load_chat_template(load_tokenizer_files(chat_tokenizer))
    for messages in conversations(20, seed=1):
        for prompt in (False, True):
            assert template.encode(messages, add_generation_prompt=prompt).ids == hf_ids(hf, messages, prompt)
    # the turn ends with <|im_end|> (id 0), besides EOS
    assert template.end_of_turn_ids == {0, hf.eos_token_id}


def test_loss_mask_covers_exactly_the_assistant_tokens(tmp_path: Path, chat_tokenizer: Path, hf) -> None:
    chats = conversations(40)
    summary, output = run_chat(tmp_path, chat_tokenizer, chats, packing="pad")
    tokens, mask = stored(output)
    # independently, with transformers: what each assistant turn adds after the generation prompt
    expected = sum(
        len(hf_ids(hf, messages[: k + 1])) - len(hf_ids(hf, messages[:k], True))
        for messages in chats
        for k, message in enumerate(messages)
        if message["role"] == "assistant"
    )
    assert int(((mask & LOSS_BIT) != 0).sum()) == expected == summary.chat["loss_tokens"]
    # pad: one conversation per sample, stored as transformers renders it, then padding
    samples, bits = tokens.reshape(-1, 128), mask.reshape(-1, 128)
    assert len(samples) == len(chats) == summary.chat["samples"]
    for sample, sample_bits, messages in zip(samples, bits, chats):
        ids = hf_ids(hf, messages)
        assert sample[: len(ids)].tolist() == ids and set(sample[len(ids) :].tolist()) <= {hf.eos_token_id}
        assert sample_bits[0] == START_BIT and not (sample_bits[len(ids) :] & LOSS_BIT).any()
        answer = hf.decode([int(t) for t, b in zip(sample, sample_bits) if b & LOSS_BIT])
        assert answer == "".join(m["content"] + "<|im_end|>\n" for m in messages if m["role"] == "assistant")


def test_train_on_prompt_scores_every_token_but_the_first_and_padding(tmp_path: Path, chat_tokenizer: Path, hf) -> None:
    chats = conversations(10)
    _, output = run_chat(tmp_path, chat_tokenizer, chats, packing="pad", train_on_prompt=True)
    _, mask = stored(output)
    lengths = [len(hf_ids(hf, messages)) for messages in chats]
    for bits, length in zip(mask.reshape(-1, 128), lengths):
        assert (bits[1:length] == LOSS_BIT).all() and bits[0] == START_BIT and not (bits[length:] & LOSS_BIT).any()


def test_packing_fills_samples_with_whole_conversations(tmp_path: Path, chat_tokenizer: Path, hf) -> None:
    chats = conversations(60)
    packed, packed_dir = run_chat(tmp_path / "pack", chat_tokenizer, chats, packing="pack")
    padded, _ = run_chat(tmp_path / "pad", chat_tokenizer, chats, packing="pad")
    assert packed.chat["loss_tokens"] == padded.chat["loss_tokens"]
    assert packed.chat["samples"] < padded.chat["samples"] == len(chats)
    assert packed.chat["padding_tokens"] < padded.chat["padding_tokens"]
    tokens, mask = stored(packed_dir)
    lengths = iter(len(hf_ids(hf, messages)) for messages in chats)
    for sample, bits in zip(tokens.reshape(-1, 128), mask.reshape(-1, 128)):
        starts = np.flatnonzero(bits & START_BIT).tolist()  # conversations, then the padding run
        assert starts[0] == 0
        for begin, end in zip(starts, starts[1:] + [128]):
            if sample[begin] != hf.eos_token_id:  # a conversation: whole, in order
                assert end - begin == next(lengths)
    assert next(lengths, None) is None
    assert SplitIndex.load(packed_dir, "train").sample_tokens == 128


def test_overlong_conversations_are_truncated_or_dropped_and_counted(tmp_path: Path, chat_tokenizer: Path, hf) -> None:
    long_answer = [
        {"role": "user", "content": "what is the river?"},
        {"role": "assistant", "content": " ".join(CHAT_WORDS * 8)},
    ]
    chats = conversations(5) + [long_answer]
    truncated, truncated_dir = run_chat(tmp_path / "t", chat_tokenizer, chats, packing="pad", overlong="truncate")
    dropped, _ = run_chat(tmp_path / "d", chat_tokenizer, chats, packing="pad", overlong="drop")
    assert truncated.chat["truncated"] == 1 and truncated.bad_input["count"] == 0 and truncated.chat["samples"] == 6
    tokens, _ = stored(truncated_dir)
    assert tokens[-128:].tolist() == hf_ids(hf, long_answer)[:128]  # its start, cut to one sample
    assert dropped.chat["truncated"] == 0 and dropped.chat["samples"] == 5
    assert dropped.bad_input["by_reason"] == {"too_long": 1}
    assert dropped.bad_input["events"][0]["line"] == 6


BAD_LINES = (
    json.dumps({"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]}),
    json.dumps({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "x"}]}),
    json.dumps({"messages": [{"role": "user", "content": "only a question?"}]}),
    "not json",
    json.dumps({"prompt": "what is the law?", "completion": "the court."}),
)


def test_malformed_conversations_are_counted_with_file_and_line(tmp_path: Path, chat_tokenizer: Path) -> None:
    summary, _ = run_chat(tmp_path, chat_tokenizer, conversations(3), BAD_LINES)
    assert summary.bad_input["by_reason"] == {"bad_conversation": 2, "no_assistant_turn": 1, "invalid_json": 1}
    assert [(event["line"], event["reason"]) for event in summary.bad_input["events"]] == [
        (4, "bad_conversation"),
        (5, "bad_conversation"),
        (6, "no_assistant_turn"),
        (7, "invalid_json"),
    ]
    assert "role 'robot'" in summary.bad_input["events"][0]["detail"]
    assert summary.documents["train"] == 4  # the three conversations and the prompt/completion record
    assert "(bad_conversation: 2)" in str(summary)


def test_strict_stops_at_the_first_bad_conversation_naming_file_and_line(tmp_path: Path, chat_tokenizer: Path) -> None:
    write_chats(tmp_path / "in" / "chat.jsonl", conversations(2), BAD_LINES)
    config = TokenizeConfig(
        input=str(tmp_path / "in"),
        tokenizer=str(chat_tokenizer),
        output_dir=str(tmp_path / "out"),
        workers=1,
        format="chat",
        strict=True,
        progress=False,
    )
    with pytest.raises(BadInputError, match=r"chat.jsonl:3: bad_conversation: message 0 has role 'robot'"):
        tokenize_corpus(config)


@pytest.mark.parametrize(
    "setting, message",
    [
        (dict(format="dialog"), "format=dialog"),
        (dict(chat=ChatConfig(packing="bins")), "chat.packing=bins"),
        (dict(chat=ChatConfig(overlong="cut")), "chat.overlong=cut"),
        (dict(chat=ChatConfig(seq_len=0)), "chat.seq_len=0"),
    ],
)
def test_bad_chat_settings_are_named(tmp_path: Path, chat_tokenizer: Path, setting: dict, message: str) -> None:
    config = TokenizeConfig(
        input=str(tmp_path), tokenizer=str(chat_tokenizer), output_dir=str(tmp_path / "out"), **setting
    )
    with pytest.raises(ValueError, match=message):
        tokenize_corpus(config)
