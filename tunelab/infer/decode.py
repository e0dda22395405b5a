"""tunelab's decode loop: KV cache, sampling, stop strings, streaming, speculation, context cache.

One loop serves every strategy. A :class:`~tunelab.infer.cache.KVState` hands out the logits
of any extension of the sequence it holds; plain decoding asks for one position per step,
speculative decoding for the pending token plus ``k`` drafts (verified by
:func:`~tunelab.infer.speculative.verify`). Because the greedy acceptance rule keeps exactly
the target's argmax tokens, greedy output is token-identical with and without speculation,
and with and without a context-cache hit (both tested, also against transformers'
``generate(do_sample=False)``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import replace

import torch

from tunelab.errors import ConfigError, ServeError
from tunelab.infer.cache import KVState, PrefixCache
from tunelab.infer.few_rows import use_few_row_products
from tunelab.infer.sampling import make_generator, next_token_probs, pick_token
from tunelab.infer.speculative import Draft, Drafter, make_drafter, verify
from tunelab.infer.stream import TextAssembler
from tunelab.infer.types import FinishReason, GenerationResult, SamplingParams, Speculation, Timings

#: Static caches are allocated in multiples of this many positions (one compiled graph per size).
STATIC_BUCKET = 256


def eos_token_ids(model, tokenizer) -> frozenset[int]:
    """Every id that ends a turn: the generation config's EOS list plus the tokenizer's EOS."""
    ids: set[int] = set()
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    ids.update([eos] if isinstance(eos, int) else list(eos or []))
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return frozenset(ids)


def max_context(model) -> int:
    """Longest sequence the model was built for (``max_position_embeddings``)."""
    config = getattr(model, "config", None)
    return int(getattr(config, "max_position_embeddings", 0) or 2048)


def token_steps(
    state: KVState,
    prompt: Sequence[int],
    params: SamplingParams,
    eos: frozenset[int],
    drafter: Drafter | None,
    num_draft: int,
    generator: torch.Generator,
    timings: Timings,
) -> Iterator[list[int]]:
    """Yield the newly decided tokens after each target forward pass (EOS included, then stop)."""
    tokens = list(prompt)
    produced = 0
    while produced < params.max_new_tokens:
        room = params.max_new_tokens - produced
        k = min(num_draft, room - 1)
        draft = drafter.propose(tokens, k, params, generator) if drafter is not None and k > 0 else Draft([])
        if not draft.tokens:
            new = [pick_token(state.logits(tokens)[-1], params, tokens, generator)]
        else:
            logits = state.logits(tokens + draft.tokens, last=len(draft.tokens) + 1)
            probs = [next_token_probs(logits[i], params, tokens + draft.tokens[:i]) for i in range(len(logits))]
            new, accepted = verify(draft, probs, params, generator)
            timings.drafted += len(draft.tokens)
            timings.accepted += accepted
        for j, token in enumerate(new):
            if token in eos:
                yield new[: j + 1]
                return
        tokens.extend(new)
        produced += len(new)
        yield new


class GenerationStream:
    """Iterate to get text deltas as they become final; ``result`` is set once iteration ends."""

    def __init__(self, deltas: Iterator[str]):
        self._deltas = deltas
        self.result: GenerationResult | None = None

    def __iter__(self) -> Iterator[str]:
        return self._deltas

    def close(self) -> None:
        self._deltas.close()  # type: ignore[attr-defined]

    def collect(self) -> GenerationResult:
        for _ in self._deltas:
            pass
        assert self.result is not None  # set by the generator's last step
        return self.result


class Generator:
    """Generate from one causal LM (plain or peft) and its tokenizer.

    Args:
        model: the target model, in eval mode.
        tokenizer: its tokenizer (decoding, EOS).
        prefix_cache: context cache shared across requests (None disables it).
        draft_model: a smaller model with the same tokenizer for ``Speculation(kind="draft")``.
        use_cache: False recomputes the full sequence each step (benchmark baseline only).
        static_cache: decode into a preallocated ``StaticCache`` sized to each request (prompt +
            ``max_new_tokens``, rounded up to :data:`STATIC_BUCKET` so few shapes recur); no context cache.
        compile: also run the one-token decode step through ``torch.compile`` (implies ``static_cache``);
            the first request of each size bucket pays the compilation.
        lean: decode with :class:`~tunelab.infer.lean.LeanState` (fused weights, plain tensor ops; a
            plain Llama-family model on the CPU only, refused otherwise; no context cache). Its logits
            match transformers' to ~1e-5, not bit for bit, so a near-tie can break the other way.
    """

    def __init__(self, model, tokenizer, *, prefix_cache: PrefixCache | None = None, draft_model=None,
                 use_cache: bool = True, static_cache: bool = False, compile: bool = False, lean: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.static_cache = (static_cache or compile) and use_cache
        self.lean = lean and use_cache
        if self.lean:
            check_lean(model, self.static_cache)
        self.prefix_cache = prefix_cache if use_cache and not self.static_cache and not self.lean else None
        self.draft_model = draft_model
        self.use_cache = use_cache
        self.eos = eos_token_ids(model, tokenizer)
        self.max_context = max_context(model)
        self.step_forward = torch.compile(model, dynamic=False) if compile and use_cache else None

    def check_prompt(self, prompt: Sequence[int], params: SamplingParams) -> SamplingParams:
        """Refuse empty or over-long prompts; cap ``max_new_tokens`` at the context size."""
        return fit_prompt(prompt, params, self.max_context)

    def stream(
        self,
        prompt: Sequence[int],
        params: SamplingParams | None = None,
        *,
        speculation: Speculation | None = None,
        namespace: Hashable = "default",
        cancel: Callable[[], bool] | None = None,
    ) -> GenerationStream:
        """Start generating after ``prompt`` (token ids); iterate the result for text deltas."""
        params = self.check_prompt(prompt, params or SamplingParams())
        spec = speculation or Speculation()
        if spec.kind != "none" and not self.use_cache:
            raise ServeError("speculative decoding needs the KV cache (use_cache=True)")
        stream = GenerationStream(iter(()))
        stream._deltas = self._run(stream, list(prompt), params, spec, namespace, cancel)
        return stream

    def generate(self, prompt: Sequence[int], params: SamplingParams | None = None, **kwargs) -> GenerationResult:
        """Generate to the end and return the typed result."""
        return self.stream(prompt, params, **kwargs).collect()

    def _start_state(self, prompt: list[int], namespace: Hashable, timings: Timings, max_new_tokens: int
                     ) -> KVState:
        if self.lean:
            from tunelab.infer.lean import LeanState

            return LeanState(self.model)  # type: ignore[return-value]  # KVState's interface
        if self.prefix_cache is not None:
            hit = self.prefix_cache.lookup(namespace, prompt)
            if hit is not None:
                timings.cached_prompt_tokens = hit.length
                return KVState(self.model, cache=hit.cache, tokens=hit.tokens)
        if self.static_cache:
            size = -(-(len(prompt) + max_new_tokens) // STATIC_BUCKET) * STATIC_BUCKET
            return KVState(self.model, static_len=min(size, self.max_context), step_forward=self.step_forward)
        return KVState(self.model, use_cache=self.use_cache)

    def _run(self, stream, prompt, params, spec, namespace, cancel) -> Iterator[str]:
        start = time.perf_counter()
        timings = Timings(prompt_tokens=len(prompt))
        state = self._start_state(prompt, namespace, timings, params.max_new_tokens)
        drafter = make_drafter(spec, self.draft_model)
        if drafter is not None:  # verify passes multiply k + 1 rows by every weight: a faster kernel on the CPU
            use_few_row_products(self.model)
        steps = token_steps(state, prompt, params, self.eos, drafter, spec.num_tokens, make_generator(
            params.seed, state.device), timings)

        def finish() -> None:
            timings.forward_passes = state.forward_passes
            if self.prefix_cache is not None and state.cache is not None:
                self.prefix_cache.store(namespace, state.tokens, state.cache)

        yield from text_deltas(stream, steps, self.tokenizer, self.eos, params.stop, cancel, timings, start, finish)


def check_lean(model, static_cache: bool) -> None:
    """A :class:`ConfigError` naming ``--lean`` when the lean step cannot decode ``model`` as asked."""
    from tunelab.infer.lean import supported

    if static_cache:
        raise ConfigError("--lean: the lean step keeps its own key/value buffers.\n  fix: drop --static-cache "
                          "and --compile, or drop --lean")
    if not supported(model):
        raise ConfigError(
            "--lean: the lean step decodes a plain Llama-family model on the CPU (no adapters, biases or other "
            f"architectures); this one is {type(model).__name__} on {next(model.parameters()).device}.\n"
            "  fix: merge the adapters first (tunelab export RUN --format hf, then serve the export), or drop --lean"
        )


def fit_prompt(prompt: Sequence[int], params: SamplingParams, max_context: int) -> SamplingParams:
    """Refuse an empty prompt or one that fills the context; cap ``max_new_tokens`` at the room left."""
    if not prompt:
        raise ServeError("the prompt is empty: give at least one token")
    room = max_context - len(prompt)
    if room <= 0:
        raise ServeError(f"the prompt has {len(prompt)} tokens; this model's context is {max_context}")
    return replace(params, max_new_tokens=room) if params.max_new_tokens > room else params


def text_deltas(
    stream: GenerationStream,
    steps: Iterator[list[int]],
    tokenizer,
    eos: frozenset[int],
    stop: Sequence[str],
    cancel: Callable[[], bool] | None,
    timings: Timings,
    start: float,
    on_end: Callable[[], None] | None = None,
) -> Iterator[str]:
    """Turn decided tokens into final text deltas; set ``stream.result`` when done.

    Every engine (tunelab's loop, llama.cpp, vLLM) feeds its tokens through here, so EOS, stop
    strings, multi-byte characters, cancellation and timings behave the same whichever decodes.
    ``steps`` yields the newly decided tokens after each forward pass (EOS included, then ends).
    """
    assembler = TextAssembler(tokenizer, stop)
    generated: list[int] = []
    finish: FinishReason = "length"
    try:
        for new in steps:
            if not generated:
                timings.time_to_first_token = time.perf_counter() - start
            generated.extend(new)
            delta = assembler.push([t for t in new if t not in eos])
            if delta.text:
                yield delta.text
            if delta.stopped or new[-1] in eos:
                finish = "stop"
                break
            if cancel is not None and cancel():
                finish = "cancelled"
                break
        tail = assembler.finish()
        if tail.text:
            yield tail.text
    except GeneratorExit:  # the consumer stopped reading (client gone, stop button)
        finish = "cancelled"
        raise
    finally:
        steps.close()  # type: ignore[attr-defined]
        timings.new_tokens = len(generated)
        timings.total = time.perf_counter() - start
        if on_end is not None:
            on_end()
        stream.result = GenerationResult(generated, assembler.text, finish, timings)
