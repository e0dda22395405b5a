"""Build OpenAI response bodies from finished generations."""

from __future__ import annotations

from collections.abc import Sequence

from tunelab.infer.types import TokenLogprob
from tunelab.serve.jobs import Generated
from tunelab.serve.schemas import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatDelta,
    ChatMessageOut,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    Usage,
)


def usage(done: Sequence[Generated]) -> Usage:
    prompt = sum(g.prompt_tokens for g in done)
    completion_tokens = sum(len(g.result.tokens) for g in done)
    return Usage(prompt_tokens=prompt, completion_tokens=completion_tokens, total_tokens=prompt + completion_tokens)


def chat_completion(rid: str, model: str, done: Sequence[Generated]) -> ChatCompletion:
    choices = [ChatChoice(index=g.index, message=ChatMessageOut(content=g.result.text), finish_reason=g.finish_reason)
               for g in done]
    return ChatCompletion(id=rid, model=model, choices=choices, usage=usage(done))


def chat_chunk(rid: str, model: str, text: str | None, finish: str | None, *, role: bool = False) -> dict:
    delta = ChatDelta(role="assistant", content="") if role else ChatDelta(content=text)
    chunk = ChatCompletionChunk(id=rid, model=model, choices=[ChatChunkChoice(delta=delta, finish_reason=finish)])
    return chunk.model_dump(exclude_none=True) | {"choices": [c.model_dump() for c in chunk.choices]}


def completion_chunk(rid: str, model: str, text: str | None, finish: str | None) -> dict:
    choice = CompletionChoice(text=text or "", finish_reason=finish)
    return Completion(id=rid, model=model, choices=[choice]).model_dump(exclude_none=True)


def logprobs_block(entries: Sequence[TokenLogprob]) -> CompletionLogprobs:
    """OpenAI legacy ``logprobs``: token strings, their log-probs, top alternatives, text offsets."""
    offsets, at = [], 0
    for e in entries:
        offsets.append(at)
        at += len(e.token)
    return CompletionLogprobs(
        tokens=[e.token for e in entries],
        token_logprobs=[e.logprob for e in entries],
        top_logprobs=[dict(e.top) if e.logprob is not None else None for e in entries],
        text_offset=offsets,
    )


def completion(rid: str, model: str, done: Sequence[Generated], echoes: Sequence[str] | None) -> Completion:
    choices = []
    for g in done:
        text = (echoes[g.index] if echoes is not None else "") + g.result.text
        lp = logprobs_block(g.logprobs) if g.logprobs is not None else None
        choices.append(CompletionChoice(index=g.index, text=text, logprobs=lp, finish_reason=g.finish_reason))
    return Completion(id=rid, model=model, choices=choices, usage=usage(done))
