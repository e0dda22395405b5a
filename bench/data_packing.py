"""Packing: tunelab's best-fit-decreasing packer against TRL's ``pack_dataset(strategy="bfd")``.

Both pack the same tokenized examples (lognormal lengths, like instruction data) into rows of
``max_length``; printed: rows, packing efficiency (real tokens / (rows x max_length)) and the
time ratio, measured in the same run. Run: ``python bench/data_packing.py [N] [MAX_LENGTH]``.
"""

from __future__ import annotations

import random
import sys
import time

from tunelab.data import TokenizedExample, pack
from tunelab.data.tokenize import packing_efficiency


def examples(n: int, max_length: int, seed: int = 0) -> list[TokenizedExample]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = min(max_length, max(8, int(rng.lognormvariate(5.0, 0.7))))
        ids = [(i + j) % 30000 for j in range(length)]
        out.append(TokenizedExample(ids, [-100, *ids[1:]], length))
    return out


def main() -> None:
    import datasets
    from trl.data_utils import pack_dataset

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    max_length = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    data = examples(n, max_length)
    t0 = time.perf_counter()
    ours = pack(data, max_length)
    t_ours = time.perf_counter() - t0
    ds = datasets.Dataset.from_dict({"input_ids": [e.input_ids for e in data]})
    t0 = time.perf_counter()
    theirs = pack_dataset(ds, max_length, strategy="bfd")
    t_trl = time.perf_counter() - t0
    tokens = sum(len(e.input_ids) for e in data)
    trl_eff = tokens / (len(theirs) * max_length)
    print(f"{n} examples, {tokens} tokens, max_length {max_length}")
    print(f"tunelab: {len(ours)} rows, efficiency {packing_efficiency(ours, max_length):.4f}, {t_ours:.2f}s")
    print(f"trl bfd: {len(theirs)} rows, efficiency {trl_eff:.4f}, {t_trl:.2f}s")
    print(f"rows ratio tunelab/trl = {len(ours) / len(theirs):.3f}; time ratio = {t_ours / t_trl:.2f}")


if __name__ == "__main__":
    main()
