"""Row formats: detect which one a dataset uses and normalize each row to an :class:`Example`.

Formats (our column names; map yours with ``data.columns`` / ``--column ours=yours``):

* ``alpaca``: ``instruction``, optional ``input``, ``output`` (+ optional ``system``)
  — Taori et al., 2023, Stanford Alpaca.
* ``qa``: ``question``, ``answer`` (+ optional ``system``).
* ``messages``: ``messages`` = OpenAI chat list of ``{role, content}``, multi-turn, optional system.
* ``sharegpt``: ``conversations`` = list of ``{from, value}`` with human/gpt/system roles.
* ``text``: ``text`` = raw text for continued pre-training.

A bad row raises :class:`RowError` naming the field; :func:`read_examples` turns it into a
``DataError`` with file and line, or into a counted :class:`Reject` with ``skip_invalid``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.data.readers import read_raw
from tunelab.data.types import Example, Message, RawRow, ReadResult, Reject
from tunelab.errors import DataError

SKIP_HINT = "or pass --skip-invalid (data.skip_invalid=true) to drop such rows into rejects.jsonl"
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "system": "system"}


class RowError(ValueError):
    """A problem with one row: which field, what is wrong, how to fix it."""

    def __init__(self, field: str, problem: str, fix: str):
        super().__init__(f"field '{field}': {problem}; fix: {fix}")
        self.field, self.problem, self.fix = field, problem, fix


Parsed = tuple[list[Message] | None, str | None, str | None]  # messages, text, alpaca input


@dataclass(frozen=True)
class FormatSpec:
    """A row format: its columns, a one-line example for messages/docs, and its parser."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    sample: str
    parse: Callable[[dict[str, Any]], Parsed]


# --------------------------------------------------------------------------- field helpers


def _string(row: dict[str, Any], name: str, *, required: bool = True, answer: bool = False) -> str | None:
    """A string field; missing, mistyped or (for answers) empty values are RowErrors."""
    if name not in row or row[name] is None:
        if required:
            raise RowError(name, "missing", f"add a '{name}' value (or map your column with --column {name}=YOURS)")
        return None
    value = row[name]
    if not isinstance(value, str):
        raise RowError(name, f"must be a string, got {type(value).__name__} ({_short(value)})",
                       f"store '{name}' as text")
    if answer and not value.strip():
        raise RowError(name, "the answer is empty", "write the answer, or remove the row")
    return value


def _short(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _list_field(row: dict[str, Any], name: str) -> list[Any]:
    if name not in row or row[name] is None:
        raise RowError(name, "missing", f"add a '{name}' list (or map your column with --column {name}=YOURS)")
    value = row[name]
    if isinstance(value, str) and value.lstrip().startswith("["):  # csv cells hold JSON text
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise RowError(name, f"is not a valid JSON list ({err.msg})", "store it as a JSON list") from None
    if not isinstance(value, list) or not value:
        got = "an empty list" if isinstance(value, list) else type(value).__name__
        raise RowError(name, f"must be a non-empty list of messages, got {got}", "store the turns as a list")
    return value


def _content(value: Any, field: str) -> str:
    """Message content: a string, or OpenAI content parts ``[{type: text, text}]`` joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        return "".join(str(p.get("text", "")) for p in value)
    got = f"{type(value).__name__} ({_short(value)})"
    raise RowError(field, f"must be a string, got {got}", "store the text as a string")


def check_conversation(msgs: list[Message], field: str) -> list[Message]:
    """SFT conversations: system only first, at least one answer, no empty answer, ends with one."""
    for i, m in enumerate(msgs):
        if m["role"] == "system" and i != 0:
            raise RowError(f"{field}[{i}]", "a system message may only come first", "move it to the start")
        if m["role"] == "assistant" and not m["content"].strip():
            raise RowError(f"{field}[{i}].content", "the answer is empty", "write the answer, or remove the row")
    first = next((i for i, m in enumerate(msgs) if m["role"] != "system"), None)
    if first is not None and msgs[first]["role"] != "user":
        raise RowError(f"{field}[{first}]", "the conversation starts with an assistant message",
                       "begin with a user turn (after an optional system message)")
    if not any(m["role"] == "assistant" for m in msgs):
        raise RowError(field, "has no assistant message to train on", "add the assistant's answer")
    if msgs[-1]["role"] != "assistant":
        raise RowError(f"{field}[{len(msgs) - 1}]", f"the conversation ends with a '{msgs[-1]['role']}' message "
                       "that has no answer", "add the assistant reply or remove the last message")
    return msgs


def _with_system(row: dict[str, Any], msgs: list[Message]) -> list[Message]:
    system = _string(row, "system", required=False)
    if system and (not msgs or msgs[0]["role"] != "system"):
        return [{"role": "system", "content": system}, *msgs]
    return msgs


# --------------------------------------------------------------------------- parsers


def parse_alpaca(row: dict[str, Any]) -> Parsed:
    instruction = _string(row, "instruction")
    if not instruction.strip():
        raise RowError("instruction", "is empty", "write the instruction, or remove the row")
    extra = _string(row, "input", required=False) or None
    output = _string(row, "output", answer=True)
    msgs = [{"role": "user", "content": instruction}, {"role": "assistant", "content": output}]
    return _with_system(row, msgs), None, extra


def parse_qa(row: dict[str, Any]) -> Parsed:
    question = _string(row, "question")
    if not question.strip():
        raise RowError("question", "is empty", "write the question, or remove the row")
    answer = _string(row, "answer", answer=True)
    msgs = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return _with_system(row, msgs), None, None


def parse_messages(row: dict[str, Any]) -> Parsed:
    msgs: list[Message] = []
    for i, m in enumerate(_list_field(row, "messages")):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise RowError(f"messages[{i}]", f"must be an object with 'role' and 'content', got {_short(m)}",
                           'write each turn as {"role": "user", "content": "..."}')
        if m["role"] not in ROLES:
            raise RowError(f"messages[{i}].role", f"unknown role {m['role']!r}", f"use one of {', '.join(ROLES)}")
        msgs.append({"role": m["role"], "content": _content(m["content"], f"messages[{i}].content")})
    return check_conversation(_with_system(row, msgs), "messages"), None, None


def parse_sharegpt(row: dict[str, Any]) -> Parsed:
    msgs: list[Message] = []
    for i, m in enumerate(_list_field(row, "conversations")):
        speaker = m.get("from", m.get("role")) if isinstance(m, dict) else None
        value = m.get("value", m.get("content")) if isinstance(m, dict) else None
        if speaker is None or value is None:
            raise RowError(f"conversations[{i}]", f"must be an object with 'from' and 'value', got {_short(m)}",
                           'write each turn as {"from": "human", "value": "..."}')
        role = SHAREGPT_ROLES.get(str(speaker).lower())
        if role is None:
            raise RowError(f"conversations[{i}].from", f"unknown speaker {speaker!r}",
                           f"use one of {', '.join(sorted(SHAREGPT_ROLES))}")
        msgs.append({"role": role, "content": _content(value, f"conversations[{i}].value")})
    return check_conversation(_with_system(row, msgs), "conversations"), None, None


def parse_text(row: dict[str, Any]) -> Parsed:
    text = _string(row, "text")
    if not text.strip():
        raise RowError("text", "is empty", "remove the row")
    return None, text, None


MESSAGES_SAMPLE = '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}'
FORMATS: dict[str, FormatSpec] = {
    "messages": FormatSpec("messages", ("messages",), ("system",), MESSAGES_SAMPLE, parse_messages),
    "sharegpt": FormatSpec("sharegpt", ("conversations",), ("system",),
                           '{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}',
                           parse_sharegpt),
    "alpaca": FormatSpec("alpaca", ("instruction", "output"), ("input", "system"),
                         '{"instruction": "Add 2 and 3", "input": "", "output": "5"}', parse_alpaca),
    "qa": FormatSpec("qa", ("question", "answer"), ("system",), '{"question": "2+3?", "answer": "5"}', parse_qa),
    "text": FormatSpec("text", ("text",), (), '{"text": "Raw text for continued pre-training."}', parse_text),
}
DETECT_ROWS = 50  # rows looked at to detect the format


def known_columns() -> list[str]:
    names = {c for spec in FORMATS.values() for c in spec.required + spec.optional}
    return sorted(names)


def formats_help() -> str:
    lines = [f"  {s.name}: columns {', '.join(s.required)}" + (f" (optional {', '.join(s.optional)})" if s.optional
             else "") + f", e.g. {s.sample}" for s in FORMATS.values()]
    return "\n".join(lines)


def apply_columns(data: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """Rename the user's columns to ours (``columns`` maps ours -> theirs)."""
    if not columns:
        return data
    out = dict(data)
    for ours, theirs in columns.items():
        if theirs in data:
            out[ours] = data[theirs]
    return out


def check_columns(columns: dict[str, str]) -> None:
    unknown = sorted(set(columns) - set(known_columns()))
    if unknown:
        raise DataError(
            f"data.columns: unknown column name(s) {unknown}; the keys are OUR names, the values YOUR columns\n"
            f"  valid names: {', '.join(known_columns())} (e.g. --column instruction=prompt)"
        )


def detect_format(rows: list[RawRow], columns: dict[str, str]) -> str:
    """The first format whose required columns a row has (looking at the first readable rows).

    Raises:
        DataError: no row matches any format (lists each format and its columns).
    """
    seen: set[str] = set()
    for raw in [r for r in rows if r.data is not None][:DETECT_ROWS]:
        keys = set(apply_columns(raw.data, columns))
        seen |= set(raw.data)
        for spec in FORMATS.values():
            if set(spec.required) <= keys:
                return spec.name
    source = rows[0].source if rows else "data"
    raise DataError(
        f"{source}: cannot tell the data format from the columns {sorted(seen) or '(no readable rows)'}\n"
        f"  known formats:\n{formats_help()}\n"
        "  fix: rename your columns, or map them, e.g. --column instruction=prompt --column output=completion, "
        "or set --format"
    )


def where(source: str, line: int) -> str:
    """``file line N`` for line-based files, ``file row N`` for tables."""
    unit = "line" if Path(source).suffix.lower() in (".jsonl", ".csv") else "row"
    return f"{source} {unit} {line}"


def _row_error(raw: RawRow, message: str) -> DataError:
    return DataError(f"{where(raw.source, raw.line)}: {message}\n  {SKIP_HINT}")


def to_example(raw: RawRow, spec: FormatSpec, columns: dict[str, str]) -> Example:
    """Normalize one readable row (raises RowError)."""
    messages, text, extra = spec.parse(apply_columns(raw.data or {}, columns))
    return Example(messages=messages, text=text, source=raw.source, line=raw.line, input=extra)


def read_examples(
    path: str | Path, format: str = "auto", columns: dict[str, str] | None = None, skip_invalid: bool = False
) -> ReadResult:
    """Read a dataset file and normalize every row.

    Args:
        path: .jsonl, .json, .csv, .parquet or a saved HF dataset folder.
        format: ``auto`` or one of :data:`FORMATS`.
        columns: our column name -> the user's column name.
        skip_invalid: drop bad rows into ``ReadResult.rejects`` instead of raising.

    Raises:
        DataError: the first bad row (file, line, field, fix) unless ``skip_invalid``; file-level
            problems (missing, empty, undecodable, unknown format) always.
    """
    columns = dict(columns or {})
    check_columns(columns)
    rows = read_raw(path)
    if format == "auto":
        format = detect_format(rows, columns)
    spec = FORMATS.get(format)
    if spec is None:
        raise DataError(f"unknown data format '{format}'\n  known formats:\n{formats_help()}")
    examples: list[Example] = []
    rejects: list[Reject] = []
    for raw in rows:
        try:
            if raw.error is not None:
                raise ValueError(raw.error)
            examples.append(to_example(raw, spec, columns))
        except RowError as err:
            mapped = f" (your column '{columns[err.field]}')" if err.field in columns else ""
            message = f"[{spec.name}] field '{err.field}'{mapped}: {err.problem}\n  fix: {err.fix}"
            if not skip_invalid:
                raise _row_error(raw, message) from None
            rejects.append(Reject(raw.source, raw.line, f"field '{err.field}': {err.problem}", raw.raw))
        except ValueError as err:
            if not skip_invalid:
                raise _row_error(raw, str(err)) from None
            rejects.append(Reject(raw.source, raw.line, str(err), raw.raw))
    if not examples:
        raise DataError(f"{path}: no valid rows ({len(rejects)} rejected, e.g. {rejects[0].error if rejects else ''})")
    return ReadResult(examples, rejects, format, rows_read=len(rows))
