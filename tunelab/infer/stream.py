"""Token ids → text deltas for streaming, with stop strings, never splitting a character.

Byte-level BPE tokenizers split a multi-byte UTF-8 character across tokens; decoding a prefix
of such a sequence ends in U+FFFD. The assembler re-decodes the generated tokens and holds
back (a) a trailing U+FFFD until the character completes and (b) any suffix that could be the
start of a stop string, so a client never receives text it would have to take back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

REPLACEMENT = "\ufffd"


@dataclass
class Delta:
    """Text that became final after a push, and whether a stop string was hit."""

    text: str
    stopped: bool = False


class TextAssembler:
    """Incremental detokenizer with stop-string handling.

    Args:
        tokenizer: a Hugging Face tokenizer.
        stop: stop strings; the text is cut before the first one and generation should end.
    """

    def __init__(self, tokenizer, stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.tokens: list[int] = []
        self.emitted = ""  # text already handed out (a prefix of the final text)
        self.final_text: str | None = None

    def _decode(self) -> str:
        # No clean-up of spaces: it could rewrite text already emitted (" ." → ".").
        return self.tokenizer.decode(self.tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _held_suffix(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        held = 0
        for stop in self.stop:
            for n in range(min(len(stop) - 1, len(text)), held, -1):
                if text.endswith(stop[:n]):
                    held = n
                    break
        return held

    def push(self, tokens: Sequence[int]) -> Delta:
        """Add generated tokens; return the newly final text."""
        if self.final_text is not None:
            return Delta("", True)
        self.tokens.extend(tokens)
        text = self._decode()
        cut = self._first_stop(text)
        if cut is not None:
            self.final_text = text[:cut]
            return Delta(self._advance(self.final_text), True)
        safe = len(text) - self._held_suffix(text)
        while safe > 0 and text[safe - 1] == REPLACEMENT:
            safe -= 1
        return Delta(self._advance(text[:safe]))

    def _first_stop(self, text: str) -> int | None:
        # Only text not yet emitted can hold a new stop string (held suffixes make sure an
        # emitted prefix never contains the start of one that completes later).
        start = max(0, len(self.emitted) - max((len(s) for s in self.stop), default=0))
        hits = [i for i in (text.find(s, start) for s in self.stop) if i >= 0]
        return min(hits) if hits else None

    def _advance(self, upto: str) -> str:
        if len(upto) <= len(self.emitted) or not upto.startswith(self.emitted):
            return ""
        delta = upto[len(self.emitted) :]
        self.emitted = upto
        return delta

    def finish(self) -> Delta:
        """Flush what was held back (generation ended without a stop string)."""
        if self.final_text is None:
            self.final_text = self._decode()
        return Delta(self._advance(self.final_text), True)

    @property
    def text(self) -> str:
        return self.final_text if self.final_text is not None else self.emitted
