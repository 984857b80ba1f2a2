"""Bodies of llama-server's utility routes (``tools/server/README.md`` of llama.cpp).

llama-server serves one model, so its bodies name none; here ``model`` names one, and may
be left out when only one model is registered.
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import UNSET, Meta, Struct, UnsetType

ModelField = Annotated[str, Meta(min_length=1, max_length=512)] | None


class TokenizeRequest(Struct, kw_only=True):
    content: str
    model: ModelField = None
    #: Add the BOS token where the model wants one.
    add_special: bool = False
    #: Read special tokens written as text (``<|im_start|>``) as those tokens.
    parse_special: bool = True
    #: Each token as ``{"id", "piece"}``; ``piece`` is a string, or its bytes when they are
    #: not valid UTF-8 on their own.
    with_pieces: bool = False


class Piece(Struct, kw_only=True):
    id: int
    piece: str | list[int]


class Tokens(Struct, kw_only=True):
    tokens: list[int] | list[Piece]


class DetokenizeRequest(Struct, kw_only=True):
    tokens: Annotated[list[int], Meta(max_length=1_000_000)]
    model: ModelField = None


class Content(Struct, kw_only=True):
    content: str


class ApplyTemplateRequest(Struct, kw_only=True):
    messages: Annotated[list[dict[str, Any]], Meta(min_length=1)]
    model: ModelField = None
    tools: list[dict[str, Any]] | UnsetType = UNSET


class Prompt(Struct, kw_only=True):
    prompt: str
