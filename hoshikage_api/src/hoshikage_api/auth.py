"""Bearer-token auth: every route but those marked ``opt={"public": True}`` (``/health``)."""

from __future__ import annotations

import hmac

from .errors import ApiError


def _unauthorized(message: str) -> ApiError:
    return ApiError(
        401, message, type="authentication_error", code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )  # fmt: skip


def api_key_guard(api_key: str):
    """A Litestar guard requiring ``Authorization: Bearer <api_key>``, compared in constant time."""
    expected = api_key.encode()

    async def guard(connection, handler) -> None:
        if handler.opt.get("public") or connection.scope.get("method") == "OPTIONS":
            return
        scheme, _, token = connection.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("Missing API key: send the header 'Authorization: Bearer <key>'.")
        if not hmac.compare_digest(token.strip().encode("utf-8", "surrogateescape"), expected):
            raise _unauthorized("Incorrect API key provided.")

    return guard
