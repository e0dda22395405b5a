"""Length statistics and the histogram of ``tunelab data inspect``, on hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from tunelab.data import LengthStats, TokenizedExample
from tunelab.data.inspect import histogram, marked_spans


def test_length_stats_by_hand():
    s = LengthStats.of([100, 1, 3, 2, 4])
    # sorted 1,2,3,4,100: median = 3; p95 at position 3.8 = 4 + 0.8 * 96 = 80.8 (numpy's linear method)
    assert (s.count, s.min, s.median, s.max, s.mean) == (5, 1, 3.0, 100, 22.0)
    assert s.p95 == pytest.approx(80.8)
    assert s.p95 == pytest.approx(float(np.percentile([1, 2, 3, 4, 100], 95)))
    assert LengthStats.of([4, 6]).median == 5.0
    assert LengthStats.of([]) == LengthStats()


def test_histogram_bins_cover_every_length_once():
    bins = histogram([1, 2, 2, 10, 20], bins=4)  # width ceil(20/4) = 5
    assert [(b.low, b.high, b.count) for b in bins] == [(1, 5, 3), (6, 10, 1), (11, 15, 0), (16, 20, 1)]
    assert [(b.low, b.high, b.count) for b in histogram([7, 7, 7])] == [(7, 7, 3)]


def test_marked_spans_follow_the_labels(tiny_tokenizer):
    ids = tiny_tokenizer("Question: hi Answer: yes<|im_end|>", add_special_tokens=False).input_ids
    answer = tiny_tokenizer(" yes<|im_end|>", add_special_tokens=False).input_ids
    n = len(ids) - len(answer)
    spans = marked_spans(TokenizedExample(ids, [-100] * n + ids[n:], len(ids)), tiny_tokenizer)
    assert spans == [("Question: hi Answer:", False), (" yes<|im_end|>", True)]
