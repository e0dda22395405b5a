"""prepare(): report numbers, truncation/drop counts, rejects, save/load, and the CLI commands."""

from __future__ import annotations

import json

import pytest

from tests.data.conftest import alpaca_rows, trained_text
from tunelab.cli.main import main
from tunelab.config import DataArgs
from tunelab.data import load_prepared, prepare, save_prepared, tokenize_example
from tunelab.data.formats import read_examples
from tunelab.errors import DataError


def test_report_counts_match_the_rows(jsonl, tiny_tokenizer):
    path = jsonl(alpaca_rows(40))
    prepared = prepare(DataArgs(path=str(path), max_length=128, validation_split=0.25, seed=1), tiny_tokenizer)
    r = prepared.report
    assert (r.format, r.template, r.rows_read, r.rejected) == ("alpaca", "chat", 40, 0)
    assert (r.train_examples, r.validation_examples) == (30, 10)
    for name, rows in (("train", prepared.train), ("validation", prepared.validation)):
        assert r.trained_tokens[name] == sum(lab != -100 for row in rows for lab in row.labels)
        assert r.total_tokens[name] == sum(len(row) for row in rows)
        assert r.packing_efficiency[name] == pytest.approx(r.total_tokens[name] / (len(rows) * 128), abs=1e-4)
        assert all(len(row) <= 128 for row in rows)
    lengths = sorted(tokenize_example(e, tiny_tokenizer).full_length for e in read_examples(path).examples)
    assert (r.lengths.min, r.lengths.max, r.lengths.count) == (lengths[0], lengths[-1], 40)
    assert r.train_rows < r.train_examples  # packed
    assert json.loads(json.dumps(r.to_dict()))["lengths"]["p95"] == r.lengths.p95


def test_split_happens_before_packing(jsonl, tiny_tokenizer):
    path = jsonl(alpaca_rows(20))
    a = prepare(DataArgs(path=str(path), seed=3, validation_split=0.2), tiny_tokenizer)
    b = prepare(DataArgs(path=str(path), seed=3, validation_split=0.2), tiny_tokenizer, packing=False)
    decoded = {tiny_tokenizer.decode(row.input_ids) for row in b.validation}
    # the same validation examples end up in the packed rows
    packed_text = "".join(tiny_tokenizer.decode(row.input_ids) for row in a.validation)
    assert len(decoded) == 4 and all(text in packed_text for text in decoded)
    train_text = "".join(tiny_tokenizer.decode(row.input_ids) for row in a.train)
    assert not any(text in train_text for text in decoded)


def test_truncation_and_dropping_are_counted(jsonl, tiny_tokenizer):
    long_answer = {"instruction": "Hi", "input": "", "output": "word " * 200}
    long_prompt = {"instruction": "word " * 200, "input": "", "output": "short"}
    path = jsonl([*alpaca_rows(3), long_answer, long_prompt])
    prepared = prepare(DataArgs(path=str(path), max_length=48, validation_split=0, template="alpaca"),
                       tiny_tokenizer, packing=False)
    r = prepared.report
    assert (r.truncated, r.dropped, r.train_examples) == (2, 1, 4)
    cut = max(prepared.train, key=len)
    assert len(cut) == 48 and trained_text(tiny_tokenizer, cut.input_ids, cut.labels).startswith("word word")


def test_skip_invalid_writes_rejects(tmp_path, tiny_tokenizer):
    path = tmp_path / "d.jsonl"
    good = [json.dumps(r) for r in alpaca_rows(4)]
    path.write_text("\n".join([good[0], "{broken", good[1], json.dumps({"instruction": "x"}), good[2], good[3]]))
    with pytest.raises(DataError, match="line 2"):
        prepare(DataArgs(path=str(path)), tiny_tokenizer)
    prepared = prepare(DataArgs(path=str(path), skip_invalid=True, validation_split=0), tiny_tokenizer,
                       rejects_path=tmp_path / "rejects.jsonl")
    assert (prepared.report.rejected, prepared.report.train_examples, prepared.report.rows_read) == (2, 4, 6)
    written = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [(w["file"], w["line"], w["raw"]) for w in written] == [(str(path), 2, "{broken"),
                                                                    (str(path), 4, '{"instruction": "x"}')]
    assert "field 'output'" in written[1]["error"] and prepared.report.rejects_file == str(tmp_path / "rejects.jsonl")


def test_separate_validation_file(jsonl, tiny_tokenizer):
    train, val = jsonl(alpaca_rows(6), "t.jsonl"), jsonl(alpaca_rows(2), "v.jsonl")
    r = prepare(DataArgs(path=str(train), validation_path=str(val)), tiny_tokenizer).report
    assert (r.train_examples, r.validation_examples, r.files) == (6, 2, [str(train), str(val)])


def test_save_load_roundtrip_and_train_from_folder(jsonl, tiny_tokenizer, tmp_path):
    prepared = prepare(DataArgs(path=str(jsonl(alpaca_rows(12))), max_length=64), tiny_tokenizer)
    folder = save_prepared(prepared, tmp_path / "prep")
    loaded = load_prepared(folder)
    assert loaded.train == prepared.train and loaded.validation == prepared.validation
    assert loaded.report == prepared.report
    again = prepare(DataArgs(path=str(folder), max_length=64), tiny_tokenizer)
    assert again.train == prepared.train
    with pytest.raises(DataError, match="no-packing"):
        prepare(DataArgs(path=str(folder), max_length=64), tiny_tokenizer, packing=False)
    with pytest.raises(DataError, match="max_length"):
        prepare(DataArgs(path=str(folder), max_length=16), tiny_tokenizer)


def test_alignment_format_is_refused(jsonl, tiny_tokenizer):
    with pytest.raises(DataError, match="alignment"):
        prepare(DataArgs(path=str(jsonl(alpaca_rows(2))), format="preference"), tiny_tokenizer)


# --------------------------------------------------------------------------- CLI


def test_cli_inspect(jsonl, capsys):
    path = jsonl([*alpaca_rows(5), {"instruction": "Hi", "input": "", "output": "word " * 100}])
    assert main(["data", "inspect", str(path), "--model", "tiny", "--max-length", "64"]) == 0
    err = capsys.readouterr().err
    for expected in ("alpaca", "rows read", "truncated at max_length=64", "1 of 6", "token lengths", "legend",
                     "number 0 said<|im_end|>"):
        assert expected in err


def test_cli_prepare_writes_dataset_report_and_rejects(tmp_path, capsys):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join([json.dumps(r) for r in alpaca_rows(10)] + ["not json"]) + "\n")
    out = tmp_path / "prepared"
    assert main(["data", "prepare", str(path), "--model", "tiny", "--out", str(out)]) == 2
    assert "line 11" in capsys.readouterr().err and not out.exists()
    code = main(["data", "prepare", str(path), "--model", "tiny", "--template", "qa", "--out", str(out),
                 "--skip-invalid", "--max-length", "40", "--no-packing"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert (report["rejected"], report["template"], report["packing"], report["max_length"]) == (1, "qa", False, 40)
    assert report["train_examples"] + report["validation_examples"] == 10
    assert json.loads((out / "rejects.jsonl").read_text())["line"] == 11
    loaded = load_prepared(out)
    assert len(loaded.train) == report["train_rows"] == report["train_examples"]


def test_cli_bad_column_flag(jsonl):
    assert main(["data", "inspect", str(jsonl(alpaca_rows(2))), "--model", "tiny", "--column", "oops"]) == 2
