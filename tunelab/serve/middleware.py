"""ASGI middleware: API-key check (constant time), request body size bound, request metrics.

Pure ASGI (not ``BaseHTTPMiddleware``) so streaming responses pass through untouched.
"""

from __future__ import annotations

import hmac
import json
import time

from tunelab.serve.errors import APIError
from tunelab.serve.metrics import Metrics

OPEN_PATHS = {"/health"}


async def send_error(send, error: APIError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if error.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ApiKeyMiddleware:
    """Every route but ``/health`` needs ``Authorization: Bearer KEY`` (or ``x-api-key: KEY``)."""

    def __init__(self, app, api_key: str):
        self.app = app
        self.expected = api_key.encode()

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        auth = headers.get(b"authorization", b"")
        token = auth[7:].strip() if auth[:7].lower() == b"bearer " else headers.get(b"x-api-key", b"")
        # compare_digest takes time independent of where the bytes differ (no timing oracle).
        return hmac.compare_digest(token, self.expected)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        if not self._authorized(dict(scope["headers"])):
            message = "missing or invalid API key: send it as 'Authorization: Bearer KEY'"
            return await send_error(send, APIError(401, message, code="invalid_api_key"))
        return await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413, with or without ``Content-Length``.

    A chunked body (no length header) is read here, up to the bound, before the app sees it:
    raising from inside the app's own body read would surface as FastAPI's generic 400
    "error parsing the body". Reading stops at the bound, so an endless body costs at most
    ``max_bytes``. The body is then replayed to the app; later messages (the disconnect a
    non-streaming route waits for) pass through.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> APIError:
        return APIError(413, f"request body over {self.max_bytes} bytes", code="request_too_large")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await send_error(send, self._error())
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # nobody left to answer
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_bytes:
                return await send_error(send, self._error())
            if not message.get("more_body", False):
                break
        pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay():
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)


class MetricsMiddleware:
    """Count every response by route and status and time it to its last byte (streams included)."""

    ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        route = next((r for r in self.ROUTES if scope["path"].startswith(r)), "other")
        status = 500

        async def send_wrapper(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                self.metrics.record_request(route, status, time.perf_counter() - start)
            await send(message)

        await self.app(scope, receive, send_wrapper)
