"""tunelab/utils/allocator.py: which malloc the process runs on, and the one-time re-execution
that preloads tcmalloc (or jemalloc) before anything is allocated."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tunelab.utils.allocator import find_allocator, loaded_allocator

PROBE = """
import json, os, sys
from tunelab.utils.allocator import loaded_allocator, preload_allocator
used = preload_allocator()
print(json.dumps({"used": used, "maps": loaded_allocator(), "pid": os.getpid(),
                  "preload": os.environ.get("LD_PRELOAD"), "argv": sys.argv[1:]}))
"""


def probe(choice: str | None, *args: str, preload: str | None = None) -> tuple[dict, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("TUNELAB_MALLOC", "LD_PRELOAD")}
    if choice is not None:
        env["TUNELAB_MALLOC"] = choice
    if preload is not None:
        env["LD_PRELOAD"] = preload
    proc = subprocess.Popen([sys.executable, "-c", PROBE, *args], env=env, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    return json.loads(out.strip().splitlines()[-1]), proc.pid


def test_loaded_allocator_reads_the_mapped_libraries():
    glibc = "7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
    assert loaded_allocator(glibc) == "system"
    assert loaded_allocator(glibc + "7f02 r-xp 0 0 2 /usr/lib/libtcmalloc_minimal.so.4.5.10\n") == "tcmalloc"
    assert loaded_allocator(glibc + "7f02 r-xp 0 0 2 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n") == "jemalloc"
    assert loaded_allocator("") == "system"


def test_system_choice_keeps_glibc():
    got, _ = probe("system")
    assert got["used"] == got["maps"] == "system"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD and /proc are Linux")
@pytest.mark.parametrize("choice", [None, "jemalloc"])
def test_preloads_the_installed_allocator_in_the_same_process(choice):
    name = choice or "tcmalloc"  # the default
    if find_allocator(name) is None:
        pytest.skip(f"{name} is not installed (Debian: libtcmalloc-minimal4, libjemalloc2)")
    got, pid = probe(choice, "a b", "--flag")
    # re-executed once: the library is mapped, the PID and the arguments are the launcher's, and
    # LD_PRELOAD is clean again for the process's own subprocesses
    assert got["used"] == got["maps"] == name
    assert got["pid"] == pid
    assert got["argv"] == ["a b", "--flag"]
    assert got["preload"] is None


@pytest.mark.skipif(find_allocator("tcmalloc") is None, reason="tcmalloc is not installed")
def test_a_users_own_preload_is_kept():
    other = find_allocator("tcmalloc")
    got, _ = probe("jemalloc", preload=other) if find_allocator("jemalloc") else probe("tcmalloc", preload=other)
    # already on a replacement malloc: no second re-execution, the user's LD_PRELOAD untouched
    assert got["used"] == "tcmalloc"
    assert got["preload"] == other
