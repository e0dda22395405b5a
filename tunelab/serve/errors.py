"""OpenAI error objects with real HTTP statuses.

Every failure answers ``{"error": {"message", "type", "param", "code"}}`` so the official
clients raise their matching exception (400 → ``BadRequestError``, 401 →
``AuthenticationError``, 404 → ``NotFoundError``, 413, 429 → ``RateLimitError``, 500/503 →
``InternalServerError``).

A 500 never carries the exception's text (it can hold paths, tensor shapes or prompt text of
other requests): its body says "internal error" with a request id, and the traceback is
logged under that id on the ``tunelab.serve`` logger.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunelab.serve.schemas import new_id

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_overloaded",
}


@dataclass
class APIError(Exception):
    """An error to send as an OpenAI error object."""

    status: int
    message: str
    code: str | None = None
    param: str | None = None
    request_id: str | None = None

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": ERROR_TYPES.get(self.status, "server_error"),
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        headers = {"Retry-After": "1"} if self.status in (429, 503) else {}
        if self.request_id:
            headers["X-Request-Id"] = self.request_id
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


logger = logging.getLogger("tunelab.serve")


def internal_error(err: BaseException) -> APIError:
    """A 500 that names only a fresh request id; the exception is logged under that id."""
    request_id = new_id("req")
    logger.error("request %s failed", request_id, exc_info=(type(err), err, err.__traceback__))
    return APIError(500, f"internal error (request id {request_id})", code="internal_error", request_id=request_id)


def _validation_error(exc: RequestValidationError) -> APIError:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "extra_forbidden":
        message = f"unknown field '{param}': this server rejects fields it does not implement"
    else:
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    return APIError(400, message, code="invalid_request", param=param)


def install_error_handlers(app: FastAPI) -> None:
    """Make every error path of ``app`` answer with an OpenAI error object."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else None
        return APIError(exc.status_code, str(exc.detail), code=code).response()

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        return internal_error(exc).response()
