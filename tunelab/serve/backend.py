"""What the server needs from a generator: the transport never touches a model directly.

:class:`tunelab.infer.Engine` implements this protocol; tests can inject any other object
with the same methods (e.g. a wrapper that blocks to fill the queue).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from tunelab.infer.types import GenerationResult, SamplingParams, TokenLogprob


class TextStream(Protocol):
    result: GenerationResult | None

    def __iter__(self) -> Iterable[str]: ...

    def close(self) -> None: ...


class Backend(Protocol):
    max_context: int
    vocab_size: int  # token ids 0..vocab_size-1 are valid prompt tokens

    def model_ids(self) -> list[str]: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def encode_chat(self, messages: Sequence) -> list[int]: ...

    def stream(
        self, model_id: str, prompt: Sequence[int], params: SamplingParams, *, cancel: Callable[[], bool] | None = None
    ) -> TextStream: ...

    def logprobs(self, model_id: str, ids: Sequence[int], top: int = 0) -> list[TokenLogprob]: ...
