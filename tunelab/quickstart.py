"""The quickstart: teach the bundled SmolLM2-135M-Instruct a fixed answer format with QLoRA.

It measures format adherence on held-out prompts the model never trains on, before and after
a few minutes of QLoRA SFT on 2 CPU cores, so the user sees a real, measured change:
``Answer: <text>`` on the first line and ``Confidence: high|medium|low`` on the second, and
nothing else.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.config import RunConfig, load_config

FORMAT = re.compile(r"^Answer: [^\n]+\nConfidence: (high|medium|low)$")


def follows_format(text: str) -> bool:
    """True when ``text`` is exactly the two-line quickstart format."""
    return FORMAT.match(text.strip()) is not None


@dataclass
class FormatScore:
    passed: int
    total: int
    answers: list[str] = field(default_factory=list)


def examples_dir() -> Path:
    """The bundled examples: package data, so a wheel install finds them as a checkout does."""
    from tunelab.presets.bundled_examples import examples_root

    return examples_root()


def eval_prompts(examples: Path) -> list[str]:
    rows = (examples / "data" / "quickstart_eval.jsonl").read_text().splitlines()
    return [json.loads(r)["prompt"] for r in rows if r.strip()]


def score_format(model, tokenizer, prompts: list[str], max_new_tokens: int = 32, label: str = "") -> FormatScore:
    """Greedy answers (KV cache on) with the model's chat template; count format adherence."""
    import torch

    from tunelab.train.progress import track_items

    answers = []
    for prompt in track_items(prompts, f"answering held-out prompts {label}"):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            out = model.generate(
                **ids,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                use_cache=True,
                pad_token_id=tokenizer.pad_token_id,
            )
        answers.append(tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    return FormatScore(sum(follows_format(a) for a in answers), len(answers), answers)


@dataclass
class QuickstartResult:
    before: FormatScore
    after: FormatScore
    run_dir: Path
    wall_s: float
    train_wall_s: float
    tokens_per_s: float
    suite_run: object = None  #: the examples/eval/quickstart.yaml run (tunelab.evaluate.runner.SuiteRun)


def suite_path() -> Path:
    """The quickstart's task as a test suite (``tunelab eval suite`` runs it on any model)."""
    return examples_dir() / "eval" / "quickstart.yaml"


def suite_scores(models: list[str]):
    """Run the quickstart suite on ``models`` (batched, cached) → ``(SuiteRun, [FormatScore per model])``."""
    from tunelab.evaluate.models import open_model
    from tunelab.evaluate.runner import run_suite
    from tunelab.evaluate.suite import load_suite

    run = run_suite(load_suite(suite_path()), [open_model(m, batch_size=16) for m in models])  # one batch each
    scores = [FormatScore(m.passed_count, len(m.cases), [c.samples[0].answer for c in m.cases]) for m in run.models]
    return run, scores


def quickstart_config(overrides: list[str] | None = None) -> RunConfig:
    examples = examples_dir()
    config = load_config(examples / "quickstart.yaml", overrides)
    if not Path(config.data.path).is_absolute():
        config.data.path = str(examples.parent / config.data.path)
    if config.name is None:
        config.name = "quickstart-" + time.strftime("%Y%m%d-%H%M%S")
    return config


def run_quickstart(overrides: list[str] | None = None) -> QuickstartResult:
    """Measure → train → measure. Returns the before/after scores and where the run is.

    Before and after are the quickstart suite (examples/eval/quickstart.yaml: the 10 held-out
    prompts, the format regex) on the base model and on the run, answered in batches and cached.
    """
    from tunelab.train.loop import train

    start = time.time()
    config = quickstart_config(overrides)
    result = train(config)
    run, (before, after) = suite_scores([config.model.name, str(result.run_dir)])
    return QuickstartResult(
        before, after, Path(result.run_dir), time.time() - start, result.wall_s, result.tokens_per_s, run
    )
