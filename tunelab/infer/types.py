"""Typed inputs and results of generation: sampling parameters, timings, results, speculation.

Everything a caller passes to or gets back from :mod:`tunelab.infer` is one of these
dataclasses, so the server, the chat CLI and the benchmark never pass string-keyed dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tunelab.errors import ServeError

FinishReason = Literal["stop", "length", "cancelled", "content_filter"]
SpeculationKind = Literal["none", "draft", "prompt_lookup"]


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token.

    ``temperature == 0`` means greedy decoding (argmax); the other knobs then only matter
    through ``repetition_penalty``, which reshapes the logits before the argmax (as in
    transformers). Processing order matches transformers: repetition penalty (Keskar et al.
    2019, CTRL), temperature, top-k, top-p (Holtzman et al. 2020, nucleus sampling).
    """

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.max_new_tokens >= 0, "max_new_tokens must be >= 0"),
            (self.temperature >= 0, "temperature must be >= 0 (0 = greedy)"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be >= 0 (0 = off)"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0 (1 = off)"),
            (all(isinstance(s, str) and s for s in self.stop), "stop strings must be non-empty strings"),
        ]
        for ok, message in checks:
            if not ok:
                raise ServeError(f"invalid sampling parameter: {message}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Speculation:
    """Speculative decoding settings.

    ``draft``: a small draft model sharing the tokenizer proposes ``num_tokens`` tokens that
    the target verifies in one forward pass (Leviathan et al. 2023, arXiv:2211.17192; Chen et
    al. 2023, arXiv:2302.01318). ``prompt_lookup``: the draft is the continuation of the most
    recent earlier occurrence of the last n-gram (``max_ngram`` down to ``min_ngram`` tokens)
    in the prompt and output so far (Saxena 2023, "Prompt Lookup Decoding"); no draft model.
    """

    kind: SpeculationKind = "none"
    num_tokens: int = 4
    max_ngram: int = 3
    min_ngram: int = 1

    def __post_init__(self) -> None:
        if self.num_tokens < 1 or not 1 <= self.min_ngram <= self.max_ngram:
            raise ServeError("speculation needs num_tokens >= 1 and 1 <= min_ngram <= max_ngram")


@dataclass
class Timings:
    """Wall-clock measurements of one generation (seconds)."""

    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # prompt tokens whose KV came from the context cache
    new_tokens: int = 0
    time_to_first_token: float = 0.0
    total: float = 0.0
    forward_passes: int = 0  # target model forwards (speculation lowers this per token)
    drafted: int = 0
    accepted: int = 0

    @property
    def tokens_per_second(self) -> float:
        """New tokens per second over the whole request (prefill included)."""
        return self.new_tokens / self.total if self.total > 0 else 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


@dataclass
class GenerationResult:
    """One finished generation: the new token ids, their text, why it stopped, and timings."""

    tokens: list[int]
    text: str
    finish_reason: FinishReason
    timings: Timings = field(default_factory=Timings)


@dataclass(frozen=True)
class TokenLogprob:
    """Log-probability of one token given the tokens before it (``None`` for the first token)."""

    token_id: int
    token: str
    logprob: float | None
    top: tuple[tuple[str, float], ...] = ()
