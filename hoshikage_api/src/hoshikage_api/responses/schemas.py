"""OpenAI Responses API wire types, as msgspec Structs.

The request body is decoded strictly (see :mod:`hoshikage_api.body`): a wrong type anywhere
is a 400 naming its path. Unknown fields are ignored, as on the other OpenAI routes. Fields
the official SDK sends that change nothing here (``user``, ``include``, ``reasoning``,
``service_tier``, ``prompt_cache_key``...) are declared so that their types are checked;
those that would ask for something this server cannot do (unstored ``background``,
``prompt``, ``context_management``, hosted tools) decode, so the translator can refuse them
by name.

``input`` items are decoded in two steps: the body holds them as JSON objects, and
:mod:`.translate` converts each one to the item type its ``type`` names (a message may leave
``type`` out, as OpenAI allows), so that an unknown or hosted item type is refused by name.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from ..kernel.wire import KeepAlive, ModelName, Speculative
from ..openai.schemas import Seed, Temperature, TopP

# ---- input content parts ------------------------------------------------------------------


class InputText(Struct, tag_field="type", tag="input_text", kw_only=True):
    text: str


class OutputText(Struct, tag_field="type", tag="output_text", kw_only=True, omit_defaults=True):
    """Assistant text: in an earlier turn's message sent back as input, and in output."""

    text: str
    annotations: list[Any] = []
    logprobs: list[Any] | UnsetType = UNSET


class Refusal(Struct, tag_field="type", tag="refusal", kw_only=True):
    refusal: str


class InputImage(Struct, tag_field="type", tag="input_image", kw_only=True):
    """An image as a ``data:`` URL (``file_id`` is refused: no files are stored here)."""

    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None


class InputFile(Struct, tag_field="type", tag="input_file", kw_only=True):
    """A document: ``file_data`` a ``data:`` URL (``data:application/pdf;base64,...``), a
    PDF or a text file read by :mod:`..kernel.documents`; ``file_id`` and ``file_url`` are
    refused (no files are stored or fetched here)."""

    file_id: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    filename: str | None = None


class InputAudio(Struct, tag_field="type", tag="input_audio", kw_only=True):
    """Audio: ``input_audio`` ``{"data": base64, "format": "wav" | "mp3"}``."""

    input_audio: dict[str, Any] | None = None


ContentPart = InputText | OutputText | Refusal | InputImage | InputFile | InputAudio
Content = str | Annotated[list[ContentPart], Meta(max_length=100_000)]

# ---- input items --------------------------------------------------------------------------

Role = Literal["user", "assistant", "system", "developer"]
ItemStatus = Literal["in_progress", "completed", "incomplete"]
#: An item id the client may set: stored and echoed back, so bounded.
ItemId = Annotated[str, Meta(max_length=256)]
#: A free string the client may set that is stored and echoed back (``user``...).
FreeString = Annotated[str, Meta(max_length=256)]


class MessageItem(Struct, tag_field="type", tag="message", kw_only=True, omit_defaults=True):
    role: Role
    content: Content
    id: ItemId | None = None
    status: ItemStatus | None = None


class FunctionCallItem(
    Struct, tag_field="type", tag="function_call", kw_only=True, omit_defaults=True
):
    """A call the model made in an earlier turn (an output item sent back as input)."""

    call_id: Annotated[str, Meta(min_length=1, max_length=512)]
    name: Annotated[str, Meta(min_length=1, max_length=256)]
    arguments: str
    #: The namespace tool the function belongs to (see :mod:`.tools`).
    namespace: Annotated[str, Meta(max_length=256)] | None = None
    id: ItemId | None = None
    status: ItemStatus | None = None


class CustomToolCallItem(
    Struct, tag_field="type", tag="custom_tool_call", kw_only=True, omit_defaults=True
):
    """A custom (free-form) tool call the model made in an earlier turn: ``input`` is its text."""

    call_id: Annotated[str, Meta(min_length=1, max_length=512)]
    name: Annotated[str, Meta(min_length=1, max_length=256)]
    input: str
    namespace: Annotated[str, Meta(max_length=256)] | None = None
    id: ItemId | None = None
    status: ItemStatus | None = None


class CustomToolCallOutputItem(
    Struct, tag_field="type", tag="custom_tool_call_output", kw_only=True, omit_defaults=True
):
    """The client's result of a custom tool call, as ``function_call_output``'s."""

    call_id: Annotated[str, Meta(min_length=1, max_length=512)]
    output: Content
    id: ItemId | None = None
    status: ItemStatus | None = None


class FunctionCallOutputItem(
    Struct, tag_field="type", tag="function_call_output", kw_only=True, omit_defaults=True
):
    """The client's result of a call: ``output`` is text, or text parts."""

    call_id: Annotated[str, Meta(min_length=1, max_length=512)]
    output: Content
    id: ItemId | None = None
    status: ItemStatus | None = None


class ReasoningItem(Struct, tag_field="type", tag="reasoning", kw_only=True, omit_defaults=True):
    """An earlier turn's reasoning sent back by the client (as Codex does): its text
    (``content``'s ``reasoning_text`` parts, else ``summary``'s ``summary_text``) goes back
    into the prompt as the next assistant message's ``reasoning_content``, where the
    template keeps it. ``encrypted_content``, as this server issued it (see
    :mod:`.sealing`), stands for that text; one it did not issue is a 400."""

    id: ItemId | None = None
    summary: list[Any] = []
    content: list[Any] | None = None
    encrypted_content: Annotated[str, Meta(max_length=4_000_000)] | None = None
    status: ItemStatus | None = None


InputItem = (
    MessageItem
    | FunctionCallItem
    | FunctionCallOutputItem
    | CustomToolCallItem
    | CustomToolCallOutputItem
    | ReasoningItem
)

# ---- tools --------------------------------------------------------------------------------


class ResponsesToolParam(Struct, kw_only=True, omit_defaults=True):
    """A tool (see :mod:`.tools`): a ``function`` in the Responses API's flat shape, a
    ``custom`` (free-form) tool with its ``format``, a ``namespace`` of those (``tools``), or
    a tool that cannot run here (``web_search``, ``mcp``...: not offered, listed)."""

    type: Annotated[str, Meta(max_length=128)]
    name: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    #: A custom tool's input format: ``{"type": "text"}`` or ``{"type": "grammar", ...}``.
    format: dict[str, Any] | None = None
    #: A namespace's function and custom tools.
    tools: Annotated[list[dict[str, Any]], Meta(max_length=128)] | None = None
    #: An MCP tool's label (named in ``ignored_tools``).
    server_label: Annotated[str, Meta(max_length=256)] | None = None


class ToolChoiceParam(Struct, kw_only=True, omit_defaults=True):
    """``{"type": "function", "name"}`` forces that function; ``{"type": "allowed_tools",
    "mode", "tools"}`` limits the call to those functions. Other types name hosted tools."""

    type: Annotated[str, Meta(max_length=128)]
    name: str | None = None
    namespace: str | None = None
    mode: Literal["auto", "required"] | None = None
    tools: Annotated[list[dict[str, Any]], Meta(max_length=128)] | None = None


ToolChoice = Literal["none", "auto", "required"] | ToolChoiceParam

# ---- text format --------------------------------------------------------------------------


class FormatText(Struct, tag_field="type", tag="text", kw_only=True):
    pass


class FormatJsonObject(Struct, tag_field="type", tag="json_object", kw_only=True):
    pass


class FormatJsonSchema(Struct, tag_field="type", tag="json_schema", kw_only=True):
    name: Annotated[str, Meta(min_length=1, max_length=64)]
    schema: dict[str, Any]
    description: str | None = None
    strict: bool | None = None


TextFormat = FormatText | FormatJsonObject | FormatJsonSchema


class TextConfig(Struct, kw_only=True):
    """``format`` constrains the answer by grammar, as ``response_format`` does on chat;
    ``verbosity`` is accepted and echoed."""

    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


# ---- request ------------------------------------------------------------------------------


class ResponseStreamOptions(Struct, kw_only=True):
    #: Accepted; events are never padded here.
    include_obfuscation: bool | None = None


class ReasoningParam(Struct, kw_only=True):
    """``effort``: ``"none"`` turns thinking off (the template's own switch), a level goes to
    templates that take one; echoed. ``summary`` is accepted (no summaries are written)."""

    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None


MetadataKey = Annotated[str, Meta(max_length=64)]
Metadata = Annotated[dict[MetadataKey, Annotated[str, Meta(max_length=512)]], Meta(max_length=16)]


ConversationId = Annotated[str, Meta(min_length=1, max_length=256)]


class ConversationRef(Struct, kw_only=True):
    id: ConversationId


class CreateResponse(Struct, kw_only=True):
    """``POST /v1/responses``."""

    model: ModelName
    #: Text (one user message), or a list of items: ``message`` (``type`` may be left out),
    #: ``function_call``, ``function_call_output`` (and ``reasoning``, which is skipped).
    input: str | Annotated[list[dict[str, Any]], Meta(max_length=100_000)]
    #: A system message for this response only: not carried over by ``previous_response_id``.
    instructions: str | None = None
    previous_response_id: Annotated[str, Meta(max_length=256)] | None = None
    max_output_tokens: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    tools: Annotated[list[ResponsesToolParam], Meta(max_length=128)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    metadata: Metadata | None = None
    #: Keep the response for ``previous_response_id`` and ``GET`` (default true).
    store: bool | None = None
    stream: bool = False
    stream_options: ResponseStreamOptions | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    include: Annotated[list[Annotated[str, Meta(max_length=128)]], Meta(max_length=32)] | None = (
        None
    )
    reasoning: ReasoningParam | None = None
    #: ``auto``: an input over the context loses its oldest items (see the planner's
    #: truncation) instead of being a 400.
    truncation: Literal["auto", "disabled"] | None = None
    # Accepted, and change nothing here.
    max_tool_calls: Annotated[int, Meta(ge=1)] | None = None
    user: FreeString | None = None
    safety_identifier: FreeString | None = None
    #: A conversation's key: its requests go to the slot that served it last (its KV cache).
    prompt_cache_key: FreeString | None = None
    #: Codex's per-turn metadata (``x-codex-turn-metadata``...): accepted and ignored.
    client_metadata: Annotated[dict[str, Any], Meta(max_length=64)] | None = None
    prompt_cache_retention: FreeString | None = None
    service_tier: FreeString | None = None
    #: Generate in the background (GET it, cancel it; with ``stream``, its events are kept
    #: to be streamed again); not with ``store: false``.
    background: bool | None = None
    # Accepted and ignored, as documented (docs/api-spec.md): OpenAI's own scheduling,
    # caching, moderation and image options, which mean nothing for a local model.
    background_options: dict[str, Any] | None = None
    prompt_cache_options: dict[str, Any] | None = None
    moderation: dict[str, Any] | None = None
    image: dict[str, Any] | None = None
    access_programs: dict[str, Any] | None = None
    #: A stored conversation (``conv_...``, or ``{"id": ...}``): its items come before
    #: ``input``, and this response's input and output items are added to it.
    conversation: ConversationId | ConversationRef | None = None
    # Refused when set: no stored prompts here.
    prompt: dict[str, Any] | None = None
    context_management: list[Any] | None = None
    # Extensions, as on chat.
    seed: Seed | None = None
    top_k: Annotated[int, Meta(ge=0, le=1_000_000)] | None = None
    min_p: TopP | None = None
    repeat_penalty: Annotated[float, Meta(ge=0, le=10)] | None = None
    keep_alive: KeepAlive | None = None
    speculative: Speculative | None = None
    #: Hoshikage extension (llama-server's): a GBNF grammar the raw output must follow.
    grammar: str | None = None


class CountInputTokens(CreateResponse, kw_only=True):
    """``POST /v1/responses/input_tokens``: a response's request, counted, not answered;
    ``input`` may be left out when ``conversation`` or ``previous_response_id`` is given."""

    input: str | Annotated[list[dict[str, Any]], Meta(max_length=100_000)] = []
    #: OpenAI's ``personality`` preset: accepted; the prompt here is the request's own.
    personality: FreeString | None = None


class InputTokenCount(Struct, kw_only=True):
    input_tokens: int
    object: Literal["response.input_tokens"] = "response.input_tokens"


# ---- response -----------------------------------------------------------------------------


class OutputTextContent(Struct, kw_only=True):
    type: Literal["output_text"] = "output_text"
    annotations: list[Any] = []
    #: Filled with ``top_logprobs`` or ``include: ["message.output_text.logprobs"]``.
    logprobs: list[dict[str, Any]] = []
    text: str


class OutputMessage(Struct, tag_field="type", tag="message", kw_only=True):
    id: str
    status: ItemStatus
    role: Literal["assistant"] = "assistant"
    content: list[OutputTextContent]


class FunctionToolCall(
    Struct, tag_field="type", tag="function_call", kw_only=True, omit_defaults=True
):
    id: str
    call_id: str
    name: str
    arguments: str
    status: ItemStatus
    #: The namespace tool the function belongs to (see :mod:`.tools`); absent for others.
    namespace: str | None = None


class CustomToolCall(
    Struct, tag_field="type", tag="custom_tool_call", kw_only=True, omit_defaults=True
):
    """A call of a custom (free-form) tool: ``input`` is the text the model wrote for it."""

    id: str
    call_id: str
    name: str
    input: str
    status: ItemStatus
    namespace: str | None = None


class ReasoningTextContent(Struct, kw_only=True):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class OutputReasoning(Struct, tag_field="type", tag="reasoning", kw_only=True):
    """The model's reasoning, apart from its message (``content``: the raw reasoning
    text; local models write no summary)."""

    id: str
    status: ItemStatus
    summary: list[Any] = []
    content: list[ReasoningTextContent] = []
    #: With ``include: ["reasoning.encrypted_content"]``: the reasoning text, sealed (see
    #: :mod:`.sealing`), to be sent back in ``input`` when nothing is stored.
    encrypted_content: str | None = None


OutputItem = OutputMessage | FunctionToolCall | CustomToolCall | OutputReasoning


class InputTokensDetails(Struct, kw_only=True):
    #: Prompt tokens found in the model's KV cache (a slot's cached prefix), not read again.
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(Struct, kw_only=True):
    reasoning_tokens: int = 0


class ResponseUsage(Struct, kw_only=True):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class IncompleteDetails(Struct, kw_only=True):
    reason: Literal["max_output_tokens", "content_filter"]


class ResponseError(Struct, kw_only=True):
    code: str
    message: str


class ReasoningEcho(Struct, kw_only=True):
    effort: str | None = None
    summary: str | None = None


class TextEcho(Struct, kw_only=True):
    format: TextFormat
    verbosity: str = "medium"


class Response(Struct, kw_only=True):
    """A response, as ``POST /v1/responses`` returns it (and ``GET`` returns it later). With
    ``stream: true`` the same object arrives in ``response.created`` and in the last event."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["completed", "incomplete", "in_progress", "failed", "cancelled"]
    background: bool = False
    completed_at: int | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    model: str
    output: list[OutputItem]
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: ReasoningEcho
    service_tier: str = "default"
    store: bool = True
    temperature: float | None = None
    text: TextEcho
    tool_choice: Any = "auto"
    tools: list[dict[str, Any]] = []
    top_logprobs: int | None = None
    top_p: float | None = None
    truncation: Literal["auto", "disabled"] = "disabled"
    usage: ResponseUsage | None = None
    #: The conversation the response belongs to (``conversation`` on create), else absent.
    conversation: ConversationRef | UnsetType = UNSET
    user: FreeString | None = None
    metadata: dict[str, str] = {}
    #: Hoshikage extension: the request's tools that cannot run here and were not offered to
    #: the model (``web_search``, ``mcp``...), each as ``{"index", "type"}`` (and ``name``).
    ignored_tools: list[dict[str, Any]] = []


class DeletedResponse(Struct, kw_only=True):
    id: str
    object: Literal["response"] = "response"
    deleted: bool = True


class InputItemList(Struct, kw_only=True):
    """``GET /v1/responses/{id}/input_items``: the items the response was generated from
    (those of earlier responses in its chain first), each with an ``id``."""

    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool
    object: Literal["list"] = "list"


# ---- conversations ------------------------------------------------------------------------

#: Items added at once: on create, and to an existing conversation (OpenAI's bound).
MAX_CONVERSATION_ITEMS = 20


class CreateConversation(Struct, kw_only=True):
    """``POST /v1/conversations``: items are input items, as in a response's ``input``."""

    items: Annotated[list[dict[str, Any]], Meta(max_length=MAX_CONVERSATION_ITEMS)] | None = None
    metadata: Metadata | None = None
    safety_identifier: FreeString | None = None


class UpdateConversation(Struct, kw_only=True):
    metadata: Metadata


class CreateConversationItems(Struct, kw_only=True):
    items: Annotated[list[dict[str, Any]], Meta(max_length=MAX_CONVERSATION_ITEMS)]


class Conversation(Struct, kw_only=True):
    id: str
    object: Literal["conversation"] = "conversation"
    created_at: int
    metadata: dict[str, str] = {}


class DeletedConversation(Struct, kw_only=True):
    id: str
    object: Literal["conversation.deleted"] = "conversation.deleted"
    deleted: bool = True
