"""Alignment data: preference pairs, unpaired (KTO) examples and prompt-only (PPO) rows.

Accepted rows (after ``data.columns`` renames):

* preference: ``prompt`` + ``chosen`` + ``rejected`` where each is a string or a message list
  (``chosen``/``rejected`` then hold the assistant turn(s)); or ``chosen``/``rejected`` as full
  conversations that share their prompt turns (no ``prompt`` key): the shared prefix is the
  prompt. An optional numeric ``margin`` is kept for the reward model.
* unpaired: ``prompt`` + ``completion`` + ``label`` (true = desirable).
* prompt: ``prompt`` (string or messages) or ``messages`` ending with a user turn.

Files are read by the data layer's :func:`~tunelab.data.readers.read_raw` (jsonl, json, csv,
parquet, saved HF dataset folders). A CSV has no types, so there ``label`` may be the text
``true``/``false`` and ``margin`` a number written as text.

Rendering is the data layer's too (:func:`~tunelab.data.templates.render_segments`, the same
call SFT makes): a prompt is the conversation rendered up to the assistant header, and a
completion is exactly the trained tokens of the final assistant turn — the answer and the
template's own turn terminator (EOS, or e.g. ``<|im_end|>``), each segment tokenized on its own
as SFT tokenizes it. So an aligned model learns to stop on the very tokens the SFT model learned
to stop on. Bad rows (chosen identical to rejected, an empty side, a prompt longer than
``data.max_prompt_length``, an unreadable line) are a ``DataError`` naming ``file:line``, or
counted rejects written to ``rejects.jsonl`` with ``data.skip_invalid``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config import DataArgs
from tunelab.data.formats import RowError as FieldError
from tunelab.data.formats import apply_columns
from tunelab.data.prepare import write_rejects as write_reject_file
from tunelab.data.readers import read_raw
from tunelab.data.templates import Template, get_template, render_segments
from tunelab.data.tokenize import split_indices, tokenize_segments
from tunelab.data.types import Example, RawRow, Reject, Segment
from tunelab.errors import DataError

Messages = list[dict[str, str]]


@dataclass
class PreferenceItem:
    """One tokenized pair: the shared prompt and two completions (each ending with the turn terminator)."""

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
            "reject_examples": [{"file": r.file, "line": r.line, "error": r.error} for r in self.rejects[:5]],
        }


# --------------------------------------------------------------------------- row values


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


LABEL_TEXT = {"true": True, "false": False}  # a CSV cell has no boolean type


def _label(value: Any) -> bool:
    if isinstance(value, str) and value.strip().lower() in LABEL_TEXT:
        return LABEL_TEXT[value.strip().lower()]
    if not isinstance(value, bool):
        raise RowError(f"'label' must be true or false (got {value!r})")
    return value


def _margin(value: Any) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0.0  # an empty CSV cell or a parquet null: no margin
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, int | float):
        raise RowError(f"'margin' must be a number (got {value!r})")
    return float(value)


# --------------------------------------------------------------------------- rendering


def final_turn(segments: list[Segment]) -> list[Segment]:
    """The trained segments of the last assistant turn: the answer and its terminator.

    Untrained text after the terminator (ChatML's newline) is dropped, as is everything before
    the answer (the prompt, earlier turns).
    """
    end = len(segments)
    while end and not segments[end - 1].trained:
        end -= 1
    start = end
    while start and segments[start - 1].trained:
        start -= 1
    return segments[start:end]


@dataclass
class Renderer:
    """Renders prompts and completions with the SFT templates and tokenizes them as SFT does."""

    tokenizer: Any
    args: DataArgs
    template: Template = field(init=False)

    def __post_init__(self) -> None:
        self.template = get_template(self.args.template, self.tokenizer)

    def segments(self, messages: Messages) -> list[Segment]:
        example = Example(messages, None, "", 0)
        return render_segments(example, self.tokenizer, self.template, self.args.system_prompt)

    def ids(self, segments: list[Segment]) -> list[int]:
        return tokenize_segments(segments, self.tokenizer)[0]

    def prompt_ids(self, messages: Messages, limit: bool = True) -> list[int]:
        """The prompt up to and including the assistant header; over ``max_prompt_length`` is a RowError."""
        ids = self.ids(self.segments(messages))
        if limit and len(ids) > self.args.max_prompt_length:
            raise RowError(f"prompt has {len(ids)} tokens > data.max_prompt_length={self.args.max_prompt_length}")
        return ids

    def completion_ids(self, prompt: Messages, text: str) -> list[int]:
        """The tokens SFT trains for ``text`` as the assistant's answer to ``prompt`` (answer + terminator)."""
        return self.ids(final_turn(self.segments([*prompt, {"role": "assistant", "content": text}])))

    def fit(self, ids: list[int], prompt_len: int) -> tuple[list[int], bool]:
        """Completion tokens cut to fit ``max_length`` with the prompt; returns ``(ids, truncated)``."""
        room = max(self.args.max_length - prompt_len, 1)
        return ids[:room], len(ids) > room

    def encode(self, prompt: Messages, text: str) -> list[int]:
        """Prompt + completion tokens, uncut (for scoring)."""
        return self.prompt_ids(prompt, limit=False) + self.completion_ids(prompt, text)


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
    margin = _margin(row.get("margin"))
    pids = r.prompt_ids(prompt)
    cids, cut_c = r.fit(r.completion_ids(prompt, chosen), len(pids))
    rids, cut_r = r.fit(r.completion_ids(prompt, rejected), len(pids))
    return PreferenceItem(pids, cids, rids, margin), cut_c or cut_r


def parse_unpaired(row: dict, r: Renderer) -> tuple[UnpairedItem, bool]:
    if "completion" not in row or "label" not in row:
        raise RowError("unpaired rows need prompt, completion and label (true/false)")
    label = _label(row["label"])
    prompt = _prompt_messages(row)
    text = _assistant_text(row["completion"], "completion")
    pids = r.prompt_ids(prompt)
    cids, cut = r.fit(r.completion_ids(prompt, text), len(pids))
    return UnpairedItem(pids, cids, label), cut


def parse_prompt(row: dict, r: Renderer) -> tuple[PromptItem, bool]:
    prompt = _prompt_messages(row)
    return PromptItem(r.prompt_ids(prompt), _plain_prompt(prompt)), False


PARSERS: dict[str, Callable[[dict, Renderer], tuple[Any, bool]]] = {
    "preference": parse_preference,
    "unpaired": parse_unpaired,
    "prompt": parse_prompt,
}


def _parse_row(raw: RawRow, kind: str, r: Renderer) -> tuple[Any, bool]:
    if raw.data is None:  # a line the reader could not parse (malformed JSON, not an object)
        raise RowError(raw.error or "unreadable row")
    return PARSERS[kind](apply_columns(raw.data, r.args.columns), r)


def _parse_file(path: str, kind: str, r: Renderer) -> tuple[list[Any], list[Reject], int]:
    items, rejects, truncated = [], [], 0
    for raw in read_raw(path):
        try:
            item, cut = _parse_row(raw, kind, r)
        except (RowError, FieldError) as err:  # FieldError: the chat template refused the conversation
            if not r.args.skip_invalid:
                raise DataError(
                    f"{raw.source}:{raw.line}: {err}\n"
                    "  fix: correct the row, or set data.skip_invalid=true to drop bad rows"
                ) from None
            rejects.append(Reject(raw.source, raw.line, str(err), raw.raw))
            continue
        items.append(item)
        truncated += cut
    return items, rejects, truncated


def load_alignment_data(args: DataArgs, tokenizer, kind: str) -> AlignData:
    """Read, render, tokenize and split ``args.path`` as ``kind`` (preference, unpaired or prompt).

    Raises:
        DataError: no path, an unreadable file, an unknown template or a bad row (unless ``skip_invalid``).
    """
    if args.path is None:
        raise DataError(f"data.path is not set; {kind} data is needed (see examples/data/)")
    r = Renderer(tokenizer, args)
    items, rejects, truncated = _parse_file(args.path, kind, r)
    if args.validation_path:
        val, more, cut = _parse_file(args.validation_path, kind, r)
        return AlignData(items, val, rejects + more, truncated + cut)
    train_idx, val_idx = split_indices(len(items), args.validation_split, args.seed)
    return AlignData([items[i] for i in train_idx], [items[i] for i in val_idx], rejects, truncated)


def write_rejects(data: AlignData, run_dir: Path) -> None:
    """``<run>/rejects.jsonl`` in the data layer's format (file, line, error, raw), when rows were dropped."""
    if data.rejects:
        write_reject_file(data.rejects, Path(run_dir) / "rejects.jsonl")
