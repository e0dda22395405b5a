"""The scan as a pre-flight: ``tunelab data inspect`` and ``tunelab train`` print one summary line
(counts by reason and the command that lists the rows) and go on."""

from __future__ import annotations

import json
from pathlib import Path

from tunelab.cli.main import main
from tunelab.security.scan.preflight import preflight_line

ROWS = [{"instruction": f"What colour is box number {i}?", "output": f"Box {i} is painted in shade {i * 7}."}
        for i in range(14)]
ROWS[3] = dict(ROWS[2])  # a duplicate
ROWS[5] = {"instruction": "Who should I write to?", "output": "Write to grace.hopper@example.com please."}


def data_file(folder: Path) -> Path:
    path = folder / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def test_preflight_line_counts_reasons_and_names_the_command(tmp_path):
    path = data_file(tmp_path)
    assert preflight_line(path) == (f"security scan of {path}: 2 of 14 rows flagged (1 duplicate, 1 pii:email); "
                                    f"list them with: tunelab scan {path}")
    assert preflight_line(path, "alpaca", {"instruction": "instruction"}).endswith(
        f"tunelab scan {path} --format alpaca --column instruction=instruction")


def test_preflight_skips_what_it_cannot_scan(tmp_path):
    assert preflight_line(None) is None
    assert preflight_line(tmp_path / "missing.jsonl") is None  # the data layer reports it itself
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "tunelab_prepared.json").write_text("{}")
    assert preflight_line(prepared) is None


def test_data_inspect_prints_the_scan_line(tmp_path, capsys):
    path = data_file(tmp_path)
    assert main(["data", "inspect", str(path), "--model", "tiny"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert f"security scan of {path}: 2 of 14 rows flagged (1 duplicate, 1 pii:email); list them with: " \
           f"tunelab scan {path}" in err


def test_train_prints_the_scan_line_first_and_still_trains(tmp_path, capsys):
    path = data_file(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text("method: sft\n")
    args = ["train", str(config), "model.name=tiny", f"data.path={path}", "data.max_length=64",
            "training.max_steps=1", "training.micro_batch_size=4", "training.precision=fp32",
            "training.eval_every=0", f"output_dir={tmp_path / 'runs'}", "name=flagged"]
    assert main(args) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"security scan of {path}: 2 of 14 rows flagged")
    assert (tmp_path / "runs" / "flagged" / "result.json").exists()
