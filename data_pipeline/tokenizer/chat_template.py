"""Conversations to token ids with a mask of the assistant's tokens: the one place that
renders a chat template, for ``tokenize format=chat``, ``pretrain.generate chat=true`` and
chat evaluation tasks.

- A Hugging Face tokenizer renders its own ``chat_template`` (``chat_template.jinja`` or
  ``tokenizer_config.json``) with jinja2, as transformers' ``apply_chat_template`` does, and
  the text is encoded without the tokenizer's post-processing (the template writes any BOS).
- Our SentencePiece tokenizer uses the default template below, on the control tokens
  ``train_tokenizer`` reserves (CHAT_TOKENS, data_pipeline/formats/special_tokens.py):

      <|system|>{content}<|end|><|user|>{content}<|end|><|assistant|>{content}<|end|>...

  each content encoded on its own; the generation prompt is ``<|assistant|>``.

The assistant tokens of a turn are those its rendering adds after the generation prompt,
up to the next turn: its content and end-of-turn marker (what the model must learn to say).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import sentencepiece as spm

from data_pipeline.formats.special_tokens import CHAT_TOKENS
from data_pipeline.formats.tokenizer_files import TokenizerFiles
from data_pipeline.tokenizer.hf_tokenizer import HFTokenizerFiles, special_token_strings

SYSTEM, USER, ASSISTANT = "system", "user", "assistant"
ROLES = (SYSTEM, USER, ASSISTANT)
CHAT_TEMPLATE_FILE = "chat_template.jinja"
Message = dict[str, str]


class ChatTemplateError(ValueError):
    """A conversation (or tokenizer) the template cannot render; the message says why."""


@dataclass(frozen=True)
class EncodedChat:
    ids: list[int]
    assistant: list[bool]  # per id: part of an assistant turn


class ChatTemplate(Protocol):
    end_of_turn_ids: frozenset[int]  # ids that end an assistant turn (generation stops there)

    def encode(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> EncodedChat: ...


class DefaultChatTemplate:
    """The default template (module docstring) over a SentencePiece model."""

    def __init__(self, processor: spm.SentencePieceProcessor, model_path: Path) -> None:
        self.processor = processor
        self.ids = {name: processor.piece_to_id(piece) for name, piece in CHAT_TOKENS.items()}
        missing = [CHAT_TOKENS[name] for name, token_id in self.ids.items() if not processor.is_control(token_id)]
        if missing:
            raise ChatTemplateError(
                f"{model_path}: the tokenizer has no chat tokens {missing}; re-train it with "
                "`python -m data_pipeline.train_tokenizer` (which reserves them) "
                "or use a Hugging Face tokenizer with a chat_template"
            )
        self.end_of_turn_ids = frozenset({self.ids["end"]})

    def encode(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> EncodedChat:
        ids: list[int] = []
        assistant: list[bool] = []
        contents = self.processor.encode([message["content"] for message in messages])
        for message, content in zip(messages, contents):
            turn = [self.ids[message["role"]], *content, self.ids["end"]]
            ids += turn
            # the role token is the prompt the model is given; what follows it is the turn
            assistant += [False] + [message["role"] == ASSISTANT] * (len(turn) - 1)
        if add_generation_prompt:
            ids.append(self.ids[ASSISTANT])
            assistant.append(False)
        return EncodedChat(ids, assistant)


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(f"the chat template refused the conversation: {message}")


class JinjaChatTemplate:
    """A Hugging Face ``chat_template``, rendered as transformers renders it (a sandboxed
    jinja2 environment with trim_blocks, lstrip_blocks, loopcontrols, ``tojson`` and
    ``raise_exception``; the special tokens as variables), encoded with ``tokenizers``."""

    def __init__(self, source: str, tokenizer: Any, variables: dict[str, Any], eos_id: int) -> None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        environment = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        environment.filters["tojson"] = lambda value, indent=None, ensure_ascii=False, sort_keys=False: json.dumps(
            value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys
        )
        environment.globals["raise_exception"] = _raise_exception
        self.template = environment.from_string(source)
        self.tokenizer = tokenizer
        self.variables = variables
        self.end_of_turn_ids = frozenset({eos_id, *self._turn_end_ids()})

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
        return self.template.render(
            messages=list(messages), add_generation_prompt=add_generation_prompt, **self.variables
        )

    def _assistant_spans(self, messages: Sequence[Message], text: str) -> list[tuple[int, int]]:
        """[start, stop) characters of each assistant turn in the rendered ``text``."""
        spans = []
        for index, message in enumerate(messages):
            if message["role"] != ASSISTANT:
                continue
            before, through = self.render(messages[:index], True), self.render(messages[: index + 1])
            if not (through.startswith(before) and text.startswith(through)):
                raise ChatTemplateError(
                    "the chat template renders a conversation's start differently from the whole conversation, so its "
                    "assistant turns cannot be told apart; set chat.train_on_prompt=true to train on every token"
                )
            spans.append((len(before), len(through)))
        return spans

    def encode(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> EncodedChat:
        text = self.render(messages, add_generation_prompt)
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        spans = self._assistant_spans(messages, text)
        assistant = [any(start <= begin < stop for start, stop in spans) for begin, _ in encoding.offsets]
        return EncodedChat(list(encoding.ids), assistant)

    def _turn_end_ids(self) -> set[int]:
        """The special tokens an assistant turn closes with, from rendering a probe turn."""
        probe = [{"role": USER, "content": "?"}, {"role": ASSISTANT, "content": "!"}]
        try:
            before, through = self.render(probe[:1], True), self.render(probe)
        except Exception:  # a template that refuses the probe: EOS alone ends a turn
            return set()
        tail = through[len(before) :].split("!", 1)[-1]
        special = {token_id for token_id, token in self.tokenizer.get_added_tokens_decoder().items() if token.special}
        return {
            token_id for token_id in self.tokenizer.encode(tail, add_special_tokens=False).ids if token_id in special
        }


def hf_chat_template_source(directory: Path) -> str | None:
    """The template of a Hugging Face tokenizer directory: ``chat_template.jinja`` (what
    transformers 5 saves), else ``tokenizer_config.json``'s ``chat_template`` (a string, or
    a list of named templates: the one named "default")."""
    if (directory / CHAT_TEMPLATE_FILE).is_file():
        return (directory / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")
    config_path = directory / "tokenizer_config.json"
    template = json.loads(config_path.read_text()).get("chat_template") if config_path.is_file() else None
    if isinstance(template, list):
        template = next((entry["template"] for entry in template if entry.get("name") == "default"), None)
    return template


def check_messages(messages: Any) -> str | None:
    """Why ``messages`` is not a conversation this module renders, or None."""
    if not isinstance(messages, list) or not messages:
        return 'no "messages" list (or "prompt" and "completion" strings)'
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return f'message {index} is not an object with a "role"'
        if message["role"] not in ROLES:
            return f"message {index} has role {message['role']!r}; roles are {', '.join(ROLES)}"
        if not isinstance(message.get("content"), str) or not message["content"].strip():
            return f'message {index} ({message["role"]}) has empty or missing "content"'
    return None


def load_chat_template(files: TokenizerFiles | HFTokenizerFiles) -> ChatTemplate:
    """The chat template of a tokenizer: a Hugging Face tokenizer's own, else ours."""
    if isinstance(files, TokenizerFiles):
        return DefaultChatTemplate(files.processor(), files.model_path)
    from tokenizers import Tokenizer

    directory = files.model_path.parent
    source = hf_chat_template_source(directory)
    if source is None:
        raise ChatTemplateError(
            f"{directory}: the tokenizer has no chat_template (tokenizer_config.json or {CHAT_TEMPLATE_FILE}); "
            "add the one the model was trained with"
        )
    variables = {key: value for key, value in special_token_strings(directory).items() if value is not None}
    return JinjaChatTemplate(source, Tokenizer.from_file(str(files.model_path)), variables, files.special_tokens.eos_id)


def record_messages(record: Any, answer_key: str | None = "completion") -> list[Message] | str:
    """The conversation of a JSON record: its "messages", else its "prompt" as a user message
    (followed by its ``answer_key`` field as the assistant's answer, when one is named); or
    why it has none."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    answered = answer_key is None or isinstance(record.get(answer_key), str)
    if "messages" not in record and isinstance(record.get("prompt"), str) and answered:
        messages: Any = [{"role": USER, "content": record["prompt"]}]
        if answer_key is not None:
            messages.append({"role": ASSISTANT, "content": record[answer_key]})
    else:
        messages = record.get("messages")
    problem = check_messages(messages)
    return problem if problem is not None else messages
