"""The one place where errors on the Ollama routes become responses.

Every error body has Ollama's shape ``{"error": "..."}``. Any exception is first turned into
the API's :class:`~hoshikage_api.kernel.errors.ApiError` (so domain errors, Litestar's HTTP errors,
body validation and the API-key guard are mapped exactly as on the OpenAI routes: 400 bad
body, 401 missing key, 413 too large, 500 load failure, 503 queue full with
``Retry-After``), then only the body changes. One message differs: an unknown model says
``model "x" not found, try pulling it first``, the words Ollama clients look for.
"""

from __future__ import annotations

from hoshikage_core.errors import ModelNotFound

from ..kernel.errors import ApiError, respond, to_api_error

#: Ollama's pull, push, create, copy and delete: models here come from the config.
MANAGED_BY_CONFIG = (
    "Hoshikage does not {action} models: they are the GGUF files registered in its config "
    "(`[[models]]` in config.toml, then restart or reload the server). "
    "See GET /api/tags for the models it serves."
)


def not_found(name: str, known: list[str] | None = None) -> ApiError:
    """A 404 for an unknown model, in Ollama's words (and the names that do exist)."""
    message = f'model "{name}" not found, try pulling it first'
    if known is not None:
        listed = ", ".join(sorted(known)[:20]) or "none"
        message += f" (Hoshikage serves only the models in its config: {listed})"
    return ApiError(404, message, param="model", code="model_not_found")


def not_supported(action: str) -> ApiError:
    """A 501 for Ollama's model management routes."""
    return ApiError(501, MANAGED_BY_CONFIG.format(action=action), code="not_supported")


def to_ollama(exc: Exception) -> tuple[ApiError, dict[str, str]]:
    """The error response for ``exc``: its status and headers (as an ApiError) and the body."""
    if isinstance(exc, ModelNotFound):
        error = not_found(exc.name, exc.known)
    else:
        error = to_api_error(exc)
    return error, {"error": error.message}


def handle(request, exc: Exception):
    """Litestar exception handler for the Ollama routes."""
    return respond(request, *to_ollama(exc))
