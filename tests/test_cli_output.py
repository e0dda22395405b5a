"""CLI output readable anywhere: whole error lines, help off a terminal, facts in words not colour.

The CLI runs with stderr/stdout captured (a file, as in a pipe or a CI log) and ``COLUMNS=40``;
paths are longer than 100 characters, so any hard wrap of an error line would split them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunelab.cli.data_cmd import MODEL_HELP
from tunelab.cli.main import main
from tunelab.memory.devices import Device, fit_lines
from tunelab.utils import log

GIB = 2**30
MARK_OPEN, MARK_CLOSE = "⟦", "⟧"


@pytest.fixture()
def narrow(monkeypatch):
    """A 40-column "terminal" width: rich reads COLUMNS at each print."""
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.delenv("TERMINAL_WIDTH", raising=False)


@pytest.fixture()
def long_dir(tmp_path) -> Path:
    folder = tmp_path / ("a-folder-with-a-long-name-" * 4 + "[v1]")  # brackets: markup must not eat them
    folder.mkdir()
    return folder


def alpaca_file(folder: Path, n: int, bad_line: bool = False) -> Path:
    path = folder / "d.jsonl"
    rows = [json.dumps({"instruction": f"Say {i}", "output": f"The number {i}."}) for i in range(n)]
    path.write_text("\n".join(rows + (["not json"] if bad_line else [])) + "\n")
    assert len(str(path)) > 100
    return path


def test_data_error_keeps_path_and_line_number_on_one_line(narrow, long_dir, capsys):
    path = alpaca_file(long_dir, 10, bad_line=True)
    assert main(["data", "prepare", str(path), "--model", "tiny", "--out", str(long_dir / "out")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith(f"error: {path} line 11:") for line in lines), lines


def test_fix_hint_is_printed_whole(narrow, long_dir, capsys):
    missing = long_dir / "missing.yaml"
    assert main(["train", str(missing)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"error: config file not found: {missing}",
                     "  fix: pass a YAML file, e.g. examples/sft-lora.yaml"]


def test_error_text_is_not_read_as_markup(narrow, capsys):
    """A message is text: ``[x]`` in a user's flag must be printed, not eaten as a style tag."""
    assert main(["data", "inspect", "d.jsonl", "--model", "tiny", "--column", "[x]"]) == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first == "error: --column '[x]' is not OURS=YOURS (e.g. --column instruction=prompt)"


def test_warnings_through_the_logger_are_whole_lines(narrow, capsys):
    message = "this warning is longer than forty columns and names /a/path/that/must/stay/whole.txt"
    log.logger.warning(message)
    assert capsys.readouterr().err.splitlines() == [f"warning: {message}"]


@pytest.mark.parametrize(("command", "help_text"), [
    (["data", "inspect"], MODEL_HELP),
    (["plan"], "lora, qlora, dora, prompt_tuning, prefix_tuning, llama_adapter, freeze, full."),
])
def test_help_off_a_terminal_keeps_each_option_description_on_one_line(narrow, capsys, command, help_text):
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert any(help_text in line for line in out.splitlines()), out


def test_fit_is_said_in_words_hand_computed():
    small, big = Device("small", "16 GiB card", 16 * GIB), Device("big", "80 GiB card", 80 * GIB)
    assert fit_lines(40 * GIB, [small, big]) == [
        "fits on: big", "does not fit on: small (needs 40.00 GiB; the largest of these, small, has 16.00 GiB)"]
    assert fit_lines(389.2 * GIB, [small, big]) == [
        "fits on: no listed device",
        "does not fit on: small, big (needs 389.20 GiB; the largest of these, big, has 80.00 GiB)"]
    assert fit_lines(16 * GIB, [small, big]) == ["fits on: small, big", "does not fit on: none"]


def colour_env(no_color: bool) -> dict[str, str]:
    """A forced colour terminal (FORCE_COLOR), with or without NO_COLOR."""
    env = {**os.environ, "FORCE_COLOR": "1", "TERM": "xterm-256color", "COLUMNS": "40"}
    env.pop("NO_COLOR", None)
    return {**env, "NO_COLOR": "1"} if no_color else env


def test_plan_no_device_holds_says_so_without_colour():
    """llama-3.1-405b fully fine-tuned needs terabytes: every listed device is named as too small."""
    program = "import sys; from tunelab.cli.main import main; sys.exit(main(sys.argv[1:]))"
    args = [sys.executable, "-c", program, "plan", "--model", "llama-3.1-405b", "--adapter", "full"]
    run = subprocess.run(args, capture_output=True, text=True, timeout=120, env=colour_env(no_color=True))
    assert run.returncode == 0, run.stderr
    assert "\x1b" not in run.stderr
    lines = run.stderr.splitlines()
    assert "fits on: no listed device" in lines
    refused = [line for line in lines if line.startswith("does not fit on: t4, l4, ")]
    assert len(refused) == 1 and "h200" in refused[0] and "the largest of these" in refused[0]


def inspect_output(monkeypatch, capsys, path: Path, no_color: bool) -> str:
    for key, value in colour_env(no_color).items():
        monkeypatch.setenv(key, value)
    if not no_color:
        monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(log, "console", log.make_console())  # the console reads NO_COLOR when made
    assert main(["data", "inspect", str(path), "--model", "tiny", "--template", "alpaca"]) == 0
    return capsys.readouterr().err


def test_no_color_inspect_has_no_escape_codes_and_marks_trained_tokens(monkeypatch, capsys, long_dir):
    path = alpaca_file(long_dir, 3)
    coloured = inspect_output(monkeypatch, capsys, path, no_color=False)
    assert "\x1b[" in coloured  # the forced terminal does style text: the check below can fail
    plain = inspect_output(monkeypatch, capsys, path, no_color=True)
    assert "\x1b" not in plain
    assert f"example {path}:1: " in plain
    assert f"legend: {MARK_OPEN}trained (in the loss){MARK_CLOSE}  prompt (label -100, unmarked)" in plain
    sample = plain.split("(label -100, unmarked)\n", 1)[1]
    prompt, trained = sample.split(MARK_OPEN, 1)
    assert "### Instruction:\nSay 0" in prompt and "### Response:" in prompt  # the prompt is unmarked
    assert trained.startswith("The number 0.") and trained.count(MARK_CLOSE) == 1 and MARK_OPEN not in trained
