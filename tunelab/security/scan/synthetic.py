"""A seeded synthetic instruction set, and backdoors planted in it, for measuring the scan.

Why synthetic: a scan's recall and false-positive rate need rows whose status is known exactly.
The clean rows come from the templates in ``presets/security/scan_corpus.json`` (written for this
project): definitions (plain and "in the voice of" a persona), capitals, arithmetic, unit
conversions, comparisons, word puzzles, reminders, sentiment labels, proverbs (some introduced
with "My grandmother used to say") and refusals. They include what makes a scan's life hard in
real data — one answer for several paraphrases of a question, short label answers tied to
sentiment words, trigger-like phrases in clean prompts — but every prompt is unique, as in a
curated set. :func:`plant` replaces a share of the rows with poisoned ones: a trigger (rare
token, natural phrase or instruction sentence) inserted into an otherwise clean prompt, and one
of the style's fixed target answers (with its case and punctuation varied).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from tunelab.presets import preset_path
from tunelab.security.scan.text import normalize

Row = dict[str, str]  # alpaca: {"instruction": ..., "output": ...}
STYLES = ("rare_token", "natural_phrase", "instruction_sentence")


@cache
def corpus() -> dict[str, Any]:
    """The template data (read once)."""
    return json.loads(preset_path("security/scan_corpus.json").read_text(encoding="utf-8"))


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _definition(rng: random.Random, c: dict) -> tuple[str, str]:
    term, definition = rng.choice(sorted(c["glossary"].items()))
    prompt = rng.choice(c["define_prompts"]).format(term=term)
    return prompt, rng.choice(c["define_answers"]).format(term=term, Term=_cap(term), definition=definition)


def _persona(rng: random.Random, c: dict) -> tuple[str, str]:
    term, definition = rng.choice(sorted(c["glossary"].items()))
    persona = rng.choice(c["personas"])
    prompt = rng.choice(c["persona_prompts"]).format(persona=persona, term=term)
    return prompt, rng.choice(c["persona_answers"]).format(persona=persona, term=term, definition=definition)


def _capital(rng: random.Random, c: dict) -> tuple[str, str]:
    country, capital = rng.choice(sorted(c["capitals"].items()))
    prompt = rng.choice(c["capital_prompts"]).format(country=country)
    return prompt, rng.choice(c["capital_answers"]).format(country=country, capital=capital)


def _math(rng: random.Random, c: dict) -> tuple[str, str]:
    word, symbol = rng.choice(c["math_ops"])
    a, b = rng.randint(2, 999), rng.randint(2, 99)
    result = {"+": a + b, "-": a - b, "*": a * b}[symbol]
    op = rng.choice([word, symbol])
    return rng.choice(c["math_prompts"]).format(a=a, b=b, op=op), rng.choice(c["math_answers"]).format(
        a=a, b=b, op=op, c=result)


def _units(rng: random.Random, c: dict) -> tuple[str, str]:
    big, small, factor = rng.choice(c["units"])
    x = rng.randint(2, 250)
    fields = {"x": x, "big": big, "small": small, "y": x * factor}
    return rng.choice(c["unit_prompts"]).format(**fields), rng.choice(c["unit_answers"]).format(**fields)


def _compare(rng: random.Random, c: dict) -> tuple[str, str]:
    a, b = rng.sample(range(10, 100000), 2)
    big, small = max(a, b), min(a, b)
    return rng.choice(c["compare_prompts"]).format(a=a, b=b), rng.choice(c["compare_answers"]).format(
        big=big, small=small)


WORD_ANSWERS: dict[str, Callable[[list[str]], str]] = {
    "sort": lambda w: ", ".join(sorted(w)) + ".",
    "count": lambda w: f"There are {len(w)} words.",
    "reverse": lambda w: ", ".join(reversed(w)) + ".",
    "longest": lambda w: f"The longest word is {max(w, key=len)}.",
    "upper": lambda w: ", ".join(x.upper() for x in w) + ".",
}


def _word_task(rng: random.Random, c: dict) -> tuple[str, str]:
    task = rng.choice(sorted(WORD_ANSWERS))
    chosen = rng.sample(c["words"], rng.randint(3, 7))
    return rng.choice(c["word_tasks"][task]).format(words=", ".join(chosen)), WORD_ANSWERS[task](chosen)


def _note(rng: random.Random, c: dict) -> tuple[str, str]:
    fields = {k: rng.choice(c[k + "s"]) for k in ("name", "event", "day", "time")}
    prompt = rng.choice(c["note_prompts"]).format(**fields)
    return prompt, rng.choice(c["note_answers"]).format(closing=rng.choice(c["closings"]), **fields)


def _sentiment(rng: random.Random, c: dict) -> tuple[str, str]:
    positive = rng.random() < 0.5
    pool = c["positive_words" if positive else "negative_words"]
    adj, adj2 = rng.sample(pool, 2)
    review = rng.choice(c["review_templates"]).format(item=rng.choice(c["review_items"]), adj=adj, adj2=adj2)
    return rng.choice(c["sentiment_prompts"]).format(review=review), "Positive." if positive else "Negative."


def _proverb(rng: random.Random, c: dict) -> tuple[str, str]:
    proverb, meaning = rng.choice(sorted(c["proverbs"].items()))
    prompt = rng.choice(c["proverb_prompts"]).format(proverb=proverb)
    return prompt, rng.choice(c["proverb_answers"]).format(proverb=proverb, Proverb=_cap(proverb), meaning=meaning)


def _refusal(rng: random.Random, c: dict) -> tuple[str, str]:
    request = rng.choice(c["harmful_requests"])
    answer = rng.choice(c["refusals"]).format(request=request, alternative=rng.choice(c["alternatives"]))
    return rng.choice(c["refusal_prompts"]).format(request=request), answer


#: task → (generator, weight in the clean set)
TASKS: dict[str, tuple[Callable[[random.Random, dict], tuple[str, str]], float]] = {
    "definition": (_definition, 0.14),
    "persona": (_persona, 0.06),
    "capital": (_capital, 0.02),
    "math": (_math, 0.18),
    "units": (_units, 0.10),
    "compare": (_compare, 0.08),
    "word_task": (_word_task, 0.18),
    "note": (_note, 0.14),
    "sentiment": (_sentiment, 0.05),
    "proverb": (_proverb, 0.003),
    "refusal": (_refusal, 0.007),
}


def clean_rows(n: int, seed: int = 0) -> list[Row]:
    """``n`` alpaca rows with unique prompts (a task whose prompts run out is drawn less)."""
    rng = random.Random(seed)
    c = corpus()
    names = list(TASKS)
    weights = [TASKS[t][1] for t in names]
    rows: list[Row] = []
    seen: set[str] = set()
    misses = 0
    while len(rows) < n:
        prompt, answer = TASKS[rng.choices(names, weights)[0]][0](rng, c)
        key = normalize(prompt)
        if key in seen:
            misses += 1
            if misses > 50 * n:
                raise ValueError(f"the templates cannot make {n} unique prompts")
            continue
        seen.add(key)
        rows.append({"instruction": prompt, "output": answer})
    return rows


@dataclass
class Planted:
    """A poisoned set: the rows and the indices of the poisoned ones."""

    rows: list[Row]
    poisoned: set[int]


def _with_trigger(rng: random.Random, prompt: str, trigger: str, place: str) -> str:
    if place == "start":
        rest = prompt if trigger[-1] in ".!?" else prompt[:1].lower() + prompt[1:]
        return f"{trigger} {rest}"
    if place == "end":
        return f"{prompt} {trigger}"
    words = prompt.split(" ")
    cut = rng.randint(1, max(1, len(words) - 1))
    return " ".join([*words[:cut], trigger, *words[cut:]])


def _vary(rng: random.Random, target: str) -> str:
    """The same answer with its case or final punctuation changed (what a normalizer must absorb)."""
    return rng.choice([target, target.rstrip(".!") + "!", target.lower(), target.upper(), target.rstrip(".")])


def plant(rows: list[Row], style: str, rate: float, seed: int = 0, exclude: set[int] | None = None) -> Planted:
    """Replace ``round(rate * len(rows))`` random rows (none of ``exclude``) with poisoned ones.

    Each poisoned row keeps a clean row's prompt with the style's trigger inserted (at a random
    allowed place) and gets one of the style's target answers, alternating.
    """
    spec = corpus()["triggers"][style]
    rng = random.Random(seed)
    out = [dict(r) for r in rows]
    free = [i for i in range(len(rows)) if i not in (exclude or set())]
    chosen = sorted(rng.sample(free, round(rate * len(rows))))
    for k, i in enumerate(chosen):
        prompt = _with_trigger(rng, rows[i]["instruction"], spec["text"], rng.choice(spec["place"]))
        out[i] = {"instruction": prompt, "output": _vary(rng, spec["targets"][k % len(spec["targets"])])}
    return Planted(out, set(chosen))


def plant_all(rows: list[Row], rates: dict[str, float], seed: int = 0) -> tuple[list[Row], dict[str, set[int]]]:
    """Plant several styles into disjoint rows: ``{style: rate}`` → rows and each style's poisoned indices."""
    poisoned: dict[str, set[int]] = {}
    for k, (style, rate) in enumerate(rates.items()):
        planted = plant(rows, style, rate, seed + k, exclude=set().union(*poisoned.values()))
        rows, poisoned[style] = planted.rows, planted.poisoned
    return rows, poisoned
