"""How the bundled chat set was made (run once by the maintainers; users never need it).

    python data_pipeline/sample_chat/make_chat.py data_pipeline/sample_chat/chat.jsonl

Question-and-answer conversations about made-up towns (names and facts invented here, no
third-party text), written from templates with a fixed seed: single questions, follow-ups
in the same conversation, a system message now and then, and some records in the
{"prompt", "completion"} form. Small enough that the SFT recipe of docs/sft.md trains on it
in a few CPU minutes, regular enough that a tiny model visibly learns to answer.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

TOWNS = {
    "Velmora": ("the Ashen", "green", "plum bread", 3),
    "Karsk": ("the Dolen", "red", "smoked trout", 7),
    "Ilsbury": ("the Wend", "blue", "barley soup", 2),
    "Tornhall": ("the Brisk", "grey", "honey cakes", 5),
    "Quenby": ("the Lark", "yellow", "pepper stew", 4),
    "Odrin": ("the Marrow", "black", "salted figs", 6),
    "Pellath": ("the Sable", "white", "onion pie", 4),
    "Rusk": ("the Tamber", "brown", "goat cheese", 8),
    "Sarnow": ("the Vell", "orange", "walnut tart", 9),
    "Dunmere": ("the Orle", "purple", "fish dumplings", 2),
}
NUMBERS = "zero one two three four five six seven eight nine".split()
# (question templates, answer template) per fact; {town} and the fact's value fill them in.
FACTS = {
    "river": (["Which river runs through {town}?", "What river flows past {town}?"], "The river of {town} is {value}."),
    "roofs": (
        ["What colour are the roofs in {town}?", "Which colour are the roofs of {town}?"],
        "The roofs in {town} are {value}.",
    ),
    "food": (["What food is {town} known for?", "What should I eat in {town}?"], "{town} is known for its {value}."),
    "bridges": (
        ["How many bridges does {town} have?", "How many bridges cross the river in {town}?"],
        "{town} has {value} bridges.",
    ),
}
SYSTEM = ["You are a helpful guide to the towns of the valley.", "Answer in one short sentence."]


def exchange(rng: random.Random, town: str) -> tuple[str, str]:
    fact = rng.choice(list(FACTS))
    river, roofs, food, bridges = TOWNS[town]
    value = {"river": river, "roofs": roofs, "food": food, "bridges": NUMBERS[bridges]}[fact]
    questions, answer = FACTS[fact]
    return rng.choice(questions).format(town=town), answer.format(town=town, value=value)


def conversation(rng: random.Random) -> dict:
    town = rng.choice(list(TOWNS))
    if rng.random() < 0.15:
        question, answer = exchange(rng, town)
        return {"prompt": question, "completion": answer}
    messages = [{"role": "system", "content": rng.choice(SYSTEM)}] if rng.random() < 0.25 else []
    for _ in range(rng.choice((1, 1, 2, 3))):
        question, answer = exchange(rng, rng.choice((town, town, rng.choice(list(TOWNS)))))
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"messages": messages}


def main(output: Path, count: int = 240) -> None:
    rng = random.Random(0)
    with open(output, "w", encoding="utf-8") as stream:
        for index in range(count):
            stream.write(json.dumps({"id": f"chat-{index:04d}", **conversation(rng)}) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
