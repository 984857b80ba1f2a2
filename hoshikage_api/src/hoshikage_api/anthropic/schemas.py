"""Anthropic Messages API wire types, as msgspec Structs.

Request bodies are decoded strictly (see :mod:`hoshikage_api.body`): a wrong type anywhere is
a 400 naming its path. Unknown fields are ignored, so clients that send newer Anthropic
fields (``cache_control`` on any block, ``service_tier``, ``container``...) keep working;
docs/api-spec.md lists which are honoured and which are deliberately ignored. Image blocks
go to the model (see :mod:`..kernel.media`), and document blocks' text
(:mod:`..kernel.documents`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from ..kernel.wire import KeepAlive, ModelName, Speculative

# ---- request content blocks ---------------------------------------------------------------


class TextBlock(Struct, tag_field="type", tag="text", kw_only=True):
    text: str


class ImageBlock(Struct, tag_field="type", tag="image", kw_only=True):
    """An image: ``source`` ``{"type": "base64", "media_type", "data"}`` (or a ``url``,
    refused unless it is a ``data:`` URL), checked by :mod:`..kernel.media`."""

    source: dict[str, Any]


class DocumentBlock(Struct, tag_field="type", tag="document", kw_only=True):
    """A document: ``source`` ``{"type": "base64", "media_type", "data"}`` (a PDF or a text
    file), ``{"type": "text", "data"}`` or ``{"type": "content", "content"}`` (text blocks),
    its text read by :mod:`..kernel.documents`; ``url`` and ``file`` sources are refused."""

    source: dict[str, Any]
    title: str | None = None
    context: str | None = None


class ToolUseBlock(Struct, tag_field="type", tag="tool_use", kw_only=True):
    id: Annotated[str, Meta(min_length=1)]
    name: Annotated[str, Meta(min_length=1)]
    input: dict[str, Any]


class ToolResultBlock(Struct, tag_field="type", tag="tool_result", kw_only=True):
    tool_use_id: Annotated[str, Meta(min_length=1)]
    content: (
        str
        | list[TextBlock | ImageBlock | DocumentBlock | ToolReferenceBlock | SearchResultBlock]
        | None
    ) = None
    is_error: bool = False


class ToolReferenceBlock(Struct, tag_field="type", tag="tool_reference", kw_only=True):
    """Inside a ``tool_result`` (a client-side tool search's answer): the tool named is
    loaded, so a tool offered with ``defer_loading`` joins the prompt's tools."""

    tool_name: Annotated[str, Meta(min_length=1)]


class SearchResultBlock(Struct, tag_field="type", tag="search_result", kw_only=True):
    """A search result given to the model (its title, source and text blocks), as text."""

    source: str = ""
    title: str = ""
    content: list[TextBlock] = []


class ThinkingBlock(Struct, tag_field="type", tag="thinking", kw_only=True):
    """An earlier turn's thinking, sent back by the client: its ``reasoning_content``, back
    into the prompt where the model's template writes it. With ``display: "omitted"`` the
    text came back empty and the ``signature`` this server gave carries it (:mod:`.signature`)."""

    thinking: str = ""
    signature: str | None = None


class RedactedThinkingBlock(Struct, tag_field="type", tag="redacted_thinking", kw_only=True):
    data: str = ""


ContentBlock = (
    TextBlock
    | ImageBlock
    | DocumentBlock
    | SearchResultBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock
)


class MessageParam(Struct, kw_only=True):
    """A turn. ``system`` turns (``anthropic``'s ``SystemMessageParam``, which Claude Code
    sends between the others) are rendered where they stand; their content is text."""

    role: Literal["user", "assistant", "system"]
    content: str | Annotated[list[ContentBlock], Meta(max_length=100_000)]


# ---- tools --------------------------------------------------------------------------------


class ToolParam(Struct, kw_only=True):
    """A client tool. Anthropic's server tools (``web_search_...``, ``bash_...``,
    ``text_editor_...``, ``computer_...``) carry another ``type`` and are refused by name."""

    name: Annotated[str, Meta(min_length=1, max_length=256)]
    input_schema: dict[str, Any] | None = None
    description: str | None = None
    type: str | None = None
    #: Left out of the prompt until a ``tool_reference`` in a ``tool_result`` names it.
    defer_loading: bool = False
    #: Its calls follow ``input_schema`` by grammar from the call marker on.
    strict: bool = False


class ToolChoiceAuto(Struct, tag_field="type", tag="auto", kw_only=True):
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(Struct, tag_field="type", tag="any", kw_only=True):
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(Struct, tag_field="type", tag="tool", kw_only=True):
    name: Annotated[str, Meta(min_length=1)]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(Struct, tag_field="type", tag="none", kw_only=True):
    pass


ToolChoice = ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone


# ---- structured output --------------------------------------------------------------------


class JsonOutputFormat(Struct, tag_field="type", tag="json_schema", kw_only=True):
    schema: dict[str, Any]


class OutputConfig(Struct, kw_only=True):
    """``format`` constrains the answer to JSON valid against its schema (by grammar, as
    ``response_format`` on chat); ``effort`` is the reasoning effort of templates that take
    one (gpt-oss's ``reasoning_effort``: ``xhigh`` and ``max`` as ``high``)."""

    format: JsonOutputFormat | None = None
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None


class ContextManagement(Struct, kw_only=True):
    """``context_management``: the edits applied to the conversation before it becomes the
    prompt (:mod:`.context`), each checked there."""

    edits: Annotated[list[dict[str, Any]], Meta(max_length=16)] = []


# ---- requests -----------------------------------------------------------------------------


class Conversation(Struct, kw_only=True):
    """What decides the prompt: shared by ``/v1/messages`` and ``/v1/messages/count_tokens``."""

    model: ModelName
    messages: Annotated[list[MessageParam], Meta(min_length=1, max_length=100_000)]
    system: str | list[TextBlock] | None = None
    tools: Annotated[list[ToolParam], Meta(max_length=128)] | None = None
    tool_choice: ToolChoice | None = None
    #: ``{"type": "enabled", "budget_tokens": n}`` or ``{"type": "disabled"}`` (the
    #: template's own switch; disabled never shows thinking). ``adaptive`` is as enabled;
    #: ``display: "omitted"`` sends thinking blocks without their text (in the signature).
    thinking: dict[str, Any] | None = None
    context_management: ContextManagement | None = None
    output_config: OutputConfig | None = None


class CountTokensRequest(Conversation, kw_only=True):
    """``POST /v1/messages/count_tokens``."""


class MessagesRequest(Conversation, kw_only=True):
    """``POST /v1/messages``."""

    #: 0: the prompt is read into the prompt cache and nothing is answered, as Anthropic's.
    max_tokens: Annotated[int, Meta(ge=0, le=1_000_000)]
    stop_sequences: (
        Annotated[list[Annotated[str, Meta(min_length=1)]], Meta(max_length=64)] | None
    ) = None
    stream: bool = False
    temperature: Annotated[float, Meta(ge=0, le=1)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    top_k: Annotated[int, Meta(ge=0, le=1_000_000)] | None = None
    #: Accepted and ignored (``user_id``).
    metadata: dict[str, Any] | None = None
    #: The MCP connector (beta): refused when not empty, naming it; this server connects to
    #: no MCP server (a client such as Claude Code runs its MCP servers itself).
    mcp_servers: list[dict[str, Any]] | None = None
    #: Hoshikage extension, as on the OpenAI routes: how long the model stays loaded after.
    keep_alive: KeepAlive | None = None
    speculative: Speculative | None = None
    #: Hoshikage extension (llama-server's): a GBNF grammar the raw output must follow.
    grammar: str | None = None


# ---- responses ----------------------------------------------------------------------------


class TextContent(Struct, tag_field="type", tag="text", kw_only=True):
    text: str


class ThinkingContent(Struct, tag_field="type", tag="thinking", kw_only=True):
    """The model's reasoning. Local models sign nothing: ``signature`` is empty."""

    thinking: str
    signature: str = ""


class ToolUseContent(Struct, tag_field="type", tag="tool_use", kw_only=True):
    id: str
    name: str
    input: dict[str, Any]


StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class MessageUsage(Struct, kw_only=True):
    """``input_tokens`` are the prompt's tokens read this time; ``cache_read_input_tokens``
    those found in the model's prompt cache (a prefix shared with an earlier request), not
    read again. Every prompt is cached as it is read, at no cost, so
    ``cache_creation_input_tokens`` is 0."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class Message(Struct, kw_only=True):
    """The non-streamed answer. With ``stream: true`` the same content arrives as
    server-sent events: ``message_start``, content block events, ``message_delta`` and
    ``message_stop``."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[ThinkingContent | TextContent | ToolUseContent]
    stop_reason: StopReason | None
    stop_sequence: str | None
    usage: MessageUsage


class TokenCount(Struct, kw_only=True):
    input_tokens: int


class AnthropicErrorDetail(Struct, kw_only=True):
    type: str
    message: str


class AnthropicErrorBody(Struct, kw_only=True):
    type: Literal["error"] = "error"
    error: AnthropicErrorDetail
