"""Request and response types, as msgspec Structs.

Request bodies are decoded strictly against these types (see :mod:`hoshikage_api.kernel.body`), so a
wrong type anywhere is a 400 naming its path, and Litestar's OpenAPI schema is generated from
the same types. Unknown fields are ignored, as OpenAI-compatible servers usually do, so
clients that send newer OpenAI fields keep working.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType, field

from ..kernel.wire import KeepAlive, ModelName, Speculative

# ---- shared field types -------------------------------------------------------------------

Temperature = Annotated[float, Meta(ge=0, le=2, description="0 is greedy; higher is more random")]
TopP = Annotated[float, Meta(ge=0, le=1)]
Penalty = Annotated[float, Meta(ge=-2, le=2)]
MaxTokens = Annotated[int, Meta(ge=1, le=1_000_000)]
Seed = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
ChoiceCount = Annotated[
    int, Meta(ge=1, le=128, description="choices, decoded together from one reading of the prompt")
]
Stop = str | Annotated[list[str], Meta(max_length=16)]


class StreamOptions(Struct, kw_only=True):
    include_usage: bool = False


class PromptTokensDetails(Struct, kw_only=True):
    #: Prompt tokens found in the model's KV cache (a slot's cached prefix), not read again.
    cached_tokens: int = 0


class CompletionTokensDetails(Struct, kw_only=True):
    #: Of ``completion_tokens``, those the model spent reasoning.
    reasoning_tokens: int = 0


class Usage(Struct, kw_only=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | UnsetType = UNSET
    #: Present when the model reasons (llama-server's and OpenAI's field).
    completion_tokens_details: CompletionTokensDetails | UnsetType = UNSET


class SamplingFields(Struct, kw_only=True):
    """Fields shared by chat and completions (OpenAI's, then llama.cpp-style extras)."""

    model: ModelName
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    n: ChoiceCount = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Stop | None = None
    seed: Seed | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: (
        Annotated[dict[str, Annotated[float, Meta(ge=-100, le=100)]], Meta(max_length=1024)] | None
    ) = None
    user: str | None = None
    # Extensions (as in llama.cpp's server and Ollama).
    top_k: Annotated[int, Meta(ge=0, le=1_000_000)] | None = None
    min_p: TopP | None = None
    repeat_penalty: Annotated[float, Meta(ge=0, le=10)] | None = None
    keep_alive: KeepAlive | None = None
    speculative: Speculative | None = None
    #: Hoshikage extension (llama-server's): a GBNF grammar the raw output must follow.
    grammar: str | None = None


class Timings(Struct, kw_only=True):
    """Hoshikage extension, as llama-server's ``timings``: the speculative decoding of the
    answer, summed over its choices. Present when speculation was on (0s when nothing was
    drafted), absent when it was off."""

    #: Tokens drafted, and how many of them the model confirmed.
    draft_n: int
    draft_n_accepted: int


# ---- chat ---------------------------------------------------------------------------------


class TextPart(Struct, tag_field="type", tag="text"):
    text: str


class ImageUrlPart(Struct, tag_field="type", tag="image_url"):
    """An image: ``image_url.url`` a base64 ``data:`` URL (see :mod:`..kernel.media`)."""

    image_url: dict[str, Any]


class InputAudioPart(Struct, tag_field="type", tag="input_audio"):
    """Audio: ``input_audio`` ``{"data": base64, "format": "wav" | "mp3"}``."""

    input_audio: dict[str, Any]


class FilePart(Struct, tag_field="type", tag="file"):
    """A document: ``file`` ``{"file_data": "data:application/pdf;base64,...",
    "filename"}`` (a PDF or a text file, read by :mod:`..kernel.documents`)."""

    file: dict[str, Any]


ContentParts = list[TextPart | ImageUrlPart | InputAudioPart | FilePart]


class FunctionCall(Struct, kw_only=True):
    name: str
    arguments: str


class ToolCall(Struct, kw_only=True):
    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class SystemMessage(Struct, tag_field="role", tag="system", kw_only=True):
    content: str | list[TextPart]
    name: str | None = None


class DeveloperMessage(Struct, tag_field="role", tag="developer", kw_only=True):
    content: str | list[TextPart]
    name: str | None = None


class UserMessage(Struct, tag_field="role", tag="user", kw_only=True):
    content: str | ContentParts
    name: str | None = None


class AssistantMessage(Struct, tag_field="role", tag="assistant", kw_only=True):
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCall] | None = None
    name: str | None = None
    #: The reasoning of an earlier answer (llama-server's and DeepSeek's field): it goes back
    #: into the prompt where the model's template writes reasoning of earlier turns.
    reasoning_content: str | None = None
    #: The same under vLLM's and OpenRouter's newer name (Qwen Code sends both); used when
    #: ``reasoning_content`` is absent.
    reasoning: str | None = None


class ToolMessage(Struct, tag_field="role", tag="tool", kw_only=True):
    content: str | list[TextPart]
    tool_call_id: str


Message = SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage


class FunctionDefinition(Struct, kw_only=True):
    name: Annotated[str, Meta(min_length=1, max_length=256)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(Struct, kw_only=True):
    function: FunctionDefinition
    type: Literal["function"] = "function"


class NamedFunction(Struct):
    name: str


class NamedToolChoice(Struct, kw_only=True):
    function: NamedFunction
    type: Literal["function"] = "function"


class TextFormat(Struct, tag_field="type", tag="text"):
    pass


class JsonObjectFormat(Struct, tag_field="type", tag="json_object"):
    pass


class JsonSchemaSpec(Struct, kw_only=True):
    schema: dict[str, Any]
    name: str | None = None
    description: str | None = None
    strict: bool | None = None


class JsonSchemaFormat(Struct, tag_field="type", tag="json_schema"):
    json_schema: JsonSchemaSpec


ResponseFormatField = TextFormat | JsonObjectFormat | JsonSchemaFormat


class ChatCompletionRequest(SamplingFields, kw_only=True):
    """``POST /v1/chat/completions``."""

    messages: Annotated[list[Message], Meta(min_length=1, max_length=100_000)]
    max_completion_tokens: MaxTokens | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    response_format: ResponseFormatField | None = None
    tools: Annotated[list[Tool], Meta(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    #: Extra chat-template variables (llama-server's and vLLM's), e.g. ``{"enable_thinking":
    #: false}``; they go over the model's own ``chat_template_kwargs``.
    chat_template_kwargs: dict[str, Any] | None = None
    #: ``"none"`` turns thinking off (the template's own switch); the levels go to templates
    #: that take one (gpt-oss's ``reasoning_effort``).
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    #: Hoshikage extension: a chat over the context loses its oldest turns (as Ollama's chat
    #: does) instead of being a 400. The web page and ``hoshikage chat`` send it.
    truncate: bool = False


class ChatMessage(Struct, kw_only=True):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    #: The model's reasoning, apart from ``content`` (llama-server's and DeepSeek's field).
    reasoning_content: str | UnsetType = UNSET
    #: Present only when the model called tools.
    tool_calls: list[ToolCall] | UnsetType = UNSET


class TopLogprob(Struct, kw_only=True):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(Struct, kw_only=True):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(Struct, kw_only=True):
    content: list[TokenLogprob] | None


class ChatChoice(Struct, kw_only=True):
    index: int
    message: ChatMessage
    logprobs: ChoiceLogprobs | None
    finish_reason: Literal["stop", "length", "tool_calls"]


class ChatCompletion(Struct, kw_only=True):
    """The non-streamed answer. With ``stream: true`` the same content arrives as
    ``chat.completion.chunk`` server-sent events, ending with ``data: [DONE]``."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    timings: Timings | UnsetType = UNSET


class FunctionDelta(Struct, kw_only=True):
    """A piece of a call's function: its name on the call's first delta only."""

    name: str | UnsetType = UNSET
    arguments: str


class ToolCallDelta(Struct, kw_only=True):
    """A piece of a streamed call, as OpenAI sends them: the first with ``id``, ``type`` and
    the name (``arguments`` empty), then ``index`` and argument text only."""

    index: int
    id: str | UnsetType = UNSET
    type: Literal["function"] | UnsetType = UNSET
    function: FunctionDelta


class Delta(Struct, kw_only=True, omit_defaults=True):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(Struct, kw_only=True):
    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length", "tool_calls"] | None = None


class ChatCompletionChunk(Struct, kw_only=True):
    """One server-sent event of a streamed chat completion."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    #: Present (null until the last chunk) only with ``stream_options.include_usage``.
    usage: Usage | None | UnsetType = UNSET
    #: On a choice's finishing chunk, when speculation was on for it.
    timings: Timings | UnsetType = UNSET


# ---- completions --------------------------------------------------------------------------


class CompletionRequest(SamplingFields, kw_only=True):
    """``POST /v1/completions``. A prompt is text or token ids (one list, or a list of lists)."""

    #: Text, a list of token ids, or a list of up to 128 prompts (texts or lists of token
    #: ids; one set of ``n`` choices each). The count is checked by the translator, as one
    #: list holds the ids of a single prompt or the prompts.
    prompt: str | list[str | int | list[int]]
    logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    echo: bool = False
    suffix: str | None = None
    best_of: Annotated[int, Meta(ge=1, le=128)] | None = None


class CompletionLogprobs(Struct, kw_only=True):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(Struct, kw_only=True):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: Literal["stop", "length"]


class Completion(Struct, kw_only=True):
    """The non-streamed answer. With ``stream: true`` the same content arrives as
    ``text_completion`` server-sent events, ending with ``data: [DONE]``."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    timings: Timings | UnsetType = UNSET


class CompletionChunkChoice(Struct, kw_only=True):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class CompletionChunk(Struct, kw_only=True):
    """One server-sent event of a streamed completion."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChunkChoice]
    usage: Usage | None | UnsetType = UNSET
    timings: Timings | UnsetType = UNSET


# ---- embeddings ---------------------------------------------------------------------------


class EmbeddingRequest(Struct, kw_only=True):
    """``POST /v1/embeddings``. Token-id inputs are not supported."""

    model: ModelName
    input: str | Annotated[list[str | int | list[int]], Meta(max_length=2048)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Meta(ge=1)] | None = None
    user: str | None = None
    keep_alive: KeepAlive | None = None


class Embedding(Struct, kw_only=True):
    index: int
    #: A list of floats, or with ``encoding_format: base64`` the little-endian float32 bytes.
    embedding: list[float] | str
    object: Literal["embedding"] = "embedding"


class EmbeddingUsage(Struct, kw_only=True):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(Struct, kw_only=True):
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
    object: Literal["list"] = "list"


# ---- models -------------------------------------------------------------------------------


class ModelCard(Struct, kw_only=True):
    """OpenAI's model object and Anthropic's ``ModelInfo`` in one (both SDKs read
    ``GET /v1/models``; each takes its own fields and ignores the other's)."""

    id: str
    created: int
    owned_by: str = "hoshikage"
    object: Literal["model"] = "model"
    #: Hoshikage extension: unloaded, loading, loaded, busy or unloading.
    state: str
    #: Hoshikage extension: the model this alias names (null for a model's own name).
    alias_of: str | None = None
    #: The context window a request gets, in tokens (the loaded model's, else its ``n_ctx``),
    #: as OpenRouter and LM Studio name it.
    context_length: int | None = None
    # ---- Anthropic's ModelInfo ----
    type: Literal["model"] = "model"
    display_name: str = ""
    #: RFC 3339: the GGUF file's modification time, as ``created``.
    created_at: str = ""
    lifecycle: Literal["active"] = "active"
    #: The context window (``context_length``): prompt and answer together must fit it.
    max_input_tokens: int | None = None
    #: The most tokens an answer may have: the context window too.
    max_tokens: int | None = None
    #: Hoshikage extension: what the model takes: "text", and "vision" (images) or "audio"
    #: where it has a multimodal projector (``mmproj``).
    input: list[str] = field(default_factory=lambda: ["text"])


class ModelList(Struct, kw_only=True):
    """OpenAI's list, with Anthropic's paging fields (there is one page)."""

    data: list[ModelCard]
    object: Literal["list"] = "list"
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None
