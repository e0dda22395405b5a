"""``POST /v1/completions`` (legacy): text or token-id prompts, batched, with echo and log-probs.

Token-id prompts are checked against the vocabulary here, before anything is decoded or
queued: an id the embedding table does not have would otherwise fail inside the model.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tunelab.serve.errors import APIError
from tunelab.serve.jobs import (
    check_input,
    check_model,
    check_request_size,
    check_token_ids,
    generation_job,
    max_new_tokens,
    sampling_params,
)
from tunelab.serve.responses import completion, completion_chunk
from tunelab.serve.schemas import CompletionRequest, new_id
from tunelab.serve.sse import stream_events
from tunelab.serve.state import State

router = APIRouter(prefix="/v1")


@router.post("/completions")
async def completions(req: CompletionRequest, request: Request, state: State):
    backend, limits = state.backend, state.limits
    check_model(backend, req.model)
    texts = req.prompts()
    check_request_size(len(texts), req.n, req.max_tokens, limits)
    prompts = [backend.encode(p) if isinstance(p, str) else p for p in texts]
    if req.stream and (len(prompts) > 1 or req.logprobs is not None or req.echo):
        raise APIError(400, "streaming completions take one prompt without echo/logprobs", param="stream")
    for p in prompts:  # 400 unless every prompt (+ max_tokens) fits the context
        max_new_tokens(len(p), req.max_tokens or None, limits)
    check_token_ids(texts, backend.vocab_size)  # before any id is decoded
    decoded = [p if isinstance(p, str) else backend.decode(p) for p in texts]
    checked = [text for _, text in check_input(state.guardrails, [("user", text) for text in decoded])]
    # a prompt the guardrails escaped or redacted is generated from its new text
    prompts = [backend.encode(new) if new != old else p for p, old, new in zip(prompts, decoded, checked, strict=True)]
    params = sampling_params(req, req.max_tokens)
    handle = state.submit(generation_job(backend, req.model, prompts, params, state.guardrails,
                                         logprobs=req.logprobs, echo=req.echo))
    rid = new_id("cmpl")
    if req.stream:
        include = bool(req.stream_options and req.stream_options.include_usage)
        make_chunk = lambda text, fin: completion_chunk(rid, req.model, text, fin)  # noqa: E731
        return StreamingResponse(stream_events(state, handle, make_chunk, None, include),
                                 media_type="text/event-stream")
    done = await state.collect(handle, request)
    echoes = decoded if req.echo else None  # the prompts as sent (before any guardrail rewrite)
    return JSONResponse(completion(rid, req.model, done, echoes).model_dump())
