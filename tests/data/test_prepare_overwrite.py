"""`tunelab data prepare --out DIR` never loses what DIR already holds (issue 9, criterion 7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.data.conftest import alpaca_rows
from tunelab.cli.main import main


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def setup(tmp_path) -> tuple[Path, Path]:
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join([json.dumps(r) for r in alpaca_rows(10)] + ["not json"]) + "\n")
    out = tmp_path / "prepared"
    out.mkdir()
    (out / "report.json").write_text('{"old": true}')
    return data, out


def _prepare(data: Path, out: Path, *extra: str) -> int:
    return main(["data", "prepare", str(data), "--model", "tiny", "--out", str(out), "--skip-invalid", *extra])


def test_prepare_refuses_non_empty_folder_without_overwrite(setup, capsys):
    data, out = setup
    before = _snapshot(out)
    assert _prepare(data, out) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_prepare_failing_midway_leaves_the_old_folder_byte_identical(setup, monkeypatch):
    import datasets

    data, out = setup
    before = _snapshot(out)
    real = datasets.Dataset.save_to_disk

    def save_then_fail(self, path, *args, **kwargs):  # train/ is written, validation/ fails
        if Path(path).name == "validation":
            raise OSError("No space left on device")
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", save_then_fail)
    with pytest.raises(OSError, match="No space left"):
        _prepare(data, out, "--overwrite")
    assert _snapshot(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["d.jsonl", "prepared"]


def test_prepare_with_overwrite_replaces_the_folder_and_reports_final_paths(setup):
    data, out = setup
    assert _prepare(data, out, "--overwrite") == 0
    report = json.loads((out / "report.json").read_text())
    assert "old" not in report and report["rejected"] == 1
    assert report["rejects_file"] == str(out / "rejects.jsonl")  # not the temporary folder it was written in
    assert json.loads((out / "rejects.jsonl").read_text())["line"] == 11
    assert sorted(p.name for p in out.parent.iterdir()) == ["d.jsonl", "prepared"]
