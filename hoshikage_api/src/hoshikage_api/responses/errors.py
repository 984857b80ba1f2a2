"""The one place where errors on the Responses routes become responses.

Every error body has OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``, and
the mapping is the OpenAI routes' own (:func:`hoshikage_api.kernel.errors.to_api_error`). A prompt
over the context names ``input``, the field that holds the prompt here, and a schema the
backend cannot turn into a grammar names ``text.format``. After a stream has
started, an error ends it with a ``response.failed`` event instead (:mod:`.format`).
"""

from __future__ import annotations

from hoshikage_core.errors import HoshikageError

from ..kernel.errors import ApiError, respond, to_api_error

#: The core's names for request fields (chat's), as this API names them.
_PARAMS = {"messages": "input", "prompt": "input", "response_format": "text.format"}


def to_openai(exc: Exception) -> ApiError:
    error = to_api_error(exc)
    if isinstance(exc, HoshikageError):  # the core names chat's fields
        error.param = _PARAMS.get(error.param, error.param)
        if error.code == "context_length_exceeded" and error.param is None:
            error.param = "input"
    return error


def failure_code(error: ApiError) -> str:
    """The ``error.code`` of a failed response: OpenAI's ``ResponseError`` codes."""
    if error.code == "queue_full":
        return "rate_limit_exceeded"
    if 400 <= error.status < 500:
        return "invalid_prompt"
    return "server_error"


def handle(request, exc: Exception):
    """Litestar exception handler for the Responses routes."""
    error = to_openai(exc)
    return respond(request, error, error.body())
