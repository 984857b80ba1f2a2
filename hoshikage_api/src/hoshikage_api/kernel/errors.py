"""The one place where errors become HTTP responses. A surface with its own error shape
(Anthropic's, Ollama's) starts from :func:`to_api_error` and changes only the body and, where
its clients expect it, the status (:mod:`hoshikage_api.anthropic.errors`,
:mod:`hoshikage_api.ollama.errors`).

Every error body here has OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.
Domain errors from the core, Litestar's own HTTP errors (unknown route, oversized body) and
request validation errors are all mapped here; anything else is a 500 ``server_error`` and
is logged with its traceback. Client input never reaches that last branch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from hoshikage_core.errors import (
    Cancelled,
    ConfigError,
    ContextLengthExceeded,
    HoshikageError,
    InvalidRequest,
    ModelNotFound,
    QueueFull,
)

if TYPE_CHECKING:
    from litestar import Response

log = logging.getLogger("hoshikage.api")

#: A Litestar exception handler: ``(request, exc) -> Response``.
Handler = Callable[[Any, Exception], "Response"]

INVALID_REQUEST = "invalid_request_error"


class ApiError(Exception):
    """An error response: raised by the API's own validation, rendered by :func:`handle`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}
        #: More fields of the error object (a refused reload's ``problems``).
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
                **self.extra,
            }
        }


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """A 400 ``invalid_request_error``."""
    return ApiError(400, message, param=param, code=code)


#: The metrics' ``path`` label of a request that matched no route: one series for every
#: unknown URL, so strangers cannot create series (see :mod:`hoshikage_api.metrics`).
UNMATCHED = "<unmatched>"


def from_domain(exc: HoshikageError) -> ApiError:
    """The HTTP form of a core error, with the ``param`` the error carries (never a guess
    from the URL: the backend names the field, in the core's names ``messages``, ``prompt``
    and ``input``)."""
    param = exc.param
    if isinstance(exc, ModelNotFound):
        return ApiError(404, str(exc), param=param or "model", code="model_not_found")
    if isinstance(exc, ConfigError):  # a refused reload: every problem, one per line
        return ApiError(400, str(exc), code=exc.code, extra={"problems": exc.problems})
    if isinstance(exc, ContextLengthExceeded):
        return ApiError(400, str(exc), param=param, code="context_length_exceeded")
    if isinstance(exc, InvalidRequest):
        return ApiError(400, str(exc), param=param, code="invalid_request")
    if isinstance(exc, QueueFull):
        return ApiError(
            503,
            str(exc),
            type="server_busy",
            code="queue_full",
            headers={"Retry-After": str(exc.retry_after)},
        )
    if isinstance(exc, Cancelled):
        return ApiError(
            503, str(exc), type="server_busy", code="cancelled", headers={"Retry-After": "1"}
        )
    status = getattr(exc, "http_status", None)  # a pull's errors say their own
    if status is not None:
        kind = "server_error" if status >= 500 else "invalid_request_error"
        return ApiError(status, str(exc), type=kind, param=param, code=exc.code)
    return ApiError(500, str(exc), type="server_error", param=param, code=exc.code)


def from_http(exc) -> ApiError:
    """The OpenAI form of one of Litestar's own HTTP exceptions."""
    status = exc.status_code
    if status == 400 and any(
        e.get("key") == "data" for e in exc.extra or () if isinstance(e, dict)
    ):
        return invalid("The request body is empty: send a JSON object.")
    detail = exc.detail or "error"
    headers = dict(exc.headers or {})
    if status == 404:
        return ApiError(404, detail, code="not_found")
    if status == 405:
        return ApiError(405, detail, code="method_not_allowed", headers=headers)
    if status == 413:
        return ApiError(
            413,
            "The request body is larger than the server's max_body_size.",
            code="request_too_large",
        )
    if status < 500:
        return ApiError(status, detail, headers=headers)
    return ApiError(status, detail, type="server_error", headers=headers)


def to_api_error(exc: Exception) -> ApiError:
    """Any exception as an :class:`ApiError`."""
    from litestar.exceptions import HTTPException

    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, HoshikageError):
        return from_domain(exc)
    if isinstance(exc, HTTPException):
        return from_http(exc)
    log.error("unhandled error", exc_info=exc)
    return ApiError(500, "Internal server error; see the server log.", type="server_error")


def route_of(request) -> str:
    """The route template the request matched (``/v1/models/{model_id}``), or
    :data:`UNMATCHED`: never the raw path, which the client chooses."""
    return request.scope.get("path_template") or UNMATCHED


def log_and_count(request, error: ApiError) -> None:
    """Count an error response in the metrics (by route template) and log it."""
    request.app.state.metrics.error_response(
        route_of(request), error.status, error.code or error.type
    )
    level = logging.WARNING if error.status >= 500 else logging.INFO
    log.log(level, "%s %s %d %s", request.method, request.url.path, error.status, error.message)


def respond(request, error: ApiError, body) -> Response:
    """The JSON response for ``error`` with ``body`` (a surface's shape), counted and logged."""
    from litestar import Response

    log_and_count(request, error)
    return Response(
        content=body, status_code=error.status, headers=error.headers, media_type="application/json"
    )


def handle(request, exc: Exception) -> Response:
    """Litestar exception handler with the default (OpenAI) error shape."""
    error = to_api_error(exc)
    return respond(request, error, error.body())


def app_handler(surfaces: Sequence[tuple[str, Handler]]) -> Handler:
    """The app's exception handler. A surface's routes have their own handler (set on its
    router); a URL that matches no route (404) or no method (405) gets the handler of the
    surface whose path prefix it is under, from ``surfaces`` (``(prefix, handler)``), so it
    keeps that surface's error shape; anything else gets :func:`handle`."""

    def handle_any(request, exc: Exception) -> Response:
        if route_of(request) == UNMATCHED:
            path = request.url.path
            for prefix, surface in surfaces:
                if path == prefix or path.startswith(prefix + "/"):
                    return surface(request, exc)
        return handle(request, exc)

    return handle_any
