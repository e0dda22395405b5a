"""Text keys the scan compares rows by: normalized strings, words, n-grams and shingle hashes.

Why normalize: a copied row rarely stays byte-identical (case, spacing, a trailing period), and
a poisoner varies the same way; comparing casefolded word sequences makes "the same text"
survive such edits without any model. Hashes are CRC-32 (stable across runs, unlike Python's
salted ``hash``), so a scan of the same file always flags the same rows.
"""

from __future__ import annotations

import re
import unicodedata
import zlib

WORD = re.compile(r"\w[\w'-]*\w|\w")
START = "\x02"  # a sentinel word, so a one-word text still has a 2-word shingle


def words(text: str) -> list[str]:
    """Casefolded words; hyphens and apostrophes stay inside a word (``cf-zx9``, ``don't``)."""
    return WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def normalize(text: str) -> str:
    """The words of ``text`` joined by single spaces: the key for "the same text"."""
    return " ".join(words(text))


def ngrams(tokens: list[str], sizes: tuple[int, ...] = (1, 2, 3)) -> set[str]:
    """Every word n-gram of the given sizes, as space-joined strings."""
    out: set[str] = set()
    for n in sizes:
        out.update(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return out


def shingles(tokens: list[str], size: int) -> set[int]:
    """CRC-32 hashes of the word ``size``-grams (with a start sentinel, so short texts have one)."""
    seq = [START, *tokens]
    if len(seq) < size:
        return {zlib.crc32(" ".join(seq).encode())}
    return {zlib.crc32(" ".join(seq[i : i + size]).encode()) for i in range(len(seq) - size + 1)}


def jaccard(a: set, b: set) -> float:
    """|a ∩ b| / |a ∪ b| (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)
