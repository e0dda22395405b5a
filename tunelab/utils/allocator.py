"""Transparent huge pages for torch's large CPU blocks, asked for before torch first allocates.

torch's CPU allocator reads ``THP_MEM_ALLOC_ENABLE`` once, at its first allocation: with it, blocks
of 2 MiB and more are 2 MiB-aligned and ``madvise(MADV_HUGEPAGE)``'d, so first touching a fresh
activation costs one page fault per 2 MiB instead of one per 4 KiB. That matters once
``training.map_large_blocks`` hands large blocks back to the OS, when every new activation is a fresh
mapping (``bench/alloc_faults.py`` measures the fault cost on the machine at hand). The CLI asks for it
before any command imports torch; a user's own setting wins.
"""

from __future__ import annotations

import os

THP_ENV = "THP_MEM_ALLOC_ENABLE"


def prefer_huge_pages() -> bool:
    """Ask torch for huge pages on its large CPU blocks unless the environment already decides;
    True when they are on. Without effect once torch has allocated (tests calling the CLI in-process)."""
    os.environ.setdefault(THP_ENV, "1")
    return os.environ[THP_ENV] == "1"
