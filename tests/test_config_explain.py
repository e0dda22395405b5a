"""`tunelab config explain` reads whole in a pipe and at 80 columns, with YAML-style types."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tunelab.config_doc import explain, render_text, type_label


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1"}
    cmd = [sys.executable, "-c", "import sys; from tunelab.cli.main import main; sys.exit(main(sys.argv[1:]))", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_pipe_at_80_columns_keeps_keys_whole_and_types_readable():
    """Before: a rich table folded `training.micro_bat` / `ch_size` and printed `<class 'int'>`."""
    out = _cli("config", "explain", "training")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "  training.micro_batch_size  int  default: 4" in lines
    assert "  training.max_grad_norm  float | None  default: 1.0" in lines
    assert "  training.betas  tuple[float, float]  default: [0.9, 0.999]" in lines
    assert "<class" not in out.stdout and "typing." not in out.stdout
    assert lines[0] == "training: The training loop." and not any(line.startswith("model.") for line in lines)


def test_each_methods_fields_are_listed():
    out = _cli("config", "explain", "method_args.ppo")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("method_args (method: ppo):")
    assert "  method_args.reward_function  str | None  default: null" in out.stdout
    assert "  method_args.rollout_batch_size  int  default: 16" in out.stdout
    every = {row.group for row in explain("method_args")}
    methods = ("dpo", "simpo", "orpo", "kto", "reward", "ppo", "distill")  # sft has no options
    assert every == {"run"} | {f"method_args (method: {m})" for m in methods}  # run: the method_args key itself
    assert "method_args.sft: no fields" in _cli("config", "explain", "method_args.sft").stdout
    distill = _cli("config", "explain", "method_args.distill").stdout
    assert "  method_args.teacher  str | None  default: null" in distill and "(required) Teacher" in distill


def test_unknown_section_is_an_error_listing_sections():
    out = _cli("config", "explain", "trainng")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "no config key starts with 'trainng'" in out.stderr and "fix: use a section (model, adapter" in out.stderr


def test_terminal_width_wraps_descriptions_only():
    rows = explain()
    text = render_text(rows, 80)
    lines = text.splitlines()
    for row in rows:  # each key line is there whole, however long its type
        assert f"  {row.key}  {row.type}  default: {row.default}" in lines
    for line in lines:
        if line.startswith("      "):  # description lines wrap at word boundaries within 80 columns
            assert len(line) <= 80 or " " not in line.strip()
    words = " ".join(line.strip() for line in lines if line.startswith("      ")).split()
    assert words == " ".join(r.description for r in rows if r.description).split()  # nothing lost or split


@pytest.mark.parametrize(
    ("annotation", "label"),
    [(int, "int"), (float | None, "float | None"), (list[str], "list[str]"), (dict[str, str], "dict[str, str]")],
)
def test_type_labels(annotation, label):
    assert type_label(annotation) == label


def test_type_label_of_literals_as_in_the_schema():
    from tunelab.config import AdapterArgs

    assert type_label(AdapterArgs.model_fields["target_modules"].annotation) == "list[str] | 'all-linear'"
    assert type_label(AdapterArgs.model_fields["prompt_init_text"].annotation) == "str | None"
