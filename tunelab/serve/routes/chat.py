"""``POST /v1/chat/completions``: messages rendered with the served model's chat template."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tunelab.serve.jobs import (
    as_api_error,
    check_input,
    check_model,
    check_request_size,
    generation_job,
    max_new_tokens,
    sampling_params,
)
from tunelab.serve.responses import chat_chunk, chat_completion
from tunelab.serve.schemas import ChatCompletionRequest, new_id
from tunelab.serve.sse import stream_events
from tunelab.serve.state import State

router = APIRouter(prefix="/v1")


@router.post("/chat/completions")
async def chat(req: ChatCompletionRequest, request: Request, state: State):
    backend, limits = state.backend, state.limits
    check_model(backend, req.model)
    messages = check_input(state.guardrails, [(m.role, m.text()) for m in req.messages])
    system = "\n".join(text for role, text in messages if role in ("system", "developer"))
    from tunelab.infer.engine import ChatMessage

    try:
        prompt = backend.encode_chat([ChatMessage(role, text) for role, text in messages])
    except Exception as err:  # noqa: BLE001 - a template failure is the request's problem
        raise as_api_error(err) from err
    tokens = max_new_tokens(len(prompt), req.requested_max_tokens(), limits, choices=req.n)
    check_request_size(1, req.n, tokens, limits)
    handle = state.submit(generation_job(backend, req.model, [prompt], sampling_params(req, tokens), state.guardrails,
                                         system=system))
    rid = new_id("chatcmpl")
    if req.stream:
        include = bool(req.stream_options and req.stream_options.include_usage)
        first = chat_chunk(rid, req.model, None, None, role=True)
        events = stream_events(state, handle, lambda text, fin: chat_chunk(rid, req.model, text, fin), first, include)
        return StreamingResponse(events, media_type="text/event-stream")
    done = await state.collect(handle, request)
    return JSONResponse(chat_completion(rid, req.model, done).model_dump())
