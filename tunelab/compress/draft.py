"""Draft models for speculative decoding, built from the target itself: depth-prune, distill, measure.

Papers: speculative decoding (Leviathan et al., 2023, arXiv:2211.17192; Chen et al., 2023,
arXiv:2302.01318); DistillSpec (Zhou et al., 2024, arXiv:2310.08461: a draft distilled on the
target's *own* generations agrees with it far more often than one trained on a fixed corpus);
depth pruning by angular distance (Gromov et al., 2024; ShortGPT, Men et al., 2024).

Intuition: a draft is only as good as how often its next token equals the target's. A copy of the
target with most of its layers dropped shares the tokenizer, the embeddings and the chat
template for free, so it starts close; distilling it on exactly the text the target produces
(its greedy answers to a prompt set) teaches it the target's habits in the domain where it will
be used. Greedy speculative decoding then keeps only the target's argmax tokens, so the output is
identical to the target alone, only faster when the draft is cheap and usually right.

Steps (:func:`build_draft`): (1) the target answers the training prompts greedily (batched);
(2) its layers are scored by angular distance on those prompts + answers and the least useful
ones dropped (:mod:`tunelab.compress.prune`); (3) the pruned model is distilled from the target on
the answers through the one training loop (``method: distill``, top-k teacher cache), over the
token ids its served head keeps (both distributions restricted to them, so training sees what
serving uses and the head costs a fraction of its FLOPs); (4) its
run-time recipe is saved (:mod:`tunelab.infer.drafting`: an output head of the target's most
frequent answer tokens, int8 weights, confidence-gated drafting on the lean runner), because on a
CPU a draft step must cost a small fraction of a target step; (5) on held-out prompts of the same
set, plain greedy decoding and greedy speculative decoding with the draft as served are timed one
after the other, their outputs compared token for token, and the acceptance rate (accepted /
drafted tokens) reported.

Checked by: ``tests/compress/test_draft.py`` (end to end on tiny: identical outputs, acceptance
counted as the verifier accepts); numbers on the bundled model from ``bench/draft.py``.
"""

from __future__ import annotations

import copy
import json
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.errors import ConfigError, DataError, ServeError

if TYPE_CHECKING:
    from tunelab.infer.drafting import DraftRuntime

DEFAULT_PROMPTS = "examples/data/draft_prompts.jsonl"  # a preset path (tunelab/presets/...)
PROMPT_KEYS = ("prompt", "instruction", "question")


@dataclass
class DraftOptions:
    """How to build and measure a draft (the CLI's flags)."""

    layers: int | None = None  # decoder layers the draft keeps
    keep: float | None = None  # or: the fraction of the target's layers it keeps
    prompts: str | None = None  # jsonl (prompt / instruction / question / messages) or .txt, one per line
    held_out: float = 0.1  # fraction of the prompts kept for measuring
    max_prompts: int | None = None  # use at most this many prompts (before the split)
    gen_tokens: int = 64  # longest target answer generated for training
    gen_batch: int = 32  # prompts answered at once (two bench/draft.py builds: 138 tokens/s at 128 rows, 79 at 32)
    steps: int = 150  # optimizer steps of the distillation
    minutes: float | None = None  # or: a time budget for it (training.max_minutes; the LR schedule follows it)
    batch_size: int = 4  # packed rows of max_length tokens per step
    max_length: int = 256
    learning_rate: float = 5e-4
    loss: str = "forward_kl"
    alpha: float = 0.5  # weight of the cross-entropy on the target's own tokens
    top_k: int = 32
    num_draft: int = 8  # most tokens drafted per target forward
    min_confidence: float = 0.6  # the draft stops at a token it gives less probability (0: always num_draft)
    head_tokens: int = 8192  # the draft's output head keeps the target's most frequent tokens (0: all)
    quantize: str = "int8"  # the draft's linear layers at run time: int8 (dynamic, CPU) or none
    eval_prompts: int = 12
    eval_tokens: int = 64
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        """Refuse values no build can use, naming the CLI flag (the Python API gets the same checks)."""
        at_least_one = {
            "--gen-tokens": self.gen_tokens,
            "--gen-batch": self.gen_batch,
            "--steps": self.steps,
            "--batch-size": self.batch_size,
            "--max-length": self.max_length,
            "--top-k": self.top_k,
            "--num-draft": self.num_draft,
            "--eval-prompts": self.eval_prompts,
            "--eval-tokens": self.eval_tokens,
        }
        problems = [f"{flag} {value}: must be at least 1" for flag, value in at_least_one.items() if value < 1]
        if self.head_tokens < 0:
            problems.append(f"--head-tokens {self.head_tokens}: must be 0 (all) or more")
        if not 0 < self.held_out < 1:
            problems.append(f"held_out {self.held_out}: must be between 0 and 1")
        if self.minutes is not None and self.minutes <= 0:
            problems.append(f"--minutes {self.minutes}: must be more than 0")
        if self.learning_rate <= 0:
            problems.append(f"--lr {self.learning_rate}: must be more than 0")
        if problems:
            raise ConfigError("draft options: " + "; ".join(problems) + ".\n  fix: pass values in those ranges")
        from tunelab.infer.drafting import DraftRuntime

        DraftRuntime([], self.quantize, self.num_draft, self.min_confidence)  # its own checks: quantize, confidence

    def kept_layers(self, total: int) -> int:
        """Decoder layers of the draft, from ``layers`` or ``keep`` (default: a quarter, at least 1)."""
        if self.layers is not None and self.keep is not None:
            raise ConfigError("--layers and --keep both given.\n  fix: pass one of them")
        n = self.layers if self.layers is not None else round(total * (self.keep if self.keep is not None else 0.25))
        if not 1 <= n < total:
            raise ConfigError(
                f"--layers/--keep: a draft of {n} layers from a target of {total}.\n"
                f"  fix: keep between 1 and {total - 1} layers"
            )
        return n


@dataclass
class SpeedReport:
    """Plain greedy vs greedy speculative decoding with the draft, on the same prompts."""

    prompts: int
    new_tokens: int
    target_s: float
    speculative_s: float
    drafted: int
    accepted: int
    identical: bool
    num_draft: int
    coverage: float = 1.0  # fraction of the target's measured tokens the draft's head can propose

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def speedup(self) -> float:
        return self.target_s / self.speculative_s if self.speculative_s > 0 else 0.0


@dataclass
class DraftReport:
    target: str
    out: str
    target_layers: int
    draft_layers: int
    dropped_layers: list[int]
    layer_scores: list[float]
    target_params: int
    draft_params: int
    train_prompts: int
    generated_tokens: int
    runtime: dict[str, Any]  # how the draft runs (tunelab.infer.drafting.DraftRuntime, without its token ids)
    distill: dict[str, Any]
    speed: SpeedReport
    stage_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["speed"].update(acceptance_rate=self.speed.acceptance_rate, speedup=self.speed.speedup)
        return data


# --------------------------------------------------------------------------- prompts


def read_prompts(path: str | Path) -> list[str]:
    """Prompts of a ``.txt`` file (one per line) or of any data file tunelab reads (jsonl, json, csv,
    parquet, a saved dataset): ``prompt`` / ``instruction`` (+ ``input``) / ``question`` / the first
    user turn of ``messages``.

    Raises:
        DataError: naming the file and line of a row without a prompt.
    """
    from tunelab.data.readers import read_raw

    path = Path(path)
    if path.suffix == ".txt" and path.is_file():
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = []
    for row in read_raw(path):
        text = _prompt_of(row.data) if row.data is not None else None
        if not text:
            why = row.error or f"no prompt (looked for {', '.join(PROMPT_KEYS)} or a user turn in messages)"
            raise DataError(f'{row.source}:{row.line}: {why}.\n  fix: write rows like {{"prompt": "..."}}')
        prompts.append(text)
    return prompts


def _prompt_of(row: Any) -> str | None:
    if not isinstance(row, dict):
        return None
    for key in PROMPT_KEYS:
        if isinstance(row.get(key), str) and row[key].strip():
            extra = row.get("input") if key == "instruction" else None
            return f"{row[key]}\n\n{extra}" if isinstance(extra, str) and extra.strip() else row[key]
    turns = row.get("messages")
    if isinstance(turns, list):
        return next((t.get("content") for t in turns if isinstance(t, dict) and t.get("role") == "user"), None)
    return None


def split_prompts(prompts: Sequence[str], options: DraftOptions) -> tuple[list[str], list[str]]:
    """Seeded ``(train, held_out)`` split; at most ``eval_prompts`` held out are measured."""
    order = list(dict.fromkeys(prompts))  # duplicates would leak into the held-out set
    random.Random(options.seed).shuffle(order)
    if options.max_prompts:
        order = order[: options.max_prompts]
    n_held = max(1, round(len(order) * options.held_out))
    if len(order) - n_held < 2:
        raise DataError(f"only {len(order)} distinct prompts.\n  fix: pass a --prompts file with more prompts")
    return order[n_held:], order[:n_held][: options.eval_prompts]


def render(tokenizer, prompt: str) -> list[int]:
    """Token ids of ``prompt`` as a user turn ready for the answer (the chat template), or the plain text."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt)["input_ids"])


# --------------------------------------------------------------------------- steps


def target_answers(
    model, tokenizer, prompts: Sequence[str], options: DraftOptions, log: Callable[[str], None] = print
) -> list[tuple[str, list[int]]]:
    """The target's greedy answers ``(text, token ids)`` to ``prompts``, generated in batches."""
    from tunelab.infer.batch import generate_batch
    from tunelab.infer.types import SamplingParams

    params = SamplingParams(max_new_tokens=options.gen_tokens, temperature=0.0)
    # similar lengths share a batch: less padding
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: dict[int, tuple[str, list[int]]] = {}
    for start in range(0, len(order), options.gen_batch):
        chunk = order[start : start + options.gen_batch]
        for i, result in zip(
            chunk, generate_batch(model, tokenizer, [render(tokenizer, prompts[i]) for i in chunk], params), strict=True
        ):
            results[i] = (result.text, list(result.tokens))
        log(f"  answered {len(results)}/{len(prompts)} prompts")
    return [results[i] for i in range(len(prompts))]


SCORE_ROWS = 64  # rows the layer scores are computed on: enough for a stable ranking, a fraction of the data


def prune_to(model, tokenizer, rows: list[list[int]], layers: int) -> tuple[Any, list[int], list[float]]:
    """A copy of ``model`` keeping its ``layers`` most useful decoder layers (angular distance on the
    first :data:`SCORE_ROWS` of ``rows``: a target forward over all the answers would cost minutes)."""
    import torch

    rows = rows[:SCORE_ROWS]
    from tunelab.compress.prune import decoder_layers, drop_layers, layer_scores, lowest

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = []
    for start in range(0, len(rows), 8):
        chunk = rows[start : start + 8]
        width = max(len(r) for r in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for b, row in enumerate(chunk):
            ids[b, : len(row)] = torch.tensor(row)
            mask[b, : len(row)] = 1
        batches.append({"input_ids": ids, "attention_mask": mask})
    scores = layer_scores(model, batches)
    drop = lowest(scores, len(decoder_layers(model)) - layers)
    draft = drop_layers(copy.deepcopy(model), drop)
    return draft, drop, scores


def distill_config(
    student: Path, teacher: str, data: Path, runs: Path, options: DraftOptions, vocab: Sequence[int] = ()
):
    """The ``method: distill`` run that trains the pruned draft on the target's answers; with ``vocab``
    (the ids its served head keeps) on those ids only, as it will be served (a fraction of the head's FLOPs)."""
    from tunelab.config import load_config

    tree = {
        "method": "distill",
        "name": "draft-distill",
        "output_dir": str(runs),
        "model": {"name": str(student)},
        "adapter": {"type": "full"},
        "data": {
            "path": str(data),
            "format": "messages",
            "template": "chat",
            "max_length": options.max_length,
            "validation_split": 0.05,
            "seed": options.seed,
        },
        "method_args": {
            "teacher": teacher,
            "loss": options.loss,
            "alpha": options.alpha,
            "teacher_logits": "cache",
            "top_k": options.top_k,
            "vocab": list(vocab) or None,
        },
        "training": {
            "max_steps": options.steps,
            "max_minutes": options.minutes,
            "micro_batch_size": options.batch_size,
            "learning_rate": options.learning_rate,
            "warmup_steps": max(1, min(options.steps // 20, 10)),  # (steps may be a cap for --minutes)
            "lr_scheduler": "cosine",
            "eval_every": 0,
            "save_every": 0,
            "log_every": 10,
            "seed": options.seed,
            "device": options.device,
        },
    }
    return load_config(None, base=tree)


def measure_speed(target, draft, tokenizer, prompts: Sequence[str], options: DraftOptions) -> SpeedReport:
    """Time greedy decoding of ``prompts`` with the target alone and with the draft speculating.

    Each prompt runs both ways back to back, so machine load affects both alike; which goes first
    alternates from prompt to prompt, so a machine speeding up or slowing down over a pair favours
    neither. The outputs must be token-identical (the greedy acceptance rule keeps only the target's
    argmax).
    """
    from tunelab.infer.decode import Generator
    from tunelab.infer.drafting import coverage
    from tunelab.infer.types import SamplingParams, Speculation

    params = SamplingParams(max_new_tokens=options.eval_tokens, temperature=0.0)
    spec = Speculation(kind="draft", num_tokens=options.num_draft)
    plain = Generator(target, tokenizer)
    speculative = Generator(target, tokenizer, draft_model=draft)
    ids = [render(tokenizer, p) for p in prompts]
    plain.generate(ids[0], SamplingParams(max_new_tokens=2))  # warm-up: first-call allocations
    speculative.generate(ids[0], SamplingParams(max_new_tokens=4), speculation=spec)
    report = SpeedReport(len(ids), 0, 0.0, 0.0, 0, 0, True, options.num_draft)
    outputs: list[list[int]] = []
    for i, prompt in enumerate(ids):
        ways = (
            partial(plain.generate, prompt, params),
            partial(speculative.generate, prompt, params, speculation=spec),
        )
        runs = {j: _timed(ways[j]) for j in ((0, 1) if i % 2 == 0 else (1, 0))}
        (base, plain_s), (fast, speculative_s) = runs[0], runs[1]
        report.target_s += plain_s
        report.speculative_s += speculative_s
        report.new_tokens += len(base.tokens)
        report.drafted += fast.timings.drafted
        report.accepted += fast.timings.accepted
        report.identical = report.identical and base.tokens == fast.tokens
        outputs.append(list(base.tokens))
    vocab = getattr(draft, "draft_vocab", None)
    report.coverage = coverage(outputs, vocab.tolist()) if vocab is not None else 1.0
    return report


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    """``call()``'s result and the seconds it took."""
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def load_target(target: str, device: str):
    """``(model, tokenizer)`` in fp32: a run is merged first (its trained chat template kept)."""
    from tunelab.config import ModelArgs
    from tunelab.models.load import load_model

    if (Path(target) / "config.yaml").is_file():
        from tunelab.models.merge import load_merged

        merged = load_merged(Path(target))
        return merged.model.eval(), merged.tokenizer
    model, tokenizer = load_model(ModelArgs(name=target, dtype="fp32"), device=device)
    return model.eval(), tokenizer


def _save(model, tokenizer, folder: Path) -> None:
    from tunelab.models.merge import MergedRun, eos_token_ids, save_hf_folder

    save_hf_folder(MergedRun(model, tokenizer, None, eos_token_ids(tokenizer, model.generation_config)), folder)


def build_draft(
    target: str,
    out: str | Path,
    options: DraftOptions | None = None,
    *,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> DraftReport:
    """Build a draft for ``target`` into ``out`` (a Hugging Face folder + ``draft.json``) and measure it.

    Raises:
        ServeError: speculative greedy output differed from the target's (it never should).
    """
    from tunelab.compress.prune import decoder_layers
    from tunelab.infer.drafting import prepare_draft
    from tunelab.presets import preset_path
    from tunelab.train.loop import train
    from tunelab.utils.fsio import atomic_folder, check_writable

    options = options or DraftOptions()
    out = Path(out)
    check_writable(out, overwrite)
    clock: dict[str, float] = {}
    tick = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal tick
        now = time.perf_counter()
        clock[name] = round(now - tick, 1)
        tick = now

    model, tokenizer = load_target(target, options.device)
    total = len(decoder_layers(model))
    keep = options.kept_layers(total)
    prompts = read_prompts(options.prompts or preset_path(DEFAULT_PROMPTS))
    train_prompts, eval_prompts = split_prompts(prompts, options)
    log(
        f"target {target}: {total} layers; draft keeps {keep}; {len(train_prompts)} training prompts, "
        f"{len(eval_prompts)} held out"
    )
    answers = target_answers(model, tokenizer, train_prompts, options, log)
    lap("generate")
    n_tokens = sum(len(t) for _, t in answers)
    log(f"target answered {len(answers)} prompts ({n_tokens} tokens) in {clock['generate']:.0f} s")
    pairs = [(p, a) for p, (a, _) in zip(train_prompts, answers, strict=True) if a.strip()]
    if len(pairs) < 2:
        raise DataError(f"the target gave {len(pairs)} non-empty answers.\n  fix: pass more --prompts or --gen-tokens")
    with atomic_folder(out, overwrite) as tmp, tempfile.TemporaryDirectory(dir=tmp.parent) as work_dir:
        work = Path(work_dir)
        data = tmp / "generations.jsonl"
        data.write_text(
            "".join(
                json.dumps({"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a}]}) + "\n"
                for p, a in pairs
            ),
            encoding="utf-8",
        )
        rows = [render(tokenizer, p) + tokenizer(a, add_special_tokens=False)["input_ids"] for p, a in pairs]
        draft, dropped, scores = prune_to(model, tokenizer, rows, keep)
        _save(draft, tokenizer, work / "pruned")
        del draft
        lap("prune")
        log(f"dropped layers {dropped} (lowest angular distance)")
        teacher = str(Path(target).resolve()) if Path(target).exists() else target
        runtime = draft_runtime([t for _, t in answers], tokenizer, model, options)
        result = train(distill_config(work / "pruned", teacher, data, work / "runs", options, runtime.vocab))
        lap("distill")
        log(f"distilled {result.steps} steps in {clock['distill']:.0f} s: {_fmt(result.val)}")
        draft = result.model.eval()
        draft.config.use_cache = True  # training turned it off; a saved draft generates with its cache
        _save(draft, tokenizer, tmp)
        draft_params = _params(draft)
        runtime.save(tmp)
        draft = prepare_draft(draft, runtime)
        speed = measure_speed(model, draft, tokenizer, eval_prompts, options)
        lap("measure")
        report = DraftReport(
            target=target,
            out=str(out),
            target_layers=total,
            draft_layers=keep,
            dropped_layers=dropped,
            layer_scores=[round(s, 6) for s in scores],
            target_params=_params(model),
            draft_params=draft_params,
            train_prompts=len(pairs),
            generated_tokens=n_tokens,
            runtime={**{k: v for k, v in asdict(runtime).items() if k != "vocab"}, "head_tokens": len(runtime.vocab)},
            distill={"steps": result.steps, "wall_s": round(result.wall_s, 1), "val": result.val},
            speed=speed,
            stage_s=clock,
        )
        (tmp / "draft.json").write_text(json.dumps(report.to_dict(), indent=2, default=str))
    if not speed.identical:
        raise ServeError(
            f"greedy speculative decoding with the draft in {out} did not reproduce the target's tokens "
            "(draft.json has the measurements).\n"
            "  fix: this is a bug (the greedy acceptance rule keeps only the target's argmax); please report it"
        )
    return report


def draft_runtime(answers: Sequence[Sequence[int]], tokenizer, model, options: DraftOptions) -> DraftRuntime:
    """How the draft runs: its head keeps the ``head_tokens`` most frequent tokens of the target's answers
    (and every end-of-turn id), its weights quantized per ``quantize``, drafting per ``num_draft`` and
    ``min_confidence``."""
    from tunelab.infer.decode import eos_token_ids
    from tunelab.infer.drafting import DraftRuntime, frequent_tokens

    vocab = (
        frequent_tokens(answers, options.head_tokens, eos_token_ids(model, tokenizer)) if options.head_tokens else []
    )
    if len(vocab) >= model.get_output_embeddings().weight.shape[0]:
        vocab = []  # as large as the full head: keep it
    return DraftRuntime(vocab, options.quantize, options.num_draft, options.min_confidence)


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in values.items())
