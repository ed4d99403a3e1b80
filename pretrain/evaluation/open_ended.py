"""Open-ended tasks: complete each prompt, then score the completions against references
with ROUGE-1/2/L/Lsum (F-measure, 0–1, the rouge-score package) and corpus BLEU (0–100,
sacrebleu). ROUGE-Lsum treats lines as sentences: write multi-sentence texts one sentence
per line ("\\n"), since splitting them would need nltk data that is not downloaded here.
rouge-score's tokenizer keeps ASCII letters and digits only. With the task's ``chat: true``
the prompt (a user message, or the record's "messages") is answered as the assistant, with the
tokenizer's chat template (docs/sft.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from data_pipeline.formats.jsonl import read_jsonl
from data_pipeline.progress import progress_bar
from data_pipeline.tokenizer.chat_template import Message
from pretrain.evaluation.contamination import clean_metrics
from pretrain.evaluation.tasks import TaskConfig
from pretrain.generation.generator import Generator
from pretrain.generation.prompts import conversation_of
from pretrain.inference.tokenizer import StartToken, TextTokenizer
from pretrain.model.gpt import GPT

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@dataclass(frozen=True)
class Reference:
    prompt: str | list[Message]  # chat: the conversation the answer continues
    references: tuple[str, ...]


def read_references(path: str, chat: bool = False) -> list[Reference]:
    items = []
    for number, record in read_jsonl(path):
        references = record.get("references", [record["reference"]] if "reference" in record else None)
        prompt = conversation_of(record, f"{path}:{number}") if chat else record.get("prompt")
        if not isinstance(prompt, (str, list)) or not isinstance(references, list) or not references:
            raise ValueError(
                f'{path}:{number}: a record needs "prompt" and "reference" (a string) or "references" (a list)'
            )
        if not all(isinstance(reference, str) for reference in references):
            raise ValueError(f"{path}:{number}: references must be strings")
        items.append(Reference(prompt, tuple(references)))
    if not items:
        raise ValueError(f"{path}: no prompts")
    return items


def rouge_and_bleu(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean ROUGE F-measures (against the best-matching reference) and corpus BLEU."""
    import sacrebleu
    from rouge_score import rouge_scorer, tokenizers

    # An explicit tokenizer: the default one announces itself on stderr.
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=tokenizers.DefaultTokenizer())
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, refs in zip(predictions, references):
        scores = scorer.score_multi(list(refs), prediction)
        for rouge_type in ROUGE_TYPES:
            totals[rouge_type] += scores[rouge_type].fmeasure
    metrics = {rouge_type: total / len(predictions) for rouge_type, total in totals.items()}
    # sacrebleu wants one list per reference slot; examples with fewer references leave None.
    slots = max(len(refs) for refs in references)
    streams = [[refs[slot] if slot < len(refs) else None for refs in references] for slot in range(slots)]
    metrics["bleu"] = sacrebleu.corpus_bleu(list(predictions), streams).score
    return metrics


def open_ended(
    model: GPT,
    tokenizer: TextTokenizer,
    task: TaskConfig,
    batch_size: int,
    start_token: StartToken,
    clean: Optional[Sequence[bool]] = None,
) -> dict[str, float]:
    items = read_references(task.path, task.chat)[: task.limit]
    generator = Generator(model, tokenizer, task.generation, start_token, chat=task.chat)
    predictions: list[str] = []
    for first in progress_bar(range(0, len(items), batch_size), desc=task.label, unit="batch", leave=False):
        predictions += generator.complete([item.prompt for item in items[first : first + batch_size]])
    # A completion usually starts with the space after the prompt: not part of the answer.
    predictions = [prediction.strip() for prediction in predictions]
    metrics = scores(predictions, [item.references for item in items])
    if clean is not None:  # the items with no n-gram in the training data
        metrics.update(clean_metrics(scores, clean, predictions, [item.references for item in items]))
    return metrics


def scores(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    return {**rouge_and_bleu(predictions, references), "examples": float(len(predictions))}
