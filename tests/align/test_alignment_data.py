"""Alignment data goes through the data layer: any file type it reads, and SFT's exact rendering."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.align.conftest import preference_rows, unpaired_rows, write_jsonl
from tunelab.config import DataArgs
from tunelab.data import Example, tokenize_example
from tunelab.data.preference import Renderer, load_alignment_data, write_rejects
from tunelab.errors import DataError

CONVERSATION = [
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Four."},
    {"role": "user", "content": "And three plus three?"},
]
CHOSEN, REJECTED = "Six, of course.", "No idea."
# a Jinja chat template whose turn terminator is a special token other than EOS (<|im_end|>)
JINJA_SPECIAL_END = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}: {{ m['content'] }}<|endoftext|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant: {% endif %}"
)


def _args(path: Path | str, **kw) -> DataArgs:
    return DataArgs(**{"path": str(path), "validation_split": 0.0, "max_length": 96, "max_prompt_length": 64, **kw})


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _tuples(items) -> list[tuple]:
    return [(it.prompt_ids, it.chosen_ids, it.rejected_ids, it.margin) for it in items]


def test_preference_csv_and_parquet_read_like_jsonl(tmp_path, tiny_tokenizer):
    rows = [{**r, "margin": 0.5 * i} for i, r in enumerate(preference_rows(6, seed=3))]
    reference = load_alignment_data(_args(write_jsonl(tmp_path / "p.jsonl", rows)), tiny_tokenizer, "preference")
    assert len(reference.train) == 6 and not reference.validation and not reference.rejects
    assert [it.margin for it in reference.train] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    for path in (write_csv(tmp_path / "p.csv", rows), write_parquet(tmp_path / "p.parquet", rows)):
        data = load_alignment_data(_args(path), tiny_tokenizer, "preference")
        assert _tuples(data.train) == _tuples(reference.train), path.suffix


def test_unpaired_csv_labels_are_text(tmp_path, tiny_tokenizer):
    rows = unpaired_rows(4, seed=5)
    reference = load_alignment_data(_args(write_jsonl(tmp_path / "k.jsonl", rows)), tiny_tokenizer, "unpaired")
    csv_rows = [{**r, "label": str(r["label"]).lower()} for r in rows]  # what a CSV holds: "true"/"false"
    data = load_alignment_data(_args(write_csv(tmp_path / "k.csv", csv_rows)), tiny_tokenizer, "unpaired")
    assert [it.label for it in data.train] == [True, False, True, False]
    assert [(it.prompt_ids, it.completion_ids, it.label) for it in data.train] == [
        (it.prompt_ids, it.completion_ids, it.label) for it in reference.train]


def test_bad_csv_row_names_file_and_line_or_is_rejected(tmp_path, tiny_tokenizer):
    rows = preference_rows(3, seed=4)
    rows[1] = {**rows[1], "rejected": rows[1]["chosen"]}  # identical sides: header is line 1, so line 3
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError, match=r"(?s)bad\.csv:3: 'chosen' is identical to 'rejected'.*skip_invalid"):
        load_alignment_data(_args(path), tiny_tokenizer, "preference")
    data = load_alignment_data(_args(path, skip_invalid=True), tiny_tokenizer, "preference")
    assert len(data.train) == 2 and [(r.file, r.line) for r in data.rejects] == [(str(path), 3)]
    assert data.report("preference")["rejected_rows"] == 1


def test_malformed_jsonl_line_is_a_counted_reject_in_rejects_jsonl(tmp_path, tiny_tokenizer):
    path = Path(write_jsonl(tmp_path / "p.jsonl", preference_rows(3, seed=6)))
    path.write_text(path.read_text() + "{oops\n")
    with pytest.raises(DataError, match=r"p\.jsonl:4: malformed JSON"):
        load_alignment_data(_args(path), tiny_tokenizer, "preference")
    data = load_alignment_data(_args(path, skip_invalid=True), tiny_tokenizer, "preference")
    write_rejects(data, tmp_path)
    written = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert len(data.train) == 3 and len(written) == 1
    assert (written[0]["file"], written[0]["line"], written[0]["raw"]) == (str(path), 4, "{oops")


@pytest.mark.parametrize(("template", "terminator"), [("chat", "<|im_end|>"), ("alpaca", "<|im_end|>"),
                                                      ("jinja", "<|endoftext|>")])
def test_chosen_tokens_are_the_tokens_sft_trains(tmp_path, tiny_tokenizer, template, terminator):
    if template == "jinja":
        template = str(tmp_path / "t.jinja")
        Path(template).write_text(JINJA_SPECIAL_END)
    row = {"chosen": [*CONVERSATION, {"role": "assistant", "content": CHOSEN}],
           "rejected": [*CONVERSATION, {"role": "assistant", "content": REJECTED}]}
    args = _args(write_jsonl(tmp_path / "m.jsonl", [row]), template=template, max_length=320, max_prompt_length=256)
    item = load_alignment_data(args, tiny_tokenizer, "preference").train[0]
    assert tiny_tokenizer.decode(item.chosen_ids) == CHOSEN + terminator
    assert tiny_tokenizer.decode(item.rejected_ids) == REJECTED + terminator
    # SFT on the same conversation: the prompt is the untrained head, the chosen completion is
    # exactly the trained tokens of the final turn, and nothing after it is trained
    for side, ids in ((CHOSEN, item.chosen_ids), (REJECTED, item.rejected_ids)):
        sft = tokenize_example(Example([*CONVERSATION, {"role": "assistant", "content": side}], None, "m", 1),
                               tiny_tokenizer, template)
        n, end = len(item.prompt_ids), len(item.prompt_ids) + len(ids)
        assert sft.input_ids[:n] == item.prompt_ids
        assert sft.labels[n:end] == ids
        assert all(label == -100 for label in sft.labels[end:])
    # the reward scorer's encoding is the same prompt + completion
    assert Renderer(tiny_tokenizer, args).encode(CONVERSATION, CHOSEN) == item.prompt_ids + item.chosen_ids
