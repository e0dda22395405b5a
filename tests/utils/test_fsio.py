"""atomic_folder: a non-empty folder is refused without overwrite; a failure leaves the old folder as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunelab.errors import ConfigError
from tunelab.utils.fsio import atomic_folder, moved


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def old(tmp_path) -> Path:
    folder = tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("old a")
    (folder / "sub" / "b.bin").write_bytes(bytes(range(256)))
    return folder


def test_refuses_non_empty_folder_without_overwrite(old):
    before = _snapshot(old)
    ran = []
    with pytest.raises(ConfigError) as err, atomic_folder(old, overwrite=False) as tmp:
        ran.append(tmp)
    message = str(err.value)
    assert str(old) in message and "--overwrite" in message and "\n  fix: " in message
    assert ran == []  # refused before any work
    assert _snapshot(old) == before
    assert sorted(p.name for p in old.parent.iterdir()) == ["out"]  # no temporary folder left


def test_failure_midway_leaves_old_folder_byte_identical(old):
    before = _snapshot(old)
    with pytest.raises(RuntimeError, match="disk full"), atomic_folder(old, overwrite=True) as tmp:
        (tmp / "a.txt").write_text("new a, half written")
        raise RuntimeError("disk full")
    assert _snapshot(old) == before
    assert sorted(p.name for p in old.parent.iterdir()) == ["out"]


def test_overwrite_replaces_the_whole_folder(old):
    with atomic_folder(old, overwrite=True) as tmp:
        assert tmp.parent == old.parent and tmp != old and _snapshot(old)  # old still there while writing
        (tmp / "new.txt").write_text("new")
    assert _snapshot(old) == {"new.txt": b"new"}  # no stale file of the old folder mixed in
    assert sorted(p.name for p in old.parent.iterdir()) == ["out"]


def test_new_and_empty_folders_are_written_without_overwrite(tmp_path):
    (tmp_path / "empty").mkdir()
    for name in ("empty", "nested/new"):
        with atomic_folder(tmp_path / name) as tmp:
            (tmp / "x").write_text(name)
        assert (tmp_path / name / "x").read_text() == name


def test_a_file_in_the_way_is_refused(tmp_path):
    (tmp_path / "out").write_text("keep me")
    with pytest.raises(ConfigError, match="is a file"), atomic_folder(tmp_path / "out", overwrite=True):
        pass
    assert (tmp_path / "out").read_text() == "keep me"


def test_moved_maps_paths_under_the_temporary_folder(tmp_path):
    tmp, out = tmp_path / ".out.tmp-1", tmp_path / "out"
    assert moved(tmp / "m.gguf", tmp, out) == out / "m.gguf"
    assert moved(tmp, tmp, out) == out
    assert moved(tmp_path / "elsewhere", tmp, out) == tmp_path / "elsewhere"
