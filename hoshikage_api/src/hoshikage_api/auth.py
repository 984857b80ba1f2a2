"""API-key auth: every route but those marked ``opt={"public": True}`` (``/health``).

The key is accepted as ``Authorization: Bearer <key>`` (OpenAI clients, Ollama clients) or
as ``x-api-key: <key>`` (Anthropic clients), on every route.
"""

from __future__ import annotations

import hmac

from .kernel.errors import ApiError


def _unauthorized(message: str) -> ApiError:
    return ApiError(
        401,
        message,
        type="authentication_error",
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


def presented_keys(headers) -> list[str]:
    """The keys the client sent: ``x-api-key`` and a Bearer token, when present."""
    keys = []
    key = headers.get("x-api-key", "").strip()
    if key:
        keys.append(key)
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        keys.append(token.strip())
    return keys


def api_key_guard(api_key: str):
    """A Litestar guard requiring the key (see the module docstring), compared in constant time."""
    expected = api_key.encode()

    async def guard(connection, handler) -> None:
        if handler.opt.get("public") or connection.scope.get("method") == "OPTIONS":
            return
        keys = presented_keys(connection.headers)
        if not keys:
            raise _unauthorized(
                "Missing API key: send the header 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
            )
        # Every presented key is compared (no early exit), each in constant time.
        matches = [
            hmac.compare_digest(key.encode("utf-8", "surrogateescape"), expected) for key in keys
        ]
        if not any(matches):
            raise _unauthorized("Incorrect API key provided.")

    return guard
