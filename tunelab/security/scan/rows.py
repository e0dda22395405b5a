"""Dataset rows as the scan sees them: the prompt, the answer and all text, with the file line.

Why not only :func:`~tunelab.data.formats.read_examples`: a scan must never stop at a bad row
(an unreadable line is itself a finding, and ``--quarantine`` must account for every row), and
it also reads the alignment formats (preference, unpaired, prompt-only), whose parser needs a
tokenizer. So rows come from the data layer's readers (file:line included) and each format's
own parser where one exists; what a parser refuses becomes an ``invalid_row`` finding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.data.formats import FORMATS, RowError, apply_columns, detect_format, known_columns, to_example
from tunelab.data.preference import RowError as AlignRowError
from tunelab.data.preference import as_messages
from tunelab.data.readers import read_raw
from tunelab.data.types import RawRow
from tunelab.errors import DataError


@dataclass
class ScanRow:
    """One input record.

    Attributes:
        raw: the record as the reader found it (its ``line`` is the 1-based file line or row index).
        prompt: the system and user turns (and alpaca's ``input``), joined; empty for text rows.
        response: the final answer (for preference rows the chosen one); empty for text rows.
        answers: every answer in the row (all assistant turns; chosen and rejected).
        text: everything in the row, for the checks that read the whole text.
        error: why the row could not be parsed (the scan then only reports that).
    """

    raw: RawRow
    prompt: str = ""
    response: str = ""
    answers: str = ""
    text: str = ""
    error: str | None = None

    @property
    def line(self) -> int:
        return self.raw.line


Fields = tuple[str, str, str, str]  # prompt, response, answers, text


def _join(*parts: str | None) -> str:
    return "\n".join(p for p in parts if p)


def _conversation_fields(messages: list[dict[str, str]]) -> Fields:
    prompt = _join(*(m["content"] for m in messages if m["role"] != "assistant"))
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    return prompt, answers[-1] if answers else "", _join(*answers), _join(*(m["content"] for m in messages))


def _sft_fields(spec_name: str) -> Callable[[RawRow, dict[str, str]], Fields]:
    spec = FORMATS[spec_name]

    def parse(raw: RawRow, columns: dict[str, str]) -> Fields:
        example = to_example(raw, spec, columns)
        if example.text is not None:
            return "", "", "", example.text
        return _conversation_fields(example.conversation())

    return parse


def _text(value: Any, role: str, what: str) -> str:
    return _join(*(str(m["content"]) for m in as_messages(value, role, what)))


def _align_fields(answer_keys: tuple[str, ...]) -> Callable[[RawRow, dict[str, str]], Fields]:
    """Preference / unpaired / prompt rows: ``prompt`` (or ``messages``) and the answer columns."""

    def parse(raw: RawRow, columns: dict[str, str]) -> Fields:
        row = apply_columns(raw.data or {}, columns)
        source = "prompt" if "prompt" in row else "messages"
        if source not in row:
            raise AlignRowError("needs a 'prompt' (or 'messages') field")
        prompt = _text(row[source], "user", source)
        answers = [_text(row[k], "assistant", k) for k in answer_keys if row.get(k) is not None]
        return prompt, answers[0] if answers else "", _join(*answers), _join(prompt, *answers)

    return parse


#: format name → how to pull (prompt, response, answers, text) out of one of its rows.
FIELD_PARSERS: dict[str, Callable[[RawRow, dict[str, str]], Fields]] = {
    **{name: _sft_fields(name) for name in FORMATS},
    "preference": _align_fields(("chosen", "rejected")),
    "unpaired": _align_fields(("completion",)),
    "prompt": _align_fields(()),
}
#: alignment formats told apart by their columns (the SFT ones by the data layer's detect_format).
ALIGN_COLUMNS = (("preference", {"chosen", "rejected"}), ("unpaired", {"prompt", "completion"}), ("prompt", {"prompt"}))
ALIGN_NAMES = {"prompt", "chosen", "rejected", "completion", "label", "margin"}


def _detect(rows: list[RawRow], columns: dict[str, str]) -> str:
    try:
        return detect_format(rows, columns)
    except DataError:
        for raw in [r for r in rows if r.data is not None][:50]:
            keys = set(apply_columns(raw.data, columns))
            for name, needed in ALIGN_COLUMNS:
                if needed <= keys:
                    return name
        raise


def read_scan_rows(path: str | Path, format: str = "auto", columns: dict[str, str] | None = None
                   ) -> tuple[list[ScanRow], str]:
    """Every record of ``path`` as a :class:`ScanRow` (unparseable ones carry ``error``) and the format.

    Raises:
        DataError: file-level problems (missing, empty, unknown type or format); never a bad row.
    """
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(known_columns()) - ALIGN_NAMES)
    if unknown:
        raise DataError(f"--column: unknown column name(s) {unknown}; the keys are OUR names, the values YOUR columns\n"
                        f"  fix: use one of {', '.join(sorted({*known_columns(), *ALIGN_NAMES}))} "
                        "(e.g. --column instruction=prompt)")
    raws = read_raw(path)
    name = _detect(raws, columns) if format == "auto" else format
    parser = FIELD_PARSERS.get(name)
    if parser is None:
        raise DataError(f"--format: unknown data format '{name}'\n  fix: use auto or one of {', '.join(FIELD_PARSERS)}")
    out = []
    for raw in raws:
        if raw.error is not None or raw.data is None:
            out.append(ScanRow(raw, text=raw.raw, error=raw.error or "unreadable row"))
            continue
        try:
            prompt, response, answers, text = parser(raw, columns)
        except (RowError, AlignRowError) as err:
            out.append(ScanRow(raw, text=raw.raw, error=str(err)))
            continue
        out.append(ScanRow(raw, prompt, response, answers, text))
    return out, name
