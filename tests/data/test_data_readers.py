"""Readers and format detection: every file type, every format, column mapping, row locations."""

from __future__ import annotations

import json

import pytest

from tests.data.conftest import alpaca_rows
from tunelab.data import read_examples
from tunelab.errors import DataError

CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"instruction": "a", "input": "b", "output": "c"}, "alpaca"),
        ({"question": "q", "answer": "a"}, "qa"),
        ({"messages": CHAT}, "messages"),
        ({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}, "sharegpt"),
        ({"text": "raw text"}, "text"),
    ],
)
def test_detects_each_format(jsonl, row, expected):
    result = read_examples(jsonl([row, row]))
    assert result.format == expected
    assert len(result.examples) == 2 and result.rows_read == 2


def test_normalized_examples(jsonl):
    alpaca = read_examples(jsonl([{"instruction": "Do", "input": "ctx", "output": "Done", "system": "Be brief"}]))
    ex = alpaca.examples[0]
    assert ex.messages == [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Do"},
                           {"role": "assistant", "content": "Done"}]
    assert ex.input == "ctx"
    assert ex.conversation()[1]["content"] == "Do\n\nctx"
    share = read_examples(jsonl([{"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "H"},
                                                    {"from": "gpt", "value": "G"}]}], "s.jsonl"))
    assert [m["role"] for m in share.examples[0].messages] == ["system", "user", "assistant"]
    text = read_examples(jsonl([{"text": "hello world"}], "t.jsonl")).examples[0]
    assert text.messages is None and text.text == "hello world"


def test_column_mapping_detects_and_renames(jsonl):
    path = jsonl([{"prompt": "What?", "completion": "That."}])
    with pytest.raises(DataError, match="cannot tell the data format"):
        read_examples(path)
    result = read_examples(path, columns={"question": "prompt", "answer": "completion"})
    assert result.format == "qa"
    expected = [{"role": "user", "content": "What?"}, {"role": "assistant", "content": "That."}]
    assert result.examples[0].messages == expected


def test_explicit_format_with_mapping_names_your_column(jsonl):
    path = jsonl([{"prompt": "What?", "reply": "x"}])
    with pytest.raises(DataError) as err:
        read_examples(path, format="alpaca", columns={"instruction": "prompt", "output": "completion"})
    assert "line 1" in str(err.value) and "field 'output'" in str(err.value) and "'completion'" in str(err.value)


def test_unknown_column_name_is_rejected(jsonl):
    with pytest.raises(DataError, match="unknown column name"):
        read_examples(jsonl(alpaca_rows(1)), columns={"instructions": "x"})


def test_json_list_and_data_key(tmp_path):
    rows = alpaca_rows(3)
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "b.json").write_text(json.dumps({"data": rows}))
    for name in ("a.json", "b.json"):
        result = read_examples(tmp_path / name)
        assert [e.line for e in result.examples] == [1, 2, 3]
        assert result.examples[2].messages[1]["content"] == "number 2 said"


def test_jsonl_lines_count_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n" + json.dumps(alpaca_rows(1)[0]) + "\n\n" + json.dumps(alpaca_rows(2)[1]) + "\n")
    assert [e.line for e in read_examples(path).examples] == [2, 4]


def test_csv_lines_follow_multiline_records(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('question,answer\n"two\nlines",first\nq2,second\n')
    result = read_examples(path)
    assert result.format == "qa"
    assert [e.line for e in result.examples] == [2, 4]
    assert result.examples[0].messages[0]["content"] == "two\nlines"


def test_csv_messages_column_holds_json(tmp_path):
    import csv

    path = tmp_path / "m.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["messages"])
        writer.writerow([json.dumps(CHAT)])
    assert read_examples(path).examples[0].messages == CHAT


def test_parquet_and_hf_folder(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list(alpaca_rows(4))
    ds.to_parquet(str(tmp_path / "d.parquet"))
    ds.save_to_disk(str(tmp_path / "folder"))
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "dict"))
    for path in (tmp_path / "d.parquet", tmp_path / "folder", tmp_path / "dict"):
        result = read_examples(path)
        assert result.format == "alpaca"
        assert [e.line for e in result.examples] == [1, 2, 3, 4]
        assert result.examples[3].source == str(path)


def test_openai_content_parts_are_joined(jsonl):
    row = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                        {"role": "assistant", "content": "c"}]}
    assert read_examples(jsonl([row])).examples[0].messages[0]["content"] == "ab"
