"""``prepare``: a :class:`~tunelab.config.DataArgs` + tokenizer → train/validation rows + report.

Order of work: read and validate every row → split the *examples* (seeded; or a separate
validation file) → render with the template and tokenize → truncate (counted) → drop examples
with no trained token left (counted) → pack (or one row per example). Nothing is lost
silently: invalid rows either stop the run with file:line, or (``skip_invalid``) are counted
in the report and written to ``rejects.jsonl``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunelab.data.formats import FORMATS, SKIP_HINT, RowError, formats_help, read_examples, where
from tunelab.data.templates import Template, get_template
from tunelab.data.tokenize import packing_efficiency, split_indices, to_rows, tokenize_example
from tunelab.data.types import DataReport, Example, LengthStats, PreparedData, Reject, Row, TokenizedExample
from tunelab.errors import DataError

PREPARED_MARKER = "tunelab_prepared.json"
PREPARED_VERSION = 1
REJECT_SAMPLES = 20  # rejects copied into the report itself (all of them go to rejects.jsonl)


def tokenize_all(
    examples: Sequence[Example],
    tokenizer: Any,
    template: Template,
    rejects: list[Reject],
    *,
    max_length: int | None,
    system_prompt: str | None = None,
    train_on_prompt: bool = False,
    skip_invalid: bool = False,
) -> list[TokenizedExample]:
    """Tokenize examples; a row the template refuses is a DataError or (skip_invalid) appended to ``rejects``."""
    out = []
    for ex in examples:
        try:
            out.append(tokenize_example(ex, tokenizer, template, max_length, system_prompt, train_on_prompt))
        except RowError as err:
            if not skip_invalid:
                raise DataError(f"{where(ex.source, ex.line)}: field '{err.field}': {err.problem}\n"
                                f"  fix: {err.fix}\n  {SKIP_HINT}") from None
            raw = json.dumps({"messages": ex.messages, "text": ex.text}, ensure_ascii=False)
            rejects.append(Reject(ex.source, ex.line, f"field '{err.field}': {err.problem}", raw))
    return out


def write_rejects(rejects: Sequence[Reject], path: str | Path) -> Path:
    """One JSON object per rejected row: file, line, error, raw."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", encoding="utf-8") as fh:
        for r in rejects:
            fh.write(json.dumps({"file": r.file, "line": r.line, "error": r.error, "raw": r.raw}, ensure_ascii=False))
            fh.write("\n")
    return p


def _read_splits(data_args: Any) -> tuple[list[Example], list[Example], str, int, list[Reject], list[str]]:
    """Examples of both splits, the format, rows read, rejects and the files read."""
    read = read_examples(data_args.path, data_args.format, data_args.columns, data_args.skip_invalid)
    files = [str(data_args.path)]
    rejects = list(read.rejects)
    rows_read = read.rows_read
    if data_args.validation_path:
        val = read_examples(data_args.validation_path, read.format, data_args.columns, data_args.skip_invalid)
        files.append(str(data_args.validation_path))
        rejects += val.rejects
        return read.examples, val.examples, read.format, rows_read + val.rows_read, rejects, files
    train_idx, val_idx = split_indices(len(read.examples), data_args.validation_split, data_args.seed)
    train = [read.examples[i] for i in train_idx]
    validation = [read.examples[i] for i in val_idx]
    return train, validation, read.format, rows_read, rejects, files


def prepare(
    data_args: Any, tokenizer: Any, *, packing: bool | None = None, rejects_path: str | Path | None = None
) -> PreparedData:
    """Read, split, tokenize, truncate and pack a dataset described by ``data_args``.

    Args:
        data_args: a :class:`tunelab.config.DataArgs` (path, format, columns, template, ...).
        tokenizer: the model's tokenizer (chat template, EOS).
        packing: overrides ``data_args.packing`` (prompt-learning adapters need ``False``).
        rejects_path: where invalid rows go with ``skip_invalid`` (e.g. ``<run>/rejects.jsonl``).

    Returns:
        :class:`PreparedData` with train/validation rows, the report and the rejects.

    Raises:
        DataError: any bad input (file, line, field, fix), or no trainable example left.
    """
    if not data_args.path:
        raise DataError("data.path is not set\n  fix: set data.path in the config or pass data.path=FILE")
    packing = data_args.packing if packing is None else packing
    if is_prepared(data_args.path):
        return load_for_training(data_args.path, data_args.max_length, packing)
    if data_args.format not in FORMATS and data_args.format != "auto":
        raise DataError(f"data.format '{data_args.format}' is alignment data, not SFT data\n"
                        f"  fix: use an alignment method (dpo, orpo, kto, reward, ppo) or one of:\n{formats_help()}")
    template = get_template(data_args.template, tokenizer)
    train_ex, val_ex, fmt, rows_read, rejects, files = _read_splits(data_args)
    options = {"max_length": data_args.max_length, "system_prompt": data_args.system_prompt,
               "train_on_prompt": data_args.train_on_prompt, "skip_invalid": data_args.skip_invalid}
    splits = {name: tokenize_all(ex, tokenizer, template, rejects, **options)
              for name, ex in (("train", train_ex), ("validation", val_ex))}
    everything = splits["train"] + splits["validation"]
    kept = {name: [t for t in toks if t.trained_tokens > 0] for name, toks in splits.items()}
    if not kept["train"]:
        raise DataError(f"{data_args.path}: no training example has a trained token left after truncation to "
                        f"data.max_length={data_args.max_length}\n  fix: raise data.max_length")
    rows = {name: to_rows(toks, data_args.max_length, packing) for name, toks in kept.items()}
    report = DataReport(
        format=fmt, template=getattr(template, "name", str(data_args.template)), files=files,
        max_length=data_args.max_length, rows_read=rows_read, rejected=len(rejects),
        reject_samples=[{"file": r.file, "line": r.line, "error": r.error} for r in rejects[:REJECT_SAMPLES]],
        truncated=sum(t.truncated for t in everything), dropped=len(everything) - sum(map(len, kept.values())),
        lengths=LengthStats.of([t.full_length for t in everything]),
        trained_tokens={n: sum(t.trained_tokens for t in k) for n, k in kept.items()},
        total_tokens={n: sum(len(t.input_ids) for t in k) for n, k in kept.items()},
        packing=packing, packing_efficiency={n: round(packing_efficiency(r, data_args.max_length), 4)
                                             for n, r in rows.items()},
        train_examples=len(kept["train"]), validation_examples=len(kept["validation"]),
        train_rows=len(rows["train"]), validation_rows=len(rows["validation"]),
        seed=data_args.seed, validation_split=0.0 if data_args.validation_path else data_args.validation_split,
    )
    if rejects and rejects_path is not None:
        report.rejects_file = str(write_rejects(rejects, rejects_path))
    return PreparedData(rows["train"], rows["validation"], report, rejects)


# --------------------------------------------------------------------------- save / load


def _features():
    import datasets

    seq = datasets.Sequence(datasets.Value("int64"))
    return datasets.Features({"input_ids": seq, "labels": seq, "position_ids": seq})


def save_prepared(prepared: PreparedData, folder: str | Path, overwrite: bool = False) -> Path:
    """Write ``train/`` and ``validation/`` (Arrow, via ``datasets``), ``report.json`` and ``rejects.jsonl``.

    ``tunelab train`` reads the folder back when ``data.path`` points at it. The folder is written
    whole or not at all (:func:`~tunelab.utils.fsio.atomic_folder`): a non-empty ``folder`` is
    refused unless ``overwrite``, and replaced only once the new one is complete.
    """
    import datasets

    from tunelab.utils.fsio import atomic_folder

    out = Path(folder)
    with atomic_folder(out, overwrite) as tmp:
        for name, rows in (("train", prepared.train), ("validation", prepared.validation)):
            columns = {k: [getattr(r, k) for r in rows] for k in ("input_ids", "labels", "position_ids")}
            datasets.Dataset.from_dict(columns, features=_features()).save_to_disk(str(tmp / name))
        if prepared.rejects:
            write_rejects(prepared.rejects, tmp / "rejects.jsonl")
            prepared.report.rejects_file = str(out / "rejects.jsonl")
        (tmp / "report.json").write_text(json.dumps(prepared.report.to_dict(), indent=2))
        (tmp / PREPARED_MARKER).write_text(json.dumps({"version": PREPARED_VERSION}))
    return out


def is_prepared(path: str | Path) -> bool:
    return (Path(path) / PREPARED_MARKER).is_file()


def load_prepared(folder: str | Path) -> PreparedData:
    """Read a folder written by :func:`save_prepared`.

    Raises:
        DataError: not a prepared folder, or written by an incompatible version.
    """
    import datasets

    root = Path(folder)
    if not is_prepared(root):
        raise DataError(f"{root}: not a prepared dataset (no {PREPARED_MARKER})\n"
                        "  fix: create it with `tunelab data prepare FILE --model NAME --out FOLDER`")
    version = json.loads((root / PREPARED_MARKER).read_text()).get("version")
    if version != PREPARED_VERSION:
        raise DataError(f"{root}: prepared with format version {version}, this tunelab reads {PREPARED_VERSION}\n"
                        "  fix: run `tunelab data prepare` again")
    splits = {}
    for name in ("train", "validation"):
        table = datasets.load_from_disk(str(root / name)).to_dict()
        splits[name] = [Row(i, lab, p) for i, lab, p in
                        zip(table["input_ids"], table["labels"], table["position_ids"], strict=True)]
    report = DataReport.from_dict(json.loads((root / "report.json").read_text()))
    rejects = []
    if (root / "rejects.jsonl").is_file():
        rejects = [Reject(**json.loads(line)) for line in (root / "rejects.jsonl").read_text().splitlines() if line]
    return PreparedData(splits["train"], splits["validation"], report, rejects)


def load_for_training(folder: str | Path, max_length: int, packing: bool) -> PreparedData:
    """A prepared folder, checked against the run's ``max_length`` and packing needs."""
    prepared = load_prepared(folder)
    longest = max((len(r) for r in prepared.train + prepared.validation), default=0)
    if longest > max_length:
        raise DataError(f"{folder}: has rows of {longest} tokens > data.max_length={max_length}\n"
                        f"  fix: set data.max_length={prepared.report.max_length} or prepare again")
    if prepared.report.packing and not packing:
        raise DataError(f"{folder}: was prepared with packing, but this run needs one example per row "
                        "(prompt-learning adapters or data.packing=false)\n"
                        "  fix: `tunelab data prepare ... --no-packing`")
    return prepared
