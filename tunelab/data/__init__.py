"""Data layer: read → normalize → render with a template → tokenize with label masks → pack.

Public API (see ``docs/data.md``):

* :func:`read_examples` — jsonl/json/csv/parquet/HF-folder rows → :class:`Example` (file:line errors).
* :func:`render_segments` — an example → ``(text, trained)`` segments under a template.
* :func:`tokenize_example`, :func:`pack`, :func:`collate_rows` — tokens, rows, batches.
* :func:`prepare` — the whole pipeline for a :class:`~tunelab.config.DataArgs`; returns
  :class:`PreparedData` (train/validation :class:`Row` lists + :class:`DataReport`).
* :func:`save_prepared` / :func:`load_prepared` — what ``tunelab data prepare`` writes.
* :func:`inspect_data` — what ``tunelab data inspect`` prints.
"""

from tunelab.data.collate import collate_rows
from tunelab.data.formats import FORMATS, RowError, detect_format, read_examples
from tunelab.data.inspect import Inspection, inspect_data
from tunelab.data.prepare import load_prepared, prepare, save_prepared, write_rejects
from tunelab.data.readers import READERS, read_raw
from tunelab.data.templates import TEMPLATES, get_template, render_prompt, render_segments
from tunelab.data.tokenize import pack, split_indices, to_rows, tokenize_example, tokenize_segments
from tunelab.data.types import (
    IGNORE_INDEX,
    DataReport,
    Example,
    LengthStats,
    PreparedData,
    ReadResult,
    Reject,
    Row,
    Segment,
    TokenizedExample,
)

__all__ = [
    "FORMATS",
    "IGNORE_INDEX",
    "READERS",
    "TEMPLATES",
    "DataReport",
    "Example",
    "Inspection",
    "LengthStats",
    "PreparedData",
    "ReadResult",
    "Reject",
    "Row",
    "RowError",
    "Segment",
    "TokenizedExample",
    "collate_rows",
    "detect_format",
    "get_template",
    "inspect_data",
    "load_prepared",
    "pack",
    "prepare",
    "read_examples",
    "read_raw",
    "render_prompt",
    "render_segments",
    "save_prepared",
    "split_indices",
    "to_rows",
    "tokenize_example",
    "tokenize_segments",
    "write_rejects",
]
