"""Write a folder so that nothing already on disk is lost: all of it, or none of it.

A command that writes a folder the user named (``export --out``, ``data prepare --out``) must
neither mix new files into an old folder nor leave a half-written one when it fails midway
(a crash, a full disk, an unsupported architecture discovered after the weights were merged).
:func:`atomic_folder` refuses a non-empty folder unless the user said ``--overwrite``, lets the
caller write into a temporary sibling (same file system, so the final move is a rename), and
only after the body succeeded moves the old folder aside, renames the new one into place and
deletes the old one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tunelab.errors import ConfigError


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and next(path.iterdir(), None) is None


def check_writable(out: Path, overwrite: bool, option: str = "--out") -> None:
    """Raise :class:`ConfigError` when ``out`` holds something and ``overwrite`` was not given."""
    if not out.exists() or _is_empty_dir(out):
        return
    if not out.is_dir():
        raise ConfigError(f"{out} is a file, not a folder; nothing was written.\n  fix: write elsewhere: {option} DIR")
    if not overwrite:
        raise ConfigError(
            f"{out} already exists and is not empty; nothing was written.\n"
            f"  fix: pass --overwrite to replace it (the old folder is kept until the new one is complete), "
            f"or write elsewhere with {option} DIR"
        )


def replace_folder(new: Path, out: Path) -> Path:
    """Rename the complete folder ``new`` to ``out``; an old ``out`` is removed only once ``new`` is in place."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        old.rmdir()
        out.rename(old)
    try:
        new.rename(out)
    except BaseException:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


@contextmanager
def atomic_folder(out: str | Path, overwrite: bool = False, option: str = "--out") -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out``; on success it becomes ``out``.

    Raises:
        ConfigError: ``out`` is a file, or a non-empty folder and ``overwrite`` is false (checked
            before the body runs, so no work is wasted).

    On any exception in the body the temporary folder is removed and ``out`` is left as it was.
    """
    out = Path(out)
    check_writable(out, overwrite, option)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        yield tmp
        replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def moved(path: Path, tmp: Path, out: Path) -> Path:
    """Where ``path`` (written under ``tmp``) lives once ``tmp`` became ``out``."""
    return out / path.relative_to(tmp) if path.is_relative_to(tmp) else path


def write_files(files: dict[Path, bytes], overwrite: bool = False) -> list[Path]:
    """Write several files into folders that may hold other things (``tunelab examples copy NAME .``).

    Unlike :func:`atomic_folder` nothing else in the folders is touched. A file that exists with
    other content is refused unless ``overwrite`` (all are checked before any is written; an
    identical one is left as is); each file is written to a temporary name and renamed into place.
    """
    blocked = [str(p) for p in files if p.exists() and not p.is_file()]
    if blocked:
        raise ConfigError(f"{', '.join(blocked)}: a folder is in the way; nothing was written.\n"
                          "  fix: copy into another folder")
    differ = [p for p, data in files.items() if p.exists() and p.read_bytes() != data]
    if differ and not overwrite:
        names = ", ".join(str(p) for p in differ)
        raise ConfigError(
            f"{names} already exist{'s' if len(differ) == 1 else ''} with other content; nothing was written.\n"
            "  fix: pass --overwrite to replace them, or copy into another folder"
        )
    written = []
    for path, data in files.items():
        if path.is_file() and path.read_bytes() == data:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # same folder: the rename is atomic
        try:
            tmp.write_bytes(data)
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        written.append(path)
    return written
