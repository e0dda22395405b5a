"""Each kind of bad data is a DataError naming file, line (or row) and field, with a fix."""

from __future__ import annotations

import json

import pytest

from tests.data.conftest import alpaca_rows
from tunelab.data import read_examples
from tunelab.errors import DataError


def _error(path, **kwargs) -> str:
    with pytest.raises(DataError) as err:
        read_examples(path, **kwargs)
    return str(err.value)


def _lines(path, lines: list[str]):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_malformed_json_line(tmp_path):
    good = json.dumps(alpaca_rows(1)[0])
    msg = _error(_lines(tmp_path / "d.jsonl", [good, good, '{"instruction": "x", "output": ']))
    assert f"{tmp_path / 'd.jsonl'} line 3" in msg and "malformed JSON" in msg and "--skip-invalid" in msg


@pytest.mark.parametrize(
    ("row", "field", "problem"),
    [
        ({"instruction": "x"}, "output", "missing"),
        ({"instruction": "x", "output": 5}, "output", "must be a string, got int"),
        ({"instruction": "x", "output": "   "}, "output", "the answer is empty"),
        ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]},
         "messages[1].content", "the answer is empty"),
        ({"messages": [{"role": "user", "content": "x"}]}, "messages", "no assistant message"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "unknown role"),
        ({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "x"}]}, "messages[1]",
         "starts with an assistant message"),
        ({"messages": "hello"}, "messages", "must be a non-empty list"),
        ({"conversations": [{"from": "human", "value": "x"}, {"from": "alien", "value": "y"}]},
         "conversations[1].from", "unknown speaker"),
        ({"text": 3}, "text", "must be a string"),
    ],
)
def test_bad_field_names_line_and_field(tmp_path, row, field, problem):
    first = next(iter(row))
    ok = {"instruction": alpaca_rows(1)[0], "messages": {"messages": [{"role": "user", "content": "a"},
          {"role": "assistant", "content": "b"}]}, "conversations": {"conversations": [{"from": "human", "value": "a"},
          {"from": "gpt", "value": "b"}]}, "text": {"text": "fine"}}[first]
    path = _lines(tmp_path / "d.jsonl", [json.dumps(ok), json.dumps(row)])
    msg = _error(path)
    assert "d.jsonl line 2" in msg and f"field '{field}'" in msg and problem in msg and "fix:" in msg


def test_table_rows_say_row(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps([*alpaca_rows(2), {"instruction": "x", "output": None}]))
    msg = _error(tmp_path / "d.json")
    assert "d.json row 3" in msg and "field 'output'" in msg


@pytest.mark.parametrize("name", ["d.jsonl", "d.json", "d.csv", "d.parquet"])
def test_empty_file(tmp_path, name):
    (tmp_path / name).write_text("  \n")
    assert "empty" in _error(tmp_path / name)


def test_undecodable_bytes_give_offset_and_fix(tmp_path):
    good = (json.dumps(alpaca_rows(1)[0]) + "\n").encode()
    bad = b'{"instruction": "caf' + b"\xe9" + b'", "output": "x"}\n'
    (tmp_path / "d.jsonl").write_bytes(good + bad)
    msg = _error(tmp_path / "d.jsonl")
    offset = len(good) + len('{"instruction": "caf')
    assert "line 2" in msg and f"byte offset {offset}" in msg and "UTF-8" in msg and "iconv" in msg
    (tmp_path / "d.csv").write_bytes(b"question,answer\nq,ok\nq2,caf\xe9\n")
    msg = _error(tmp_path / "d.csv")
    head = b"question,answer\nq,ok\nq2,caf"  # the bad byte comes right after this
    assert "line 3" in msg and f"byte offset {len(head)}" in msg and "UTF-8" in msg


def test_unknown_format_lists_formats_and_columns(tmp_path):
    msg = _error(_lines(tmp_path / "d.jsonl", [json.dumps({"foo": 1, "bar": 2})]))
    assert "['bar', 'foo']" in msg
    for expected in ("alpaca: columns instruction, output", "qa: columns question, answer", "messages", "sharegpt",
                     "text"):
        assert expected in msg


def test_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "d.txt").write_text("hello")
    assert ".jsonl" in _error(tmp_path / "d.txt")
    assert "not found" in _error(tmp_path / "nope.jsonl")


def test_skip_invalid_keeps_good_rows_and_counts_bad(tmp_path):
    rows = [json.dumps(r) for r in alpaca_rows(3)]
    path = _lines(tmp_path / "d.jsonl", [rows[0], "{oops", rows[1], json.dumps({"instruction": "x", "output": ""}),
                                         "[1, 2]", rows[2]])
    result = read_examples(path, skip_invalid=True)
    assert [e.line for e in result.examples] == [1, 3, 6]
    assert [(r.line, r.raw) for r in result.rejects] == [(2, "{oops"), (4, '{"instruction": "x", "output": ""}'),
                                                         (5, "[1, 2]")]
    assert "malformed JSON" in result.rejects[0].error and "empty" in result.rejects[1].error
    assert "JSON object" in result.rejects[2].error
