"""Perplexity of a model on a dataset: ``exp`` of the token-weighted mean negative log-likelihood.

``PPL = exp(-(1/N) sum_t log p(x_t | x_<t))`` over the N scored tokens of every row together
(token-weighted: a long row counts for its tokens, not as one row). Rows are rendered the way
tunelab trains on them (:func:`tunelab.data.tokenize.tokenize_example`): a chat row through the
model's own chat template, a text row as BOS + text + EOS. ``scope="trained"`` scores what
training would put a loss on (the assistant answers and their EOS, all of a text row);
``scope="all"`` scores every token but the first.

A row longer than ``max_length`` is scored with a sliding window (the strided evaluation of
transformers' perplexity guide, after Press et al. 2021, "Shortformer", arXiv:2012.15832):
windows of ``max_length`` tokens start every ``stride`` tokens and each scores only the tokens
the previous window did not, so every token is scored exactly once and, past the first window,
with at least ``max_length - stride`` tokens of context. A smaller stride costs more forwards
and gives a lower (better conditioned) perplexity.

Checked against a direct computation from the logits on the tiny model (tests/evaluate/test_perplexity.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from tunelab.data.types import IGNORE_INDEX, Example, TokenizedExample
from tunelab.errors import ConfigError, DataError
from tunelab.evaluate.scoring import ScoreRow, ScoringModel, score_rows

Scope = Literal["trained", "all"]
DEFAULT_MAX_LENGTH = 2048  # windows longer than this cost memory and add little context to a small model


@dataclass(frozen=True)
class PerplexityResult:
    """The numbers ``tunelab eval perplexity`` prints (and writes with ``--json``)."""

    model: str
    data: str
    scope: str
    examples: int  # rows with at least one scored token
    tokens: int  # scored tokens
    windows: int  # forward rows (> examples when rows were longer than max_length)
    nll: float  # mean negative log-likelihood per scored token (nats)
    perplexity: float
    max_length: int
    stride: int
    dtype: str

    def to_dict(self) -> dict:
        return asdict(self)


def read_rows(path: str | Path, tokenizer, scope: Scope = "trained") -> list[TokenizedExample]:
    """Tokenize DATA: a ``.txt`` file is one text row; anything else goes through tunelab's readers
    (jsonl/json/csv/parquet rows, each in any format ``tunelab data`` knows: text, messages, alpaca, ...)."""
    from tunelab.data.readers import read_raw
    from tunelab.data.tokenize import tokenize_example

    path = Path(path)
    if path.suffix.lower() == ".txt":
        if not path.is_file():
            raise DataError(f"data file not found: {path}\n  fix: check the DATA path")
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise DataError(f"{path}: the file is empty\n  fix: point at a file with text in it")
        examples = [Example(None, text, str(path), 1)]
    else:
        examples = [_example(raw) for raw in read_raw(path)]
    return [tokenize_example(ex, tokenizer, "chat", None, train_on_prompt=scope == "all") for ex in examples]


def _example(raw) -> Example:
    """One row in whichever format its own columns say (a file may mix text and chat rows)."""
    from tunelab.data.formats import FORMATS, RowError, detect_format, to_example, where

    if raw.error is not None:
        raise DataError(f"{where(raw.source, raw.line)}: {raw.error}")
    try:
        return to_example(raw, FORMATS[detect_format([raw], {})], {})
    except RowError as err:
        raise DataError(
            f"{where(raw.source, raw.line)}: field '{err.field}': {err.problem}\n  fix: {err.fix}"
        ) from None


def windows(example: TokenizedExample, max_length: int, stride: int) -> list[ScoreRow]:
    """The sliding windows of one row; every labelled position ``t >= 1`` is scored exactly once."""
    ids, labels = example.input_ids, example.labels
    rows, prev_end, begin = [], 0, 0
    while True:
        end = min(begin + max_length, len(ids))
        scored = tuple(t - begin for t in range(max(prev_end, begin + 1), end) if labels[t] != IGNORE_INDEX)
        rows.append(ScoreRow(tuple(ids[begin:end]), scored))
        if end == len(ids):
            return rows
        prev_end, begin = end, begin + stride


def perplexity(
    scorer: ScoringModel,
    data: str | Path,
    *,
    scope: Scope = "trained",
    max_length: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
) -> PerplexityResult:
    """Perplexity of ``scorer`` on ``data`` (see the module docstring).

    Args:
        scorer: a loaded model (:func:`tunelab.evaluate.scoring.load_scoring_model`).
        data: a dataset file (``.txt`` = one text).
        scope: ``trained`` (answer tokens of chat rows) or ``all`` tokens.
        max_length: window length; default the model's context, at most 2048.
        stride: tokens between window starts; default ``max_length // 2``.
        batch_size: windows per forward pass.

    Raises:
        ConfigError: a window or stride that cannot work. DataError: nothing to score.
    """
    context = int(getattr(scorer.model.config, "max_position_embeddings", 0) or DEFAULT_MAX_LENGTH)
    max_length = max_length or min(context, DEFAULT_MAX_LENGTH)
    stride = stride or max(1, max_length // 2)
    if max_length < 2 or not 1 <= stride < max_length:
        raise ConfigError(
            f"--max-length {max_length} --stride {stride}: need max_length >= 2 and "
            "1 <= stride < max_length\n  fix: e.g. --max-length 1024 --stride 512"
        )
    rows_per_example = [windows(ex, max_length, stride) for ex in read_rows(data, scorer.tokenizer, scope)]
    flat = [w for ws in rows_per_example for w in ws if w.scored]
    if not flat:
        raise DataError(f"{data}: no token to score (scope={scope})\n  fix: use --scope all, or rows with answers")
    pad = scorer.tokenizer.pad_token_id if scorer.tokenizer.pad_token_id is not None else 0
    scores = score_rows(scorer.model, flat, batch_size=batch_size, pad_id=pad)
    tokens = sum(s.tokens for s in scores)
    nll = -sum(s.logprob for s in scores) / tokens
    examples = sum(1 for ws in rows_per_example if any(w.scored for w in ws))
    return PerplexityResult(
        scorer.name, str(data), scope, examples, tokens, len(flat), nll, math.exp(nll), max_length, stride, scorer.dtype
    )
