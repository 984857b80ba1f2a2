"""Wire pieces that more than one surface uses: field types, the default error body, and
the encoders of stream items (server-sent events, NDJSON lines)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

KeepAlive = Annotated[
    float | str,
    Meta(
        description="Hoshikage extension: how long the model stays loaded after this request: "
        'seconds, a duration like "5m", 0 (unload now) or -1 (never)'
    ),
]
ModelName = Annotated[str, Meta(min_length=1, max_length=512)]
Speculative = Annotated[
    bool,
    Meta(
        description="Hoshikage extension: false turns speculative decoding off for this request "
        "(the output is the same; only the speed differs)"
    ),
]


class ErrorDetail(Struct, kw_only=True):
    message: str
    type: str
    param: str | None
    code: str | None


#: The default error shape (OpenAI's): Hoshikage's own routes and the OpenAI surfaces.
class ErrorBody(Struct, kw_only=True):
    error: ErrorDetail


#: msgspec's JSON encoder, made once.
encode = msgspec.json.Encoder().encode


def data_event(obj: Any) -> bytes:
    """A server-sent event with data only: ``data: {json}``."""
    return b"data: " + encode(obj) + b"\n\n"


def named_event(kind: str, data: Any) -> bytes:
    """A server-sent event with a name: ``event: kind`` then ``data: {json}``."""
    return b"event: " + kind.encode() + b"\ndata: " + encode(data) + b"\n\n"


def line(obj: Any) -> bytes:
    """One NDJSON line."""
    return encode(obj) + b"\n"
