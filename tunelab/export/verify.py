"""``tunelab export --verify``: prove an export answers like the trained run.

The complaint this answers is "the exported model does not answer like the fine-tune": a lost
chat template, a wrong stop token, a broken conversion. Three checks, per export:

1. **Template and EOS.** Sample conversations are rendered with the run's tokenizer and with
   the export's (for a GGUF, the template stored in its metadata, and the Modelfile's Go
   TEMPLATE rendered by :mod:`tunelab.export.gotemplate`); the rendered texts and token ids must
   be equal, and every id the run stops on must be a stop id of the export (generation config,
   GGUF ``eos``/``eot`` ids, Modelfile stop strings). A mismatch is an error.
2. **Greedy agreement.** Each prompt is answered greedily by the run (base + adapter) and the
   export; agreement = matching positions / the longer answer, per prompt and overall.
3. **Logit distance.** With the run's answer teacher-forced, the largest absolute logit
   difference (for f16 this isolates the weight rounding; quantized exports report it too).

The report is written as ``verify.json`` into each verified export folder, before any error.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tunelab.data.chat_layout import TemplateError, render_jinja, sample_conversations
from tunelab.errors import ConfigError, DataError, ModelError
from tunelab.export.targets import Target, discover, load_reference, load_targets

DEFAULT_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers.",
    "Explain in one sentence what a fine-tuned model is.",
]


class ExportMismatchError(ModelError):
    """The export renders a different chat template or stops on different tokens than the run."""


@dataclass
class PromptAgreement:
    prompt: str
    reference_tokens: int
    export_tokens: int
    matching: int
    agreement: float  # matching positions / max(len(reference), len(export))
    first_mismatch: int | None
    reference_text: str
    export_text: str


@dataclass
class TargetReport:
    name: str
    kind: str
    path: str
    agreement: float = 0.0
    exact: int = 0  # prompts answered token-for-token identically
    max_logit_diff: float | None = None
    prompts: list[PromptAgreement] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class VerifyReport:
    run: str
    max_new_tokens: int
    reference_eos_ids: list[int]
    targets: list[TargetReport]

    @property
    def ok(self) -> bool:
        return not any(t.problems for t in self.targets)


def read_prompts(path: Path | None) -> list[str]:
    """Prompts from ``.txt`` (one per line) or ``.jsonl`` (``{"prompt": ...}`` per line); else the defaults."""
    if path is None:
        return list(DEFAULT_PROMPTS)
    if not path.is_file():
        raise DataError(f"--prompts {path}: file not found")
    prompts = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix != ".jsonl":
            prompts.append(line.strip())
            continue
        try:
            prompts.append(str(json.loads(line)["prompt"]))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(f'{path}:{n}: expected a JSON object with a "prompt" field ({err})') from None
    if not prompts:
        raise DataError(f"--prompts {path}: no prompts in the file")
    return prompts


def template_problems(reference: Target, target: Target) -> list[str]:
    """Differences between the run's and the export's chat template (Jinja and Modelfile) and EOS ids."""
    from tunelab.export.gotemplate import ollama_messages, render_go_template

    problems = []
    for i, (messages, gen) in enumerate(sample_conversations()):
        expected = render_jinja(reference.tokenizer, messages, gen)
        try:
            got = render_jinja(target.tokenizer, messages, gen)
        except TemplateError as err:
            got = f"<{err}>"
        if got != expected:
            problems.append(f"chat template differs on sample {i}: run renders {expected!r}, export {got!r}")
        elif _ids(reference.tokenizer, expected) != _ids(target.tokenizer, expected):
            problems.append(f"tokenizer differs on sample {i}: same text, different token ids")
        if target.go_template is not None and gen == (messages[-1]["role"] != "assistant"):
            go = render_go_template(target.go_template, ollama_messages(messages))
            bos = reference.tokenizer.bos_token or ""
            if go != expected and bos + go != expected:
                problems.append(f"Modelfile TEMPLATE differs on sample {i}: {go!r} vs {expected!r}")
    missing = [i for i in reference.eos_token_ids if i not in target.eos_token_ids]
    if target.go_template is not None:  # Ollama stops on strings
        missing = [i for i in missing if reference.tokenizer.convert_ids_to_tokens(i) not in target.stops]
    if missing:
        names = reference.tokenizer.convert_ids_to_tokens(missing)
        problems.append(
            f"EOS mismatch: the run stops on {missing} {names}, the export's stop ids are {target.eos_token_ids}"
            + (f" and stops {target.stops}" if target.go_template is not None else "")
        )
    return problems


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def agreement(prompt: str, ref: list[int], got: list[int], tokenizer) -> PromptAgreement:
    matching = sum(a == b for a, b in zip(ref, got, strict=False))
    longest = max(len(ref), len(got))
    first = next((i for i, (a, b) in enumerate(zip(ref, got, strict=False)) if a != b), None)
    if first is None and len(ref) != len(got):
        first = min(len(ref), len(got))
    return PromptAgreement(
        prompt, len(ref), len(got), matching, matching / longest if longest else 1.0, first,
        tokenizer.decode(ref), tokenizer.decode(got),
    )


def compare(reference: Target, target: Target, prompts: list[str], max_new_tokens: int,
            answers: dict[str, list[int]]) -> TargetReport:
    """Template/EOS checks, greedy agreement and the largest logit difference for one export."""
    report = TargetReport(target.name, target.kind, str(target.path), problems=template_problems(reference, target))
    max_diff = None
    for prompt in prompts:
        text = render_jinja(reference.tokenizer, [{"role": "user", "content": prompt}], True)
        prompt_ids = _ids(reference.tokenizer, text)
        ref = answers[prompt]
        got = target.generate(prompt_ids, max_new_tokens, reference.eos_token_ids)
        report.prompts.append(agreement(prompt, ref, got, reference.tokenizer))
        ref_logits, got_logits = reference.logits(prompt_ids + ref), target.logits(prompt_ids + ref)
        if got_logits is not None:
            diff = float((ref_logits - got_logits).abs().max())
            max_diff = diff if max_diff is None else max(max_diff, diff)
    total = sum(max(p.reference_tokens, p.export_tokens) for p in report.prompts)
    report.agreement = sum(p.matching for p in report.prompts) / total if total else 1.0
    report.exact = sum(p.agreement == 1.0 for p in report.prompts)
    report.max_logit_diff = max_diff
    return report


def _refuse_unmergeable(run_dir: Path) -> None:
    """No merged export exists for prompt/prefix tuning or LLaMA-Adapter: say so instead of "export hf first"."""
    from tunelab.models.merge import NOT_MERGEABLE, run_config

    kind = run_config(run_dir).adapter.type
    if kind in NOT_MERGEABLE:
        raise ConfigError(
            f"--verify compares merged exports (hf, gguf, bnb) with {run_dir}, but adapter.type={kind} cannot be "
            f"merged ({NOT_MERGEABLE[kind]}), so there is none; --format adapter is the run's own adapter, "
            "loaded exactly as trained.\n"
            f"  fix: leave out --verify; use the run unmerged: `tunelab chat {run_dir}` or `tunelab serve {run_dir}`"
        )


def verify(run_dir: str | Path, exports: list[Path], prompts_file: Path | None = None,
           max_new_tokens: int = 32) -> VerifyReport:
    """Compare the run with each export in ``exports`` (folders, .gguf files or ``RUN/export``).

    Raises:
        ExportMismatchError: a chat template or EOS mismatch (after writing ``verify.json``).
    """
    from tunelab.utils.quiet import quiet_third_party

    quiet_third_party()
    run_dir = Path(run_dir)
    _refuse_unmergeable(run_dir)
    prompts = read_prompts(prompts_file)
    targets = load_targets([t for path in exports for t in discover(Path(path))])
    reference = load_reference(run_dir)
    answers = {}
    for prompt in prompts:
        ids = _ids(reference.tokenizer, render_jinja(reference.tokenizer, [{"role": "user", "content": prompt}], True))
        answers[prompt] = reference.generate(ids, max_new_tokens, reference.eos_token_ids)
    report = VerifyReport(str(run_dir), max_new_tokens, reference.eos_token_ids,
                          [compare(reference, t, prompts, max_new_tokens, answers) for t in targets])
    for folder in {Path(t.path) if Path(t.path).is_dir() else Path(t.path).parent for t in report.targets}:
        (folder / "verify.json").write_text(json.dumps(asdict(report), indent=2))
    if not report.ok:
        lines = [f"{t.name}: {p}" for t in report.targets for p in t.problems]
        raise ExportMismatchError(
            "the export does not match the trained run:\n  " + "\n  ".join(lines)
            + "\n  fix: re-export with `tunelab export RUN --format ...` (the run's tokenizer, chat template and "
            "EOS are copied from RUN/adapter or RUN/model); see verify.json for the full report"
        )
    return report
