"""The process's memory allocator: tcmalloc preloaded where installed, and huge pages for torch.

**Allocator.** torch's CPU tensors come from ``malloc``. glibc's ``malloc`` serves the 2-25 MB
blocks of a training step from one heap, and a freed block in the middle of it stays resident
until something of a size that fits reuses it; activations saved for backward interleave with
freed temporaries, and the heap's resident size ends each step well above what is live. On the
bundled model at micro-batch 8 x 512 (``python bench/profile_step.py --packing --steps 3 --memory``,
at commit cdb064a) three steps peaked at 6.07 GiB with glibc, 4.50 GiB with tcmalloc (``libtcmalloc_minimal``,
gperftools), whose size-classed spans are reused step after step; its steps were no slower.
``malloc`` can only be replaced before a process starts, so :func:`preload_allocator` re-executes
the command once with ``LD_PRELOAD`` set (``execve`` keeps the PID, so launchers such as
``torchrun`` or ``accelerate launch`` see the same child). ``TUNELAB_MALLOC`` chooses:
``tcmalloc`` (default), ``jemalloc``, or ``system`` (keep glibc's). Where the library is not
installed (``apt install libtcmalloc-minimal4`` on Debian/Ubuntu) the command runs on glibc.

**Huge pages.** torch's CPU allocator reads ``THP_MEM_ALLOC_ENABLE`` once, at its first
allocation: with it, blocks of 2 MiB and more are 2 MiB-aligned and ``madvise(MADV_HUGEPAGE)``'d,
so first touching a fresh activation costs one page fault per 2 MiB instead of one per 4 KiB.
That matters once ``training.map_large_blocks`` hands large blocks back to the OS, when every new
activation is a fresh mapping (``bench/alloc_faults.py`` measures the fault cost on the machine at
hand). The CLI asks for it before any command imports torch; a user's own setting wins.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path

THP_ENV = "THP_MEM_ALLOC_ENABLE"
MALLOC_ENV = "TUNELAB_MALLOC"
#: Set in the re-executed process's environment, so that a failed preload is not retried forever.
_TRIED_ENV = "_TUNELAB_MALLOC_TRIED"
#: ``TUNELAB_MALLOC`` value -> the shared libraries that provide it, best first.
ALLOCATORS: dict[str, tuple[str, ...]] = {
    "tcmalloc": ("tcmalloc_minimal", "tcmalloc"),
    "jemalloc": ("jemalloc",),
}
#: tcmalloc reports every allocation above 1 GiB on stderr unless told otherwise (weights do that).
_QUIET = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 60)}


def prefer_huge_pages() -> bool:
    """Ask torch for huge pages on its large CPU blocks unless the environment already decides;
    True when they are on. Without effect once torch has allocated (tests calling the CLI in-process)."""
    os.environ.setdefault(THP_ENV, "1")
    return os.environ[THP_ENV] == "1"


def loaded_allocator(maps: str | None = None) -> str:
    """Which allocator this process runs on: a key of :data:`ALLOCATORS` or ``"system"``
    (read from ``/proc/self/maps``; ``maps`` for tests)."""
    if maps is None:
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            return "system"
    for name, libs in ALLOCATORS.items():
        if any(f"/lib{lib}.so" in maps for lib in libs):
            return name
    return "system"


def find_allocator(name: str) -> str | None:
    """The loader name (``libtcmalloc_minimal.so.4``) of the first installed library for ``name``."""
    for lib in ALLOCATORS.get(name, ()):
        found = ctypes.util.find_library(lib)
        if found:
            return found
    return None


def preload_allocator() -> str:
    """Make sure the process runs on ``TUNELAB_MALLOC``'s allocator; returns the one in use.

    Re-executes the current command line (``sys.orig_argv``) with the library in ``LD_PRELOAD``
    when it is installed and not loaded yet; call it first thing in a program's entry point, before
    anything is printed or started. Once loaded, the library is dropped from ``LD_PRELOAD`` again,
    so that subprocesses (a browser, llama.cpp) start on their own allocators. Linux only.
    """
    choice = os.environ.get(MALLOC_ENV, "tcmalloc").strip().lower()
    if choice not in (*ALLOCATORS, "system"):
        print(
            f"warning: {MALLOC_ENV}={choice!r} is not one of {', '.join([*ALLOCATORS, 'system'])}; "
            "using the system allocator",
            file=sys.stderr,
        )
    current = loaded_allocator() if sys.platform.startswith("linux") else "system"
    if os.environ.get(_TRIED_ENV):  # this is the re-executed process (loaded, or the preload failed)
        _strip_preload()
        return current
    if current != "system" or choice not in ALLOCATORS or not sys.platform.startswith("linux"):
        return current
    library = find_allocator(choice)
    if library is None:
        return current
    preload = os.environ.get("LD_PRELOAD", "")
    env = {**_QUIET, **os.environ, _TRIED_ENV: library, "LD_PRELOAD": f"{library}:{preload}" if preload else library}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    return current  # not reached


def _strip_preload() -> None:
    library = os.environ.pop(_TRIED_ENV, None)
    if library is None:
        return
    rest = [p for p in os.environ.get("LD_PRELOAD", "").split(":") if p and p != library]
    if rest:
        os.environ["LD_PRELOAD"] = ":".join(rest)
    else:
        os.environ.pop("LD_PRELOAD", None)
