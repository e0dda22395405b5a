"""Deterministic instruction and preference data with realistic length variation (for benchmarks).

Real instruction sets (Alpaca, OpenHermes, UltraChat) have answers from a few words to several
hundred tokens with a long right tail; padding waste and packing gains depend on exactly that
spread, so a benchmark on equal-length rows would flatter padding. The answers here are drawn
from a log-normal word count (median ~50 words, clipped to 2..330 words, i.e. about 3 to 450
SmolLM2 tokens), written from a small vocabulary of English sentences so the tokenizer sees
ordinary text. Same seed, same rows.

``python bench/instruct_data.py OUT_DIR [N]`` writes ``sft.jsonl`` (``messages``) and
``dpo.jsonl`` (``prompt`` / ``chosen`` / ``rejected``).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

TOPICS = [
    "photosynthesis", "the water cycle", "compound interest", "binary search", "the French Revolution",
    "plate tectonics", "vaccines", "black holes", "supply and demand", "recursion", "the immune system",
    "climate models", "public key cryptography", "the printing press", "sourdough bread", "jazz harmony",
    "tidal energy", "the Roman road network", "garbage collection", "coral reefs",
]  # fmt: skip
ASKS = [
    "Explain {t} in one sentence.",
    "What is {t}?",
    "Give me a short summary of {t}.",
    "Write a detailed explanation of {t} for a curious high school student.",
    "List the key ideas behind {t} and explain each of them.",
    "I am preparing a talk about {t}. Can you write a thorough overview with examples?",
    "Compare {t} with a related idea and say when each matters.",
    "Why does {t} matter in everyday life?",
]
SUBJECTS = ["It", "This process", "The idea", "In practice it", "A simple way to see it:", "Historically it"]
VERBS = ["depends on", "builds on", "changes", "explains", "connects", "limits", "drives", "shapes"]
OBJECTS = [
    "how energy moves through a system", "the choices people make under uncertainty", "small steps repeated many times",
    "the balance between cost and benefit", "patterns that appear at every scale", "the way information is stored",
    "what we can measure directly", "the rules that keep things stable", "feedback between cause and effect",
    "the trade-off between speed and accuracy",
]  # fmt: skip
TAILS = ["", " over time", " in most cases", " when conditions change", " for that reason", " as a result"]


def _sentence(rng: random.Random) -> str:
    return f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(TAILS)}."


def answer(rng: random.Random, topic: str, words: int) -> str:
    """An answer of about ``words`` words (at least the first sentence's)."""
    if words <= 4:
        return f"{topic.capitalize()}, briefly."[: max(3, words * 8)]
    out = [f"{topic.capitalize()} is a good example of this."]
    count = len(out[0].split())
    while count < words:
        paragraph = " ".join(_sentence(rng) for _ in range(rng.randint(2, 5)))
        out.append(paragraph)
        count += len(paragraph.split())
    return "\n\n".join(out)


def answer_words(rng: random.Random) -> int:
    return max(2, min(330, int(rng.lognormvariate(3.9, 0.9))))


def sft_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        topic = rng.choice(TOPICS)
        ask = rng.choice(ASKS).format(t=topic)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": ask},
                    {"role": "assistant", "content": answer(rng, topic, answer_words(rng))},
                ]
            }
        )
    return rows


def dpo_rows(n: int, seed: int = 1) -> list[dict]:
    """Pairs: the chosen answer addresses the topic; the rejected one drifts to another topic
    and has its own length (so chosen and rejected lengths vary independently)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        topic = rng.choice(TOPICS)
        other = rng.choice([t for t in TOPICS if t != topic])
        rows.append(
            {
                "prompt": rng.choice(ASKS).format(t=topic),
                "chosen": answer(rng, topic, answer_words(rng)),
                "rejected": answer(rng, other, answer_words(rng)),
            }
        )
    return rows


def write(out_dir: Path, n: int) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    sft, dpo = out_dir / "sft.jsonl", out_dir / "dpo.jsonl"
    sft.write_text("".join(json.dumps(r) + "\n" for r in sft_rows(n)))
    dpo.write_text("".join(json.dumps(r) + "\n" for r in dpo_rows(n)))
    return sft, dpo


if __name__ == "__main__":
    write(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 256)
