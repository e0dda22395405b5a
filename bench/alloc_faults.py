"""What mapping large blocks from the OS costs per allocation on this machine (``training.map_large_blocks``).

One activation-sized step, repeated: allocate a (4096 x 1536) fp32 tensor (25 MB, one MLP
activation of an 8 x 512 SmolLM2 micro-batch) as ``x * 2`` and free it. Three processes:
glibc's default (the block comes back from the heap), ``M_MMAP_THRESHOLD`` = 1 MiB set with
``mallopt`` as tunelab/train/activations.py does (every block is a fresh mapping: one page
fault per 4 KiB page on first touch), and the same with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``
(glibc advises transparent huge pages on its mappings: one fault per 2 MiB). On a VM where
page faults are expensive the second costs several times the arithmetic; THP takes most of
that back, but glibc reads its tunables only at process start. torch's own switch,
``THP_MEM_ALLOC_ENABLE=1`` (2 MiB-aligned blocks with ``madvise(MADV_HUGEPAGE)``), is read at its
first allocation, so a command can set it before it imports torch.

Run: ``python bench/alloc_faults.py [--repeats 100]`` (one thread; seconds).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

CHILD = """
import ctypes, time, torch
torch.set_num_threads(1)
if {mapped}:
    ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
x = torch.randn(4096, 1536)
(x * 2.0)
start = time.perf_counter()
for _ in range({repeats}):
    y = x * 2.0
    del y
print((time.perf_counter() - start) / {repeats} * 1e3)
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=100)
    a = p.parse_args()
    rows = [("glibc default (heap)", False, None), ("mmap >= 1 MiB", True, None)]
    rows.append(("mmap >= 1 MiB + THP (GLIBC_TUNABLES)", True, {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}))
    rows.append(("mmap >= 1 MiB + THP (torch's THP_MEM_ALLOC_ENABLE)", True, {"THP_MEM_ALLOC_ENABLE": "1"}))
    base = None
    for name, mapped, tunables in rows:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        env.update(tunables or {})
        code = CHILD.format(mapped=mapped, repeats=a.repeats)
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        ms = float(done.stdout)
        base = base or ms
        print(f"{name:40s} {ms:7.2f} ms per 25 MB allocate + multiply   ({ms / base:.2f}x the heap)", flush=True)


if __name__ == "__main__":
    main()
