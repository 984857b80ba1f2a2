"""Thinking signatures: a thinking block's text, carried by its ``signature``.

Anthropic signs thinking blocks so that a client hands them back unchanged; with
``thinking.display: "omitted"`` (what Claude Code asks for) a block comes without its text
and only the signature carries the reasoning to the next turn. Here a signature is
``hk1.<text, base64url>.<HMAC-SHA256 of it, base64url>`` under a key drawn when the server
starts: a client keeps the model's reasoning across turns without a store, and a signature
that was altered, or given by another server run, restores nothing (the block then counts as
redacted: left out of the prompt). It is not encryption: the reasoning is this server's own
output, readable by the client that received it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

_KEY = secrets.token_bytes(32)
_PREFIX = "hk1."


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(payload: str) -> str:
    return _b64(hmac.new(_KEY, payload.encode(), hashlib.sha256).digest())


def sign(thinking: str) -> str:
    """The signature of a thinking block whose text is ``thinking``."""
    payload = _b64(thinking.encode("utf-8"))
    return f"{_PREFIX}{payload}.{_mac(payload)}"


def restore(signature: str | None) -> str | None:
    """The text a signature of :func:`sign` carries; None for anything else (another
    server's, a client's own, or altered)."""
    if not signature or not signature.startswith(_PREFIX):
        return None
    payload, _, mac = signature[len(_PREFIX) :].partition(".")
    if not hmac.compare_digest(mac, _mac(payload)):
        return None
    try:
        return _unb64(payload).decode("utf-8")
    except ValueError:
        return None
