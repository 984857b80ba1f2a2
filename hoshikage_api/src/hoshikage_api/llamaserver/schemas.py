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
    #: Ids, or with ``with_pieces`` each id with its piece (one list type, so OpenAPI can say it).
    tokens: list[int | Piece]


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


class ExtraFile(Struct, kw_only=True):
    text: str = ""
    filename: str = "tmp"


class InfillRequest(Struct, kw_only=True):
    """llama-server's ``/infill``: the code before and after the gap, other files as context,
    and ``prompt``, read after the code before (where the model's answer begins)."""

    input_prefix: str
    input_suffix: str
    model: ModelField = None
    input_extra: Annotated[list[ExtraFile], Meta(max_length=1024)] = []
    prompt: str = ""
    n_predict: Annotated[int, Meta(ge=-1, le=1_000_000)] | None = None
    max_tokens: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_k: Annotated[int, Meta(ge=0, le=1_000_000)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    min_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    seed: int | None = None
    stop: Annotated[list[str], Meta(max_length=16)] = []
    stream: bool = False


class InfillResult(Struct, kw_only=True):
    """llama-server's ``/completion`` answer, the fields clients read."""

    content: str
    model: str
    stop: bool = True
    #: ``eos`` (the model ended), ``limit`` (``n_predict``), ``word`` (a stop string).
    stop_type: str = "eos"
    stopping_word: str = ""
    tokens_predicted: int = 0
    tokens_evaluated: int = 0
    tokens_cached: int = 0
