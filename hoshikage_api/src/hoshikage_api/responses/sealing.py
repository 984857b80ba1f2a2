"""``encrypted_content`` on reasoning items: the reasoning text sealed, so that a client that
stores nothing (``store: false``, as Codex runs) can send an earlier turn's reasoning back in
``input`` and have it restored to the prompt.

With ``include: ["reasoning.encrypted_content"]`` each reasoning output item carries a token:
``hk1.`` then URL-safe base64 of an HMAC-SHA256 tag (a per-server key) and the compressed
text. A token sent back is used only when its tag verifies under this server's key; anything
else (edited, truncated, from another server or an older key) is refused with one and the
same message, whatever is wrong with it, and nothing of its content is ever answered back:
no decryption oracle. The text is not enciphered: unlike OpenAI's, this server shows the
reasoning itself in the same response (``content``'s ``reasoning_text``), so there is nothing
to hide from the client that received it; the seal makes the token tamper-evident, and its
format is not part of the API (clients treat it as opaque, as OpenAI's).

The key is 32 random bytes in ``reasoning.key`` in the user's data directory, beside the
response store (``$XDG_DATA_HOME/hoshikage/``), created on first use, readable by its owner
only. Deleting it makes every token issued so far invalid.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import zlib
from pathlib import Path

PREFIX = "hk1."
#: What a tag covers besides the text: tokens of this kind and version only.
_DOMAIN = b"hoshikage reasoning v1\0"
_TAG = 32
#: The most text a token may open to (a reasoning item's text is far smaller).
_MAX_TEXT = 16 * 1024 * 1024


class Sealer:
    def __init__(self, key: bytes):
        if len(key) < 32:
            raise ValueError("a sealing key has at least 32 bytes")
        self._key = key

    @classmethod
    def at(cls, path: Path) -> Sealer:
        """The sealer of the key at ``path``, made there (mode 0600) if there is none."""
        path = Path(path)
        try:
            return cls(path.read_bytes())
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another server made it first
            return cls(path.read_bytes())
        with os.fdopen(fd, "wb") as out:
            out.write(key)
        return cls(key)

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._key, _DOMAIN + body, hashlib.sha256).digest()

    def seal(self, text: str) -> str:
        body = zlib.compress(text.encode("utf-8"))
        return PREFIX + base64.urlsafe_b64encode(self._tag(body) + body).decode("ascii")

    def open(self, token: str) -> str | None:
        """The text ``token`` was sealed from, or None when it was not sealed by this key."""
        if not isinstance(token, str) or not token.startswith(PREFIX):
            return None
        try:
            raw = base64.urlsafe_b64decode(token[len(PREFIX) :].encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            return None
        tag, body = raw[:_TAG], raw[_TAG:]
        if len(tag) != _TAG or not hmac.compare_digest(tag, self._tag(body)):
            return None
        inflate = zlib.decompressobj()
        text = inflate.decompress(body, _MAX_TEXT)
        if inflate.unconsumed_tail or not inflate.eof:
            return None
        return text.decode("utf-8", "replace")


def key_path() -> Path:
    """``reasoning.key`` in the user's data directory, beside the response store."""
    from .store import default_path

    return default_path().parent / "reasoning.key"


def sealer_of(request) -> Sealer:
    """The app's sealer, its key read (or made) on first use."""
    state = request.app.state
    sealer = state.get("reasoning_sealer")
    if sealer is None:
        sealer = state["reasoning_sealer"] = Sealer.at(key_path())
    return sealer
