"""Server-sent events for streamed completions: one ``data:`` line per chunk, then ``[DONE]``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

from tunelab.serve.jobs import Generated, as_api_error
from tunelab.serve.responses import usage
from tunelab.serve.state import ServerState
from tunelab.serve.worker import JobHandle

MakeChunk = Callable[[str | None, str | None], dict]


def sse(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


async def stream_events(
    state: ServerState, handle: JobHandle, make_chunk: MakeChunk, first: dict | None, include_usage: bool
) -> AsyncIterator[str]:
    """The job's deltas as chunks; a failure after the headers travels as an error event."""
    done: list[Generated] = []
    finished = False
    try:
        if first is not None:
            yield sse(first)
        async for ev in handle:
            if isinstance(ev, Generated):
                done.append(ev)
                yield sse(make_chunk(None, ev.finish_reason))
            else:
                yield sse(make_chunk(ev[1], None))
        if include_usage:
            yield sse(make_chunk(None, None) | {"choices": [], "usage": usage(done).model_dump()})
        finished = True
    except Exception as err:  # noqa: BLE001 - after the headers, errors travel as an event
        finished = True
        yield sse(as_api_error(err).body())
    finally:
        if not finished:  # the client went away: stop its generation
            handle.cancelled.set()
            state.metrics.record_cancelled()
        state.record(done)
    yield sse("[DONE]")
