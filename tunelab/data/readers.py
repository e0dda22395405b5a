"""Readers: a file (or saved Hugging Face dataset folder) → :class:`RawRow` records with locations.

Why our own readers on top of ``datasets``: a bad record must be reported as ``file:line`` with
what to fix, and with ``skip_invalid`` a single malformed JSON line must cost one row, not the
file. jsonl and csv rows carry their file line; json, parquet and HF-folder rows carry their
1-based row index.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunelab.data.types import RawRow
from tunelab.errors import DataError

UTF8_FIX = "re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 in > out`"


def _decode(path: Path, data: bytes) -> str:
    """UTF-8 text of a whole file; an undecodable byte names its line and byte offset."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{path} line {line}: byte 0x{data[err.start]:02x} at byte offset {err.start} is not valid UTF-8\n"
            f"  fix: {UTF8_FIX}"
        ) from None


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path}: the file is empty\n  fix: point data.path at a file with at least one row")
    return data


def read_jsonl(path: Path) -> list[RawRow]:
    """One JSON object per line; blank lines are skipped; each bad line is its own error."""
    rows: list[RawRow] = []
    offset = 0
    for number, raw_line in enumerate(_read_bytes(path).split(b"\n"), start=1):
        start, offset = offset, offset + len(raw_line) + 1
        if number == 1 and raw_line.startswith(b"\xef\xbb\xbf"):
            raw_line = raw_line[3:]
        if not raw_line.strip():
            continue
        try:
            text = raw_line.decode("utf-8")
        except UnicodeDecodeError as err:
            bad = start + err.start
            msg = f"byte 0x{raw_line[err.start]:02x} at byte offset {bad} is not valid UTF-8; {UTF8_FIX}"
            rows.append(RawRow(str(path), number, None, raw_line.decode("utf-8", "replace"), msg))
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            msg = f"malformed JSON at column {err.colno} ({err.msg}); each line must be one complete JSON object"
            rows.append(RawRow(str(path), number, None, text, msg))
            continue
        rows.append(_as_object(path, number, value, text))
    return rows


def _as_object(path: Path, line: int, value: Any, raw: str) -> RawRow:
    if isinstance(value, dict):
        return RawRow(str(path), line, value, raw)
    kind = type(value).__name__
    return RawRow(str(path), line, None, raw, f"a row must be a JSON object {{...}}, got {kind}")


def read_json(path: Path) -> list[RawRow]:
    """A JSON list of objects, or ``{"data": [...]}``; line = 1-based index in the list."""
    text = _decode(path, _read_bytes(path))
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path} line {err.lineno}, column {err.colno}: malformed JSON ({err.msg})\n"
            "  fix: repair the file; a .json dataset is a list of objects or {\"data\": [...]}"
        ) from None
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        value = value["data"]
    if not isinstance(value, list):
        raise DataError(
            f"{path}: a .json dataset must be a list of objects or {{\"data\": [...]}}, got {type(value).__name__}"
            "\n  fix: wrap the rows in a list, or save them as .jsonl (one object per line)"
        )
    return [_as_object(path, i, v, json.dumps(v, ensure_ascii=False)) for i, v in enumerate(value, start=1)]


def read_csv(path: Path) -> list[RawRow]:
    """A CSV file with a header line; ``line`` is the file line where the record starts."""
    text = _decode(path, _read_bytes(path))
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows: list[RawRow] = []
    next_line = 2  # the header is line 1
    try:
        for record in reader:
            start, next_line = next_line, reader.line_num + 1
            extra = record.pop(None, None)  # type: ignore[call-overload]
            raw = json.dumps(record, ensure_ascii=False)
            if extra:
                rows.append(RawRow(str(path), start, None, raw, f"{len(extra)} more values than header columns"))
                continue
            rows.append(RawRow(str(path), start, dict(record), raw))
    except csv.Error as err:
        raise DataError(f"{path} line {reader.line_num}: malformed CSV ({err})") from None
    return rows


def _table_rows(path: Path, records: list[dict[str, Any]]) -> list[RawRow]:
    return [RawRow(str(path), i, dict(r), json.dumps(r, ensure_ascii=False, default=str)) for i, r in
            enumerate(records, start=1)]


def read_parquet(path: Path) -> list[RawRow]:
    """A parquet file (via pyarrow); line = 1-based row index."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty\n  fix: point data.path at a file with at least one row")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{path}: not a readable parquet file ({err})\n  fix: re-export it with pyarrow") from None
    return _table_rows(path, table.to_pylist())


def read_hf_folder(path: Path) -> list[RawRow]:
    """A folder written by ``datasets``' ``save_to_disk`` (a Dataset, or the ``train`` split of a DatasetDict)."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise DataError(
            f"{path}: a folder must be a dataset saved with datasets' save_to_disk ({err})\n"
            f"  fix: point data.path at a file ({', '.join(READERS)}) or a saved dataset folder"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            if len(loaded) != 1:
                raise DataError(
                    f"{path}: the saved DatasetDict has splits {sorted(loaded)} but no 'train'\n"
                    "  fix: point data.path at one split's folder"
                )
            loaded = next(iter(loaded.values()))
        else:
            loaded = loaded["train"]
    if len(loaded) == 0:
        raise DataError(f"{path}: the saved dataset has no rows")
    return _table_rows(path, loaded.to_list())


READERS: dict[str, Callable[[Path], list[RawRow]]] = {
    ".jsonl": read_jsonl,
    ".json": read_json,
    ".csv": read_csv,
    ".parquet": read_parquet,
}


def read_raw(path: str | Path) -> list[RawRow]:
    """All records of ``path`` (by extension; a folder is a saved HF dataset).

    Raises:
        DataError: missing path, unknown extension, empty file, undecodable bytes (json/csv),
            malformed json/csv/parquet. Row-level problems of jsonl come back as ``RawRow.error``.
    """
    p = Path(path)
    if p.is_dir():
        rows = read_hf_folder(p)
    elif not p.exists():
        raise DataError(f"data file not found: {p}\n  fix: check data.path (relative to the current folder)")
    else:
        reader = READERS.get(p.suffix.lower())
        if reader is None:
            raise DataError(
                f"{p}: unsupported file type '{p.suffix}'\n"
                f"  fix: use one of {', '.join(READERS)} or a folder saved with datasets' save_to_disk"
            )
        rows = reader(p)
    if not rows:
        raise DataError(f"{p}: no rows found\n  fix: point data.path at a file with at least one row")
    return rows
