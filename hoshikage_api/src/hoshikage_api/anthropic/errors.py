"""The one place where errors on the Anthropic routes become responses.

Every error body has Anthropic's shape ``{"type": "error", "error": {"type", "message"}}``.
Any exception is first turned into the API's :class:`~hoshikage_api.kernel.errors.ApiError` (so
domain errors, Litestar's HTTP errors and body validation are mapped exactly as on the
OpenAI routes), then its status picks Anthropic's error type. Two cases differ from OpenAI:

* a full queue (or a server shutting down) is Anthropic's ``529 overloaded_error``, which
  Anthropic clients retry, with ``Retry-After``;
* a prompt over the context says ``prompt is too long: N tokens > M maximum`` and nothing
  more, the message Anthropic clients (Claude Code among them) look for to compact a
  conversation.
"""

from __future__ import annotations

from hoshikage_core.errors import ContextLengthExceeded

from ..kernel.errors import ApiError, respond, to_api_error
from .schemas import AnthropicErrorBody, AnthropicErrorDetail

#: Anthropic's status for "overloaded".
OVERLOADED = 529

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    OVERLOADED: "overloaded_error",
}


def to_anthropic(exc: Exception) -> tuple[ApiError, AnthropicErrorBody]:
    """The error response for ``exc``: its status and headers (as an ApiError) and the body."""
    error = to_api_error(exc)
    message = error.message
    if isinstance(exc, ContextLengthExceeded):
        # Exactly Anthropic's words: Claude Code matches the whole message
        # (/^prompt is too long: \d+ tokens > \d+ maximum$/) to compact the conversation.
        message = f"prompt is too long: {exc.prompt_tokens} tokens > {exc.n_ctx} maximum"
    if error.status == 503:  # queue full, or shutting down
        error = ApiError(
            OVERLOADED, message, type=error.type, code=error.code, headers=error.headers
        )
    if error.status in _TYPES:
        kind = _TYPES[error.status]
    elif 400 <= error.status < 500:
        kind = "invalid_request_error"
    else:
        kind = "api_error"
    return error, AnthropicErrorBody(error=AnthropicErrorDetail(type=kind, message=message))


def handle(request, exc: Exception):
    """Litestar exception handler for the Anthropic routes."""
    return respond(request, *to_anthropic(exc))
