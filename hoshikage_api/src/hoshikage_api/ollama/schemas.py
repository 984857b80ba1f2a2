"""Ollama API wire types, as msgspec Structs.

Request bodies are decoded strictly (see :mod:`hoshikage_api.body`): a wrong type anywhere is
a 400 naming its path. Unknown fields are ignored, as Ollama does. ``options`` is a free
object here and is checked key by key in :mod:`.translate` (Ollama ignores unknown option
keys). ``images`` decode, so that the translator can refuse them with a clear message.
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta, Struct

from ..kernel.wire import ModelName, Speculative

#: Seconds (a number, negative: never), or a Go duration string ("10m", "1h30m", "-1").
KeepAlive = Annotated[
    float | str,
    Meta(
        description='how long the model stays loaded after this request: seconds, "10m", 0 (unload now), -1 (never)'
    ),
]
#: ``"json"``, or a JSON schema object; ``""`` means plain text.
Format = Annotated[
    str | dict[str, Any], Meta(description='"json" or a JSON schema, enforced by grammar')
]

# ---- chat messages and tools --------------------------------------------------------------


class ToolCallFunction(Struct, kw_only=True):
    name: Annotated[str, Meta(min_length=1, max_length=256)]
    #: An object in Ollama's shape; a JSON string holding one is accepted too.
    arguments: dict[str, Any] | str | None = None
    index: int | None = None


class ToolCall(Struct, kw_only=True):
    function: ToolCallFunction
    id: str | None = None


class ChatMessage(Struct, kw_only=True):
    role: Annotated[str, Meta(max_length=64)]
    content: str | None = None
    #: Refused with a 400: the models served here are text-only.
    images: list[Any] | None = None
    #: An earlier turn's thinking: back into the prompt where the template writes it.
    thinking: str | None = None
    tool_calls: Annotated[list[ToolCall], Meta(max_length=1024)] | None = None
    #: On ``tool`` messages: the tool that produced this result.
    tool_name: str | None = None
    tool_call_id: str | None = None


class ToolFunction(Struct, kw_only=True):
    name: Annotated[str, Meta(min_length=1, max_length=256)]
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(Struct, kw_only=True):
    function: ToolFunction
    type: str = "function"


# ---- requests -----------------------------------------------------------------------------


class GenerationFields(Struct, kw_only=True):
    """Fields shared by ``/api/chat`` and ``/api/generate``."""

    model: ModelName
    #: NDJSON streaming unless false.
    stream: bool | None = None
    format: Format | None = None
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive | None = None
    #: Hoshikage extension (also taken from ``options``, where the ollama client can set it).
    speculative: Speculative | None = None
    #: Hoshikage extension (llama-server's): a GBNF grammar the raw output must follow.
    grammar: str | None = None
    #: true/false, or an effort level ("high", "medium", "low"): the template's own switch.
    think: bool | str | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    #: A chat over the context drops its oldest turns (true, Ollama's default), or is a 400.
    truncate: bool | None = None
    #: Ollama's context shift at the end of the context: accepted; an answer here ends there
    #: (``done_reason: "length"``).
    shift: bool | None = None


class ChatRequest(GenerationFields, kw_only=True):
    """``POST /api/chat``. No messages: load the model (or unload it, with ``keep_alive: 0``)."""

    messages: Annotated[list[ChatMessage], Meta(max_length=100_000)] | None = None
    tools: Annotated[list[Tool], Meta(max_length=128)] | None = None


class GenerateRequest(GenerationFields, kw_only=True):
    """``POST /api/generate``. An empty prompt: load the model (or unload it, with
    ``keep_alive: 0``)."""

    prompt: str | None = None
    system: str | None = None
    #: Send the prompt as it is, without the chat template.
    raw: bool | None = None
    #: Fill in the middle: the text after the gap (models with FIM tokens; see the API spec).
    suffix: str | None = None
    template: str | None = None
    context: list[int] | None = None
    images: list[Any] | None = None


class EmbedRequest(Struct, kw_only=True):
    """``POST /api/embed``."""

    model: ModelName
    input: str | Annotated[list[str], Meta(max_length=2048)] = ""
    truncate: bool | None = None
    dimensions: int | None = None
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive | None = None


class EmbeddingsRequest(Struct, kw_only=True):
    """``POST /api/embeddings`` (Ollama's older embedding route)."""

    model: ModelName
    prompt: str = ""
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive | None = None


class ShowRequest(Struct, kw_only=True):
    """``POST /api/show``: ``model`` (or the older ``name``)."""

    model: Annotated[str, Meta(max_length=512)] | None = None
    name: Annotated[str, Meta(max_length=512)] | None = None
    verbose: bool | None = None


# ---- responses ----------------------------------------------------------------------------


class ToolCallOut(Struct, kw_only=True):
    id: str
    function: dict[str, Any]


class Message(Struct, kw_only=True, omit_defaults=True):
    role: str
    content: str
    thinking: str | None = None
    tool_calls: list[ToolCallOut] | None = None


class TopLogprob(Struct, kw_only=True):
    token: str
    logprob: float
    bytes: list[int]


class Logprob(Struct, kw_only=True, omit_defaults=True):
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[TopLogprob] | None = None


class Final(Struct, kw_only=True, omit_defaults=True):
    """What ends every answer: ``done``, ``done_reason`` and the counts and durations
    (nanoseconds)."""

    model: str
    created_at: str
    done: bool
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class ChatResponse(Final, kw_only=True, omit_defaults=True):
    """``/api/chat`` without streaming (streamed, each line has this shape too)."""

    message: Message
    logprobs: list[Logprob] | None = None


class GenerateResponse(Final, kw_only=True, omit_defaults=True):
    """``/api/generate`` without streaming (streamed, each line has this shape too)."""

    response: str
    thinking: str | None = None
    logprobs: list[Logprob] | None = None
    #: On the last object: the prompt's and the answer's token ids, to send back as the
    #: next request's ``context`` (Ollama's conversational memory of ``/api/generate``).
    context: list[int] | None = None


class ModelDetails(Struct, kw_only=True):
    parent_model: str
    format: str
    family: str
    families: list[str] | None
    parameter_size: str
    quantization_level: str


class ListedModel(Struct, kw_only=True):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails


class TagsResponse(Struct, kw_only=True):
    models: list[ListedModel]


class RunningModel(Struct, kw_only=True):
    name: str
    model: str
    size: int
    digest: str
    details: ModelDetails
    expires_at: str
    size_vram: int
    context_length: int


class PsResponse(Struct, kw_only=True):
    models: list[RunningModel]


class ShowResponse(Struct, kw_only=True):
    modelfile: str
    parameters: str
    template: str
    details: ModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str
    license: str = ""
    #: The model's own system message (Ollama's SYSTEM; the ``system`` option), if any.
    system: str = ""


class EmbedResponse(Struct, kw_only=True):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class EmbeddingsResponse(Struct, kw_only=True):
    embedding: list[float]


class VersionResponse(Struct, kw_only=True):
    version: str


class OllamaErrorBody(Struct, kw_only=True):
    error: str
