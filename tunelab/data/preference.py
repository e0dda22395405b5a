"""Alignment data: preference pairs, unpaired (KTO) examples and prompt-only (PPO) rows.

Accepted rows (after ``data.columns`` renames):

* preference: ``prompt`` + ``chosen`` + ``rejected`` where each is a string or a message list
  (``chosen``/``rejected`` then hold the assistant turn(s)); or ``chosen``/``rejected`` as full
  conversations that share their prompt turns (no ``prompt`` key): the shared prefix is the
  prompt. An optional numeric ``margin`` is kept for the reward model.
* unpaired: ``prompt`` + ``completion`` + ``label`` (true = desirable).
* prompt: ``prompt`` (string or messages) or ``messages`` ending with a user turn.

Each prompt is rendered with the same template as SFT (the model's chat template, alpaca, qa)
up to the assistant header; a completion is rendered as the assistant turn up to and including
EOS, so an aligned model stops where the SFT model stops. Bad rows (chosen identical to
rejected, an empty side, a prompt longer than ``data.max_prompt_length``) are a ``DataError``
naming the file and line, or counted rejects with ``data.skip_invalid``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config import DataArgs
from tunelab.errors import DataError

Messages = list[dict[str, str]]


@dataclass
class PreferenceItem:
    """One tokenized pair: the shared prompt and two completions (each ending with EOS)."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    margin: float = 0.0
    ref_chosen: float | None = None  # filled by precompute_reference
    ref_rejected: float | None = None


@dataclass
class UnpairedItem:
    """One tokenized KTO example."""

    prompt_ids: list[int]
    completion_ids: list[int]
    label: bool
    ref: float | None = None  # filled by precompute_reference


@dataclass
class PromptItem:
    """One PPO prompt: token ids and the plain prompt text (for rule-based rewards)."""

    prompt_ids: list[int]
    text: str


@dataclass
class Reject:
    source: str
    reason: str


@dataclass
class AlignData:
    """Train/validation items of one alignment dataset and what was dropped."""

    train: list[Any]
    validation: list[Any]
    rejects: list[Reject] = field(default_factory=list)
    truncated: int = 0

    def report(self, kind: str) -> dict[str, Any]:
        return {
            "format": kind,
            "train_items": len(self.train),
            "validation_items": len(self.validation),
            "rejected_rows": len(self.rejects),
            "truncated_completions": self.truncated,
            "reject_examples": [asdict(r) for r in self.rejects[:5]],
        }


# --------------------------------------------------------------------------- reading


def read_rows(path: str | Path) -> list[tuple[str, dict]]:
    """Rows of a .jsonl or .json file as ``(file:line, row)``.

    Raises:
        DataError: missing file, invalid JSON (with its line), a row that is not an object.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file not found: {p}\n  fix: set data.path to a .jsonl or .json file")
    if p.suffix == ".json":
        try:
            rows = json.loads(p.read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"{p}:{err.lineno}: invalid JSON ({err.msg})") from None
        if not isinstance(rows, list):
            raise DataError(f"{p}: a .json dataset must be a list of objects")
        out = [(f"{p}[{i}]", r) for i, r in enumerate(rows)]
    elif p.suffix == ".jsonl":
        out = []
        for n, line in enumerate(p.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                out.append((f"{p}:{n}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise DataError(f"{p}:{n}: invalid JSON ({err.msg})") from None
    else:
        raise DataError(f"{p}: alignment data must be .jsonl or .json (got '{p.suffix}')")
    for where, row in out:
        if not isinstance(row, dict):
            raise DataError(f"{where}: each row must be a JSON object")
    return out


def _rename(row: dict, columns: dict[str, str]) -> dict:
    return {**row, **{ours: row[theirs] for ours, theirs in columns.items() if theirs in row}}


# --------------------------------------------------------------------------- rendering


class RowError(ValueError):
    """A problem with one row; becomes a DataError (with file:line) or a counted reject."""


def as_messages(value: Any, role: str, what: str) -> Messages:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise RowError(f"'{what}' must be a string or a list of {{role, content}} messages")


def _assistant_text(value: Any, what: str) -> str:
    msgs = as_messages(value, "assistant", what)
    if msgs[-1]["role"] != "assistant":
        raise RowError(f"'{what}' must end with an assistant message")
    text = msgs[-1]["content"]
    if not isinstance(text, str) or not text.strip():
        raise RowError(f"'{what}' is empty")
    return text


def _split_conversations(chosen: Messages, rejected: Messages) -> tuple[Messages, str, str]:
    """Shared prompt turns of two full conversations and their differing final assistant turns."""
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise RowError("'chosen' and 'rejected' conversations must end with an assistant message")
    if chosen[:-1] != rejected[:-1]:
        raise RowError("'chosen' and 'rejected' conversations must share every turn but the last")
    return chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]


def _plain_prompt(messages: Messages) -> str:
    return "\n\n".join(m["content"] for m in messages if m["role"] != "assistant")


PLAIN_TEMPLATES: dict[str, str] = {
    "alpaca": "### Instruction:\n{prompt}\n\n### Response:\n",
    "qa": "### Question:\n{prompt}\n\n### Answer:\n",
}


@dataclass
class Renderer:
    """Renders prompts and completions with the SFT templates and tokenizes them."""

    tokenizer: Any
    args: DataArgs

    def prompt_text(self, messages: Messages) -> str:
        if self.args.template == "chat":
            if self.args.system_prompt and messages[0]["role"] != "system":
                messages = [{"role": "system", "content": self.args.system_prompt}, *messages]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if self.args.template in PLAIN_TEMPLATES:
            return PLAIN_TEMPLATES[self.args.template].format(prompt=_plain_prompt(messages))
        from jinja2 import Template

        return Template(Path(self.args.template).read_text()).render(messages=messages, add_generation_prompt=True)

    def completion_text(self, prompt: Messages, text: str) -> str:
        """The assistant turn as the template renders it, ending right after EOS."""
        eos = self.tokenizer.eos_token
        if self.args.template == "chat":
            full = self.tokenizer.apply_chat_template(
                [*prompt, {"role": "assistant", "content": text}], tokenize=False
            )
            head = self.prompt_text(prompt)
            rendered = full[len(head) :] if full.startswith(head) else text + eos
            cut = rendered.rfind(eos)
            return rendered[: cut + len(eos)] if cut >= 0 else rendered + eos
        return text + eos

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def prompt_ids(self, messages: Messages) -> list[int]:
        ids = self.ids(self.prompt_text(messages))
        if len(ids) > self.args.max_prompt_length:
            raise RowError(f"prompt has {len(ids)} tokens > data.max_prompt_length={self.args.max_prompt_length}")
        return ids

    def completion_ids(self, prompt: Messages, text: str, prompt_len: int) -> tuple[list[int], bool]:
        """Completion tokens cut to fit ``max_length`` with the prompt; returns ``(ids, truncated)``."""
        ids = self.ids(self.completion_text(prompt, text))
        room = max(self.args.max_length - prompt_len, 1)
        return ids[:room], len(ids) > room


# --------------------------------------------------------------------------- row parsers


def _prompt_messages(row: dict) -> Messages:
    if "prompt" in row:
        msgs = as_messages(row["prompt"], "user", "prompt")
    elif "messages" in row:
        msgs = as_messages(row["messages"], "user", "messages")
        if msgs and msgs[-1]["role"] == "assistant":
            msgs = msgs[:-1]
    else:
        raise RowError("needs a 'prompt' (or 'messages') field")
    if not msgs or not any(str(m["content"]).strip() for m in msgs):
        raise RowError("'prompt' is empty")
    return msgs


def parse_preference(row: dict, r: Renderer) -> tuple[PreferenceItem, bool]:
    for key in ("chosen", "rejected"):
        if key not in row:
            raise RowError(f"missing '{key}' (preference rows need prompt, chosen, rejected)")
    if "prompt" not in row and isinstance(row["chosen"], list) and isinstance(row["rejected"], list):
        prompt, chosen, rejected = _split_conversations(
            as_messages(row["chosen"], "assistant", "chosen"), as_messages(row["rejected"], "assistant", "rejected")
        )
        if not prompt:
            raise RowError("conversations have no prompt turns before the final assistant message")
    else:
        prompt = _prompt_messages(row)
        chosen, rejected = _assistant_text(row["chosen"], "chosen"), _assistant_text(row["rejected"], "rejected")
    if not chosen.strip() or not rejected.strip():
        raise RowError("'chosen' or 'rejected' is empty")
    if chosen.strip() == rejected.strip():
        raise RowError("'chosen' is identical to 'rejected'; a pair must differ")
    pids = r.prompt_ids(prompt)
    cids, cut_c = r.completion_ids(prompt, chosen, len(pids))
    rids, cut_r = r.completion_ids(prompt, rejected, len(pids))
    margin = row.get("margin", 0.0)
    if not isinstance(margin, int | float):
        raise RowError(f"'margin' must be a number (got {margin!r})")
    return PreferenceItem(pids, cids, rids, float(margin)), cut_c or cut_r


def parse_unpaired(row: dict, r: Renderer) -> tuple[UnpairedItem, bool]:
    if "completion" not in row or "label" not in row:
        raise RowError("unpaired rows need prompt, completion and label (true/false)")
    if not isinstance(row["label"], bool):
        raise RowError(f"'label' must be true or false (got {row['label']!r})")
    prompt = _prompt_messages(row)
    text = _assistant_text(row["completion"], "completion")
    pids = r.prompt_ids(prompt)
    cids, cut = r.completion_ids(prompt, text, len(pids))
    return UnpairedItem(pids, cids, row["label"]), cut


def parse_prompt(row: dict, r: Renderer) -> tuple[PromptItem, bool]:
    prompt = _prompt_messages(row)
    return PromptItem(r.prompt_ids(prompt), _plain_prompt(prompt)), False


PARSERS: dict[str, Callable[[dict, Renderer], tuple[Any, bool]]] = {
    "preference": parse_preference,
    "unpaired": parse_unpaired,
    "prompt": parse_prompt,
}


def _parse_file(path: str, kind: str, r: Renderer) -> tuple[list[Any], list[Reject], int]:
    items, rejects, truncated = [], [], 0
    for where, row in read_rows(path):
        try:
            item, cut = PARSERS[kind](_rename(row, r.args.columns), r)
        except RowError as err:
            if not r.args.skip_invalid:
                raise DataError(
                    f"{where}: {err}\n  fix: correct the row, or set data.skip_invalid=true to drop bad rows"
                ) from None
            rejects.append(Reject(where, str(err)))
            continue
        items.append(item)
        truncated += cut
    return items, rejects, truncated


def load_alignment_data(args: DataArgs, tokenizer, kind: str) -> AlignData:
    """Read, render, tokenize and split ``args.path`` as ``kind`` (preference, unpaired or prompt).

    Raises:
        DataError: no path, an unreadable file or a bad row (unless ``skip_invalid``).
    """
    if args.path is None:
        raise DataError(f"data.path is not set; {kind} data is needed (see examples/data/)")
    r = Renderer(tokenizer, args)
    items, rejects, truncated = _parse_file(args.path, kind, r)
    if args.validation_path:
        val, more, cut = _parse_file(args.validation_path, kind, r)
        rejects, truncated = rejects + more, truncated + cut
        train = items
    else:
        order = list(range(len(items)))
        random.Random(args.seed).shuffle(order)
        n_val = int(round(len(items) * args.validation_split)) if len(items) > 1 else 0
        val = [items[i] for i in order[:n_val]]
        train = [items[i] for i in order[n_val:]]
    return AlignData(train, val, rejects, truncated)


def write_rejects(data: AlignData, run_dir: Path) -> None:
    """``<run>/rejects.jsonl``: one line per dropped row with its source and reason."""
    if data.rejects:
        lines = [json.dumps(asdict(r)) for r in data.rejects]
        (Path(run_dir) / "rejects.jsonl").write_text("\n".join(lines) + "\n")
