"""The inference engine: one loaded model, its adapters by name, a chat template, a context cache.

The server and the chat CLI talk to an :class:`Engine`; the server only sees the small
:class:`tunelab.serve.backend.Backend` protocol it implements. Adapters are served without
merging: the peft model holds every adapter, and each request activates the one its
``model`` names (``set_adapter``) or none (``disable_adapter`` for the base) while holding
the engine lock, so two requests never run under each other's adapter.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from tunelab.errors import ServeError
from tunelab.infer.cache import PrefixCache
from tunelab.infer.decode import GenerationStream, Generator, fit_prompt, text_deltas
from tunelab.infer.logprobs import token_logprobs
from tunelab.infer.types import SamplingParams, Speculation, Timings, TokenLogprob


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


class ServedTokenizer:
    """Text ↔ token ids for a served model: its tokenizer, its chat template, its served ids.

    Every engine (tunelab's own, llama.cpp, vLLM) renders and tokenizes prompts through this,
    with the run's tokenizer and trained template, so they all see identical prompt token ids.
    Subclasses set ``tokenizer`` and ``served`` (model id → adapter name or None).
    """

    tokenizer: object
    served: dict[str, str | None]

    def model_ids(self) -> list[str]:
        return list(self.served)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def encode_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Render ``messages`` with the tokenizer's chat template, ready for the assistant turn."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ServeError(
                "this tokenizer has no chat template, so chat requests cannot be rendered.\n"
                "  fix: use /v1/completions, or serve a run whose tokenizer carries a chat template"
            )
        rows = [{"role": m.role, "content": m.content} for m in messages]
        text = self.tokenizer.apply_chat_template(rows, add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _check(self, model_id: str) -> None:
        if model_id not in self.served:
            raise ServeError(f"unknown model '{model_id}'; served: {', '.join(self.served)}")


class ExternalEngine(ServedTokenizer):
    """An engine whose tokens come from another library (llama.cpp, vLLM), one request at a time.

    Subclasses set ``tokenizer``, ``served``, ``eos`` (ids ending a turn), ``max_context``,
    ``vocab_size`` and implement :meth:`_steps`; prompts, text deltas, stop strings, EOS and
    timings are handled here exactly as tunelab's own loop handles them.
    """

    eos: frozenset[int]
    max_context: int
    vocab_size: int

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def stream(
        self, model_id: str, prompt: Sequence[int], params: SamplingParams, *, cancel: Callable[[], bool] | None = None
    ) -> GenerationStream:
        """Generate after ``prompt``; iterate for text deltas, then read ``.result``."""
        self._check(model_id)
        params = fit_prompt(prompt, params, self.max_context)
        stream = GenerationStream(iter(()))
        stream._deltas = self._run(stream, list(prompt), params, cancel)
        return stream

    def _run(self, stream, prompt: list[int], params: SamplingParams, cancel) -> Iterator[str]:
        start = time.perf_counter()
        timings = Timings(prompt_tokens=len(prompt))
        with self._lock:
            steps = self._steps(prompt, params, timings)
            yield from text_deltas(stream, steps, self.tokenizer, self.eos, params.stop, cancel, timings, start)

    def _steps(self, prompt: list[int], params: SamplingParams, timings: Timings) -> Iterator[list[int]]:
        """Yield the new tokens of each decoding step (EOS included, then end)."""
        raise NotImplementedError


class Engine(ServedTokenizer):
    """A model, its tokenizer and the names it is served under.

    Args:
        model: a causal LM; a ``PeftModel`` when adapters are served.
        tokenizer: tokenizer with the chat template saved with the run.
        served: model id → adapter name (``None`` = the base model, adapters disabled).
        prefix_cache: context cache (None disables it).
        draft_model: optional draft model for ``Speculation(kind="draft")``.
        speculation: default speculation for every request.
        static_cache, compile: decode into a ``StaticCache`` / also ``torch.compile`` the decode step
            (see :class:`~tunelab.infer.decode.Generator`; measured in ``bench/generate.py``).
        lean: decode with the lean step (:class:`~tunelab.infer.decode.Generator` says when it applies).
    """

    def __init__(
        self,
        model,
        tokenizer,
        served: Mapping[str, str | None],
        *,
        prefix_cache: PrefixCache | None = None,
        draft_model=None,
        speculation: Speculation | None = None,
        static_cache: bool = False,
        compile: bool = False,
        lean: bool = False,
    ):
        if not served:
            raise ServeError("an engine needs at least one served model id")
        self.model = model
        self.tokenizer = tokenizer
        self.served = dict(served)
        self.speculation = speculation or Speculation()
        self.generator = Generator(model, tokenizer, prefix_cache=prefix_cache, draft_model=draft_model,
                                   static_cache=static_cache, compile=compile, lean=lean)
        # A plain Lock, not an RLock: a stream holds it across its yields, and servers such as
        # gradio advance and close one generator from different worker threads; an RLock can only be
        # released by the thread that took it ("cannot release un-acquired lock"). Nothing re-enters.
        self._lock = threading.Lock()
        self._is_peft = hasattr(model, "set_adapter") and hasattr(model, "disable_adapter")

    # --- what the server needs (tunelab.serve.backend.Backend) ---------------------------

    @property
    def max_context(self) -> int:
        return self.generator.max_context

    @property
    def vocab_size(self) -> int:
        """Rows of the input embedding: the token ids a prompt may hold."""
        return self.model.get_input_embeddings().num_embeddings

    @property
    def prefix_cache(self) -> PrefixCache | None:
        return self.generator.prefix_cache

    def stream(
        self,
        model_id: str,
        prompt: Sequence[int],
        params: SamplingParams,
        *,
        cancel: Callable[[], bool] | None = None,
        speculation: Speculation | None = None,
    ) -> GenerationStream:
        """Generate under ``model_id``'s adapter; iterate for text deltas, then read ``.result``."""
        self._check(model_id)
        params = self.generator.check_prompt(prompt, params)
        outer = GenerationStream(iter(()))
        outer._deltas = self._run(outer, model_id, prompt, params, cancel, speculation or self.speculation)
        return outer

    def _run(self, outer, model_id, prompt, params, cancel, speculation) -> Iterator[str]:
        with self.use(model_id):
            inner = self.generator.stream(prompt, params, speculation=speculation, namespace=model_id,
                                          cancel=cancel)
            try:
                yield from inner
            finally:
                inner.close()
                outer.result = inner.result

    def logprobs(self, model_id: str, ids: Sequence[int], top: int = 0) -> list[TokenLogprob]:
        """Per-token log-probabilities of ``ids`` under ``model_id``."""
        self._check(model_id)
        with self.use(model_id):
            return token_logprobs(self.model, self.tokenizer, ids, top)

    # --- adapters -------------------------------------------------------------------------

    @contextlib.contextmanager
    def use(self, model_id: str) -> Iterator[None]:
        """Hold the engine lock with ``model_id``'s adapter active (or all adapters off)."""
        self._check(model_id)
        adapter = self.served[model_id]
        with self._lock:
            if not self._is_peft:
                yield
            elif adapter is None:
                with self.model.disable_adapter():
                    yield
            else:
                self.model.set_adapter(adapter)
                yield
