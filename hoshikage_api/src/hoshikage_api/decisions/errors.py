"""Errors on the Decisions route: OpenAI's shape ``{"error": {"message", "type", "param",
"code"}}``, mapped as on the OpenAI routes (:func:`hoshikage_api.errors.to_api_error`); the
core's prompt fields (``messages``, ``prompt``) are this API's ``input``."""

from __future__ import annotations

from ..kernel.errors import ApiError, respond, to_api_error

_PARAMS = {"messages": "input", "prompt": "input", "continuations": "questions"}


def to_openai(exc: Exception) -> ApiError:
    error = to_api_error(exc)
    error.param = _PARAMS.get(error.param, error.param)
    return error


def handle(request, exc: Exception):
    """Litestar exception handler for the Decisions route."""
    error = to_openai(exc)
    return respond(request, error, error.body())
