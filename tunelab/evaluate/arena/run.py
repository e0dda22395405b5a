"""``tunelab arena run``: answers from K models, every pair judged, ratings and their intervals.

Steps: read the prompts; generate each model's answers in batches (one model in memory at a
time, answers cached in ``answers.jsonl`` by the model's key and the generation settings, so a
re-run or a new judge reuses them); build every ``K (K − 1) / 2`` pair per prompt; ask the judge;
turn judgments into battles (:func:`~tunelab.evaluate.arena.judges.battles_from`); rate them
(:mod:`~tunelab.evaluate.arena.ratings`) and write the report files into the output folder:

``answers.jsonl``, ``judgments.jsonl``, ``leaderboard.txt`` / ``leaderboard.json``,
``winrate.txt`` / ``winrate.csv`` and ``ratings.png``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np

from tunelab.errors import ConfigError, DataError
from tunelab.evaluate.arena.judges import (
    Judge,
    JudgeReport,
    Pair,
    battles_from,
    judge_report,
    open_judge,
    vote_judgment,
)
from tunelab.evaluate.arena.ratings import Rating, leaderboard, win_rates
from tunelab.evaluate.arena.report import leaderboard_table, plot_ratings, winrate_csv, winrate_table
from tunelab.infer.types import SamplingParams

Progress = Callable[[Sequence, str], Sequence]  # (items, description) -> the same items, iterated with progress


@dataclass(frozen=True)
class Prompt:
    id: str
    prompt: str
    system: str | None = None

    def conversation(self) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return [*head, {"role": "user", "content": self.prompt}]


def read_prompts(path: str | Path) -> list[Prompt]:
    """Prompts from a ``.txt`` file (one per non-empty line) or rows with ``prompt`` [``id``, ``system``].

    Raises:
        DataError: a missing file, or a row without a ``prompt`` string (names ``file:line``).
    """
    path = Path(path)
    if path.suffix.lower() == ".txt":
        if not path.is_file():
            raise DataError(f"--prompts {path}: file not found\n  fix: check the path")
        lines = [(n, t.strip()) for n, t in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if t.strip()]
        prompts = [Prompt(f"p{n}", text) for n, text in lines]
    else:
        from tunelab.data.readers import read_raw

        prompts = []
        for row in read_raw(path):
            data = row.data or {}
            if row.error or not isinstance(data.get("prompt"), str) or not data["prompt"].strip():
                raise DataError(
                    f"{row.source} line {row.line}: {row.error or 'needs a non-empty prompt string'}\n"
                    '  fix: one JSON object per line: {"prompt": "...", "id": "...", "system": "..."}'
                )
            prompts.append(Prompt(str(data.get("id", f"p{row.line}")), data["prompt"], data.get("system") or None))
    ids = [p.id for p in prompts]
    if not prompts:
        raise DataError(f"--prompts {path}: no prompts\n  fix: one prompt per line (.txt) or per JSON line")
    if len(set(ids)) != len(ids):
        raise DataError(f"--prompts {path}: duplicate prompt ids\n  fix: give every row a unique 'id'")
    return prompts


@dataclass(frozen=True)
class Answer:
    model: str
    key: str
    prompt_id: str
    prompt: str
    system: str | None
    answer: str
    settings: dict = field(default_factory=dict)


def read_answers(path: Path) -> list[Answer]:
    if not path.is_file():
        return []
    return [Answer(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def generate_answers(
    specs: Sequence[str],
    prompts: Sequence[Prompt],
    params: SamplingParams,
    *,
    batch_size: int,
    cached: Sequence[Answer] = (),
    progress: Progress | None = None,
) -> list[Answer]:
    """Every model's answer to every prompt; answers already in ``cached`` (same key, prompt, settings) are reused."""
    from tunelab.evaluate.models import open_model

    settings = {"max_new_tokens": params.max_new_tokens, "temperature": params.temperature, "seed": params.seed}
    reuse = {(a.key, a.prompt_id, a.prompt, a.system, json.dumps(a.settings, sort_keys=True)): a for a in cached}
    models = [open_model(s, batch_size=batch_size) for s in specs]
    names = _unique_names([m.name for m in models])
    out: list[Answer] = []
    for model, name in zip(models, names, strict=True):

        def cache_key(p: Prompt, key: str = model.key) -> tuple:
            return key, p.id, p.prompt, p.system, json.dumps(settings, sort_keys=True)

        todo = [p for p in prompts if cache_key(p) not in reuse]
        chunks = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
        texts: dict[str, str] = {}
        try:
            for chunk in progress(chunks, f"answers {name}") if progress and chunks else chunks:
                replies = model.generate([p.conversation() for p in chunk], params)
                texts.update({p.id: r for p, r in zip(chunk, replies, strict=True)})
        finally:
            model.close()  # one model's weights in memory at a time
        for p in prompts:
            text = texts[p.id] if p.id in texts else reuse[cache_key(p)].answer
            out.append(Answer(name, model.key, p.id, p.prompt, p.system, text, settings))
    return out


def make_pairs(answers: Sequence[Answer]) -> list[Pair]:
    """Every pair of models on every prompt (models in their order of appearance)."""
    by_prompt: dict[str, list[Answer]] = {}
    for a in answers:
        by_prompt.setdefault(a.prompt_id, []).append(a)
    return [
        Pair(x.prompt_id, x.prompt, x.model, x.answer, y.model, y.answer, x.system)
        for rows in by_prompt.values()
        for x, y in combinations(rows, 2)
    ]


@dataclass
class ArenaResult:
    models: list[str]
    ratings: list[Rating]
    rates: np.ndarray
    report: JudgeReport
    out: Path

    def summary(self) -> str:
        return (
            f"{leaderboard_table(self.ratings)}\nwin rate of the row model against the column model "
            f"(ties count 1/2):\n{winrate_table(self.models, self.rates)}\n{self.report.line()}\n"
        )


def rate_and_write(
    models: list[str],
    judgments: list,
    judge: Judge,
    out: Path,
    *,
    rounds: int,
    seed: int,
    anchor: str | None,
) -> ArenaResult:
    """Ratings of ``judgments`` and every report file in ``out``."""
    battles = battles_from(judgments, judge.per_vote)
    ratings = leaderboard(battles, models, rounds=rounds, seed=seed, anchor=anchor)
    rates = win_rates(battles, models)
    report = judge_report(judge.name, judgments)
    result = ArenaResult(models, ratings, rates, report, out)
    _write_lines(out / "judgments.jsonl", [asdict(j) for j in judgments])
    (out / "leaderboard.txt").write_text(result.summary(), encoding="utf-8")
    (out / "winrate.txt").write_text(winrate_table(models, rates), encoding="utf-8")
    (out / "winrate.csv").write_text(winrate_csv(models, rates), encoding="utf-8")
    payload = {
        "judge": asdict(report),
        "battles": len(battles),
        "bootstrap_rounds": rounds,
        "seed": seed,
        "anchor": anchor,
        "ratings": [asdict(r) for r in ratings],
        "win_rates": {
            m: {n: (None if np.isnan(rates[i, j]) else float(rates[i, j])) for j, n in enumerate(models)}
            for i, m in enumerate(models)
        },
    }
    (out / "leaderboard.json").write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    plot_ratings(ratings, out / "ratings.png", title=f"Bradley–Terry ratings, judge {judge.name}")
    return result


def _write_lines(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def run_arena(
    specs: Sequence[str],
    prompts_file: str | Path,
    judge_spec: str,
    out: str | Path,
    *,
    params: SamplingParams | None = None,
    batch_size: int = 8,
    rounds: int = 1000,
    seed: int = 0,
    anchor: str | None = None,
    progress: Progress | None = None,
) -> ArenaResult:
    """The whole ``tunelab arena run``; see the module docstring."""
    if len(specs) < 2:
        raise ConfigError("--models: an arena needs at least two models\n  fix: --models A B [C ...]")
    out = Path(out)
    prompts = read_prompts(prompts_file)
    params = params or SamplingParams(max_new_tokens=256)
    judge = open_judge(judge_spec, batch_size=batch_size)  # a bad --judge fails before any generation
    out.mkdir(parents=True, exist_ok=True)  # only once the inputs are known to be good
    try:
        answers = generate_answers(
            specs, prompts, params, batch_size=batch_size, cached=read_answers(out / "answers.jsonl"), progress=progress
        )
        _write_lines(out / "answers.jsonl", [asdict(a) for a in answers])
        models = list(dict.fromkeys(a.model for a in answers))
        if anchor is not None and anchor not in models:
            raise ConfigError(
                f"--anchor {anchor}: not one of the models ({', '.join(models)})\n"
                "  fix: name one of them or leave --anchor out (mean rating 1000)"
            )
        pairs = make_pairs(answers)
        per_call = max(1, batch_size // 2)  # an LLM judge asks both orders of each pair
        chunks = [pairs[i : i + per_call] for i in range(0, len(pairs), per_call)]
        judgments = []
        for chunk in progress(chunks, f"judging ({judge.name})") if progress else chunks:
            judgments.extend(judge.judge(chunk))
    finally:
        judge.close()
    return rate_and_write(models, judgments, judge, out, rounds=rounds, seed=seed, anchor=anchor)


def rate_votes(db: str | Path, *, rounds: int = 1000, seed: int = 0) -> tuple[list[Rating], JudgeReport]:
    """Ratings of every vote stored in ``db`` (each vote a battle) and the voters' position report."""
    from tunelab.evaluate.arena.store import VoteStore

    name = f"human:{Path(db).name}"
    judgments = [vote_judgment(v, name) for v in VoteStore(db).votes()]
    battles = battles_from(judgments, per_vote=True)
    return leaderboard(battles, rounds=rounds, seed=seed), judge_report(name, judgments)
