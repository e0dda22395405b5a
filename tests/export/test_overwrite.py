"""`tunelab export --out DIR` never loses what DIR already holds (issue 9, criterion 7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunelab.errors import ConfigError


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def previous(tmp_path) -> Path:
    """An existing export folder with the user's own file in it."""
    folder = tmp_path / "exports" / "hf"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"previous": true}')
    (folder / "NOTES.md").write_text("my notes")
    return folder


def test_export_refuses_non_empty_folder_without_overwrite(lora_run, previous, capsys):
    from tunelab.cli.main import main
    from tunelab.export import export

    before = _snapshot(previous)
    with pytest.raises(ConfigError) as err:
        export(lora_run, "hf", out=previous)
    assert str(previous) in str(err.value) and "--overwrite" in str(err.value)
    assert main(["export", str(lora_run), "--format", "adapter", "--out", str(previous)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _snapshot(previous) == before
    assert sorted(p.name for p in previous.parent.iterdir()) == ["hf"]


def test_export_failing_midway_leaves_the_old_folder_byte_identical(lora_run, previous, monkeypatch):
    from tunelab.export import export
    from tunelab.models import merge  # the merge (and its generation config) lives in tunelab.models

    def fail(*args, **kwargs):  # the weights and tokenizer are already written when this runs
        raise OSError("No space left on device")

    monkeypatch.setattr(merge, "write_generation_config", fail)
    before = _snapshot(previous)
    with pytest.raises(OSError, match="No space left"):
        export(lora_run, "hf", out=previous, overwrite=True)
    assert _snapshot(previous) == before
    assert sorted(p.name for p in previous.parent.iterdir()) == ["hf"]  # the half-written copy is gone


def test_export_with_overwrite_replaces_the_folder(lora_run, previous):
    from tunelab.cli.main import main

    assert main(["export", str(lora_run), "--format", "adapter", "--out", str(previous), "--overwrite"]) == 0
    assert _snapshot(previous) == _snapshot(lora_run / "adapter")  # the adapter, and nothing of the old folder
    assert sorted(p.name for p in previous.parent.iterdir()) == ["hf"]


def test_gguf_result_path_points_into_the_final_folder(lora_run, tmp_path):
    from tunelab.export import export

    result = export(lora_run, "gguf", out=tmp_path / "gguf", quant="f32", modelfile=False)
    assert result.path == tmp_path / "gguf" / f"{lora_run.name}-f32.gguf" and result.path.is_file()
