"""The rerank wire types: Jina's and Cohere's shape, as llama-server serves it."""

from __future__ import annotations

from typing import Annotated

from msgspec import UNSET, Meta, Struct, UnsetType

MAX_DOCUMENTS = 1000


class TextDocument(Struct, kw_only=True):
    text: str


Document = str | TextDocument


class RerankRequest(Struct, kw_only=True):
    model: Annotated[str, Meta(min_length=1, max_length=512)]
    query: Annotated[str, Meta(min_length=1)]
    documents: Annotated[list[Document], Meta(min_length=1, max_length=MAX_DOCUMENTS)]
    #: How many results come back, best first (all by default).
    top_n: Annotated[int, Meta(ge=1)] | None = None
    #: Each result carries its document as ``{"text"}``.
    return_documents: bool = False


class ResultDocument(Struct, kw_only=True):
    text: str


class Result(Struct, kw_only=True):
    index: int
    relevance_score: float
    document: ResultDocument | UnsetType = UNSET


class RerankUsage(Struct, kw_only=True):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(Struct, kw_only=True):
    model: str
    object: str = "list"
    usage: RerankUsage
    results: list[Result]
