"""Request → generation job plumbing shared by the chat and completions routes.

Validation that needs the tokenizer (context length, max_tokens bound, input guardrails)
happens here, before any byte of a response is sent, so those failures are proper HTTP
errors; a failure after streaming started becomes an SSE error event (see ``app.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tunelab.errors import ServeError, TunelabError
from tunelab.infer.types import FinishReason, GenerationResult, SamplingParams, TokenLogprob
from tunelab.serve.backend import Backend
from tunelab.serve.errors import APIError, internal_error
from tunelab.serve.guardrails import GuardrailChain
from tunelab.serve.schemas import SamplingFields
from tunelab.serve.worker import Job


@dataclass(frozen=True)
class Limits:
    max_tokens_limit: int
    max_context: int
    max_prompts: int = 16
    max_request_tokens: int = 16_384


@dataclass
class Generated:
    """Final event of one generation (one choice)."""

    index: int
    result: GenerationResult
    finish_reason: FinishReason
    logprobs: list[TokenLogprob] | None = None
    prompt_tokens: int = 0


def check_model(backend: Backend, model: str) -> None:
    if model not in backend.model_ids():
        raise APIError(404, f"the model '{model}' does not exist; served: {', '.join(backend.model_ids())}",
                       code="model_not_found", param="model")


def check_input(guardrails: GuardrailChain, messages: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The ``(role, content)`` messages to generate from (escaped / redacted by the input
    guardrails), or a 400 ``content_policy_violation`` whose ``param`` names the guardrail."""
    if not guardrails:
        return list(messages)
    result = guardrails.check_messages(messages)
    verdict = result.verdict
    if not verdict.allowed:
        raise APIError(400, f"the input was refused by the guardrail '{verdict.guardrail}' "
                       f"({verdict.code}): {verdict.reason}", code="content_policy_violation",
                       param=verdict.guardrail or None)
    return result.messages


def check_request_size(prompts: int, choices: int, max_tokens: int, limits: Limits) -> None:
    """400 unless the request's prompts and choices x prompts x max_tokens are within bounds."""
    if prompts > limits.max_prompts:
        raise APIError(400, f"this request has {prompts} prompts; this server takes at most "
                       f"--max-prompts {limits.max_prompts} per request: split it into several requests",
                       code="too_many_prompts", param="prompt")
    total = choices * prompts * max_tokens
    if total > limits.max_request_tokens:
        times = f"{choices} choices x " if choices > 1 else ""
        raise APIError(400, f"this request asks for {times}{prompts} prompts x {max_tokens} max_tokens = {total} "
                       f"tokens; this server allows --max-request-tokens {limits.max_request_tokens} per request: "
                       "lower max_tokens or split the prompts", code="too_many_tokens", param="max_tokens")


def check_token_ids(prompts: Sequence[str | Sequence[int]], vocab_size: int) -> None:
    """400 for a token-id prompt holding an id the model has no embedding for."""
    for index, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            continue
        bad = next((t for t in prompt if not 0 <= t < vocab_size), None)
        if bad is not None:
            where = f"prompt[{index}]" if len(prompts) > 1 else "prompt"
            raise APIError(400, f"{where}: token id {bad} is outside this model's vocabulary "
                           f"(0..{vocab_size - 1})", code="invalid_value", param="prompt")


def max_new_tokens(prompt_len: int, requested: int | None, limits: Limits, choices: int = 1) -> int:
    """The number of tokens to allow, or a 400 (bounded max_tokens, context_length_exceeded).

    Without ``requested``, as many as fit the context, ``--max-tokens-limit`` and (over
    ``choices``) ``--max-request-tokens``."""
    if requested is not None and requested > limits.max_tokens_limit:
        raise APIError(400, f"max_tokens={requested} is over this server's limit of {limits.max_tokens_limit}",
                       code="invalid_value", param="max_tokens")
    room = limits.max_context - prompt_len
    need = requested if requested is not None else 1
    if prompt_len >= limits.max_context or need > room:
        raise APIError(
            400,
            f"This model's maximum context length is {limits.max_context} tokens. However, you requested "
            f"{prompt_len + (requested or 0)} tokens ({prompt_len} in the messages, {requested or 0} in the "
            "completion). Please reduce the length of the messages or completion.",
            code="context_length_exceeded", param="messages",
        )
    return requested if requested is not None else min(limits.max_tokens_limit, room,
                                                       limits.max_request_tokens // choices)


def sampling_params(req: SamplingFields, max_tokens: int) -> SamplingParams:
    return SamplingParams(
        max_new_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
        repetition_penalty=req.repetition_penalty, stop=req.stop_list(), seed=req.seed,
    )


def as_api_error(err: BaseException) -> APIError:
    """Map a failure inside a job to the error sent to the client."""
    if isinstance(err, APIError):
        return err
    if isinstance(err, TunelabError):
        return APIError(400, str(err), code="invalid_request")
    return internal_error(err)


def generation_job(
    backend: Backend,
    model: str,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams,
    guardrails: GuardrailChain,
    *,
    logprobs: int | None = None,
    echo: bool = False,
    system: str = "",
) -> Job:
    """A worker job generating for each prompt in turn: emits ``(index, text delta)`` tuples
    and one :class:`Generated` per prompt (with log-probs when asked). ``system`` is the
    request's system prompt, which the output guardrails must not let leak."""

    def job(emit, cancelled) -> None:
        for index, prompt in enumerate(prompts):
            monitor = guardrails.monitor(system) if guardrails.has_output_checks else None
            result, finish = _generate_one(backend, model, prompt, params, monitor, emit, index, cancelled)
            entries = None
            if logprobs is not None:
                entries = backend.logprobs(model, list(prompt) + result.tokens, logprobs)
                entries = entries if echo else entries[len(prompt) :]
            emit(Generated(index, result, finish, entries, len(prompt)))

    return job


def _generate_one(backend, model, prompt, params, monitor, emit, index, cancelled):
    """One generation; with an output ``monitor`` only the text it releases is sent (masked
    spans, nothing after a block), and that text is the result's text."""
    if params.max_new_tokens == 0:
        return GenerationResult([], "", "length"), "length"
    stream = backend.stream(model, prompt, params, cancel=cancelled)
    text = ""
    for delta in stream:
        out = monitor.feed(delta) if monitor else delta
        if monitor and monitor.blocked:
            stream.close()
            break
        if out:
            text += out
            emit((index, out))
    tail = monitor.finish() if monitor else ""
    if tail:
        text += tail
        emit((index, tail))
    result = stream.result
    if result is None:  # pragma: no cover - a backend bug, not a user error
        raise ServeError("the generator ended without a result")
    if monitor:
        result.text = text
        if monitor.blocked:
            return result, "content_filter"
    return result, result.finish_reason
