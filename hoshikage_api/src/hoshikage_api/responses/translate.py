"""From a Responses API request to the core's :class:`GenerationRequest`.

The prompt is the context items (a predecessor's, then the new ``input``) as chat messages,
after ``instructions`` as a system message. Items become the messages the backend takes,
the way :mod:`hoshikage_api.translate` maps chat's messages:

* a ``message`` keeps its role (``developer`` becomes ``system``, as on chat); its text
  parts (``input_text``, ``output_text``, ``refusal``) are joined with newlines;
* ``function_call`` items become ``tool_calls`` on an assistant message (the one just before
  them, when there is one, so that a turn's text and calls stay one message);
* a ``function_call_output`` becomes a ``tool`` message with its ``tool_call_id``;
* a ``reasoning`` item's text becomes the ``reasoning_content`` of the assistant message
  that follows it (the template decides whether earlier reasoning stays in the prompt:
  Qwen3's keeps only the last turn's); one with no assistant message after it is dropped;
* images, files, audio and hosted tools are refused.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
from hoshikage_core.protocol import GenerationRequest, ResponseFormat, join_text

from ..kernel.errors import ApiError, invalid
from ..kernel.job import Job, keep_alive, reasoning_of_effort, speculative
from ..kernel.media import Collector
from . import schemas as s
from .sealing import Sealer
from .store import Stored
from .tools import Tools, choose, custom_arguments, offered, tools_of

#: Item types of OpenAI's hosted tools (and others this server never produces), refused by name.
_ITEM_TYPES = {
    "message": s.MessageItem,
    "function_call": s.FunctionCallItem,
    "function_call_output": s.FunctionCallOutputItem,
    "custom_tool_call": s.CustomToolCallItem,
    "custom_tool_call_output": s.CustomToolCallOutputItem,
    "reasoning": s.ReasoningItem,
}
_ID_PREFIX = {
    s.MessageItem: "msg",
    s.FunctionCallItem: "fc",
    s.FunctionCallOutputItem: "fco",
    s.CustomToolCallItem: "ctc",
    s.CustomToolCallOutputItem: "ctco",
    s.ReasoningItem: "rs",
}
LOGPROBS_INCLUDE = "message.output_text.logprobs"
_AT_PATH = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# ---- input items --------------------------------------------------------------------------


def _convert(value: dict[str, Any], type_: type, param: str):
    """``value`` as ``type_``, strictly; a mismatch is a 400 naming its place under ``param``."""
    try:
        return msgspec.convert(value, type_, strict=True)
    except msgspec.ValidationError as exc:
        m = _AT_PATH.match(str(exc))
        path = (m.group("path") or "").replace("[...]", "")
        where = param + path
        raise invalid(f"Invalid '{where}': {m.group('msg')}.", where) from None


def _item(raw: dict[str, Any], i: int, field: str = "input", referenced=None):
    where = f"{field}[{i}]"
    kind = raw.get("type")
    if kind is None and "role" in raw:
        kind = "message"  # OpenAI's "easy" message: type may be left out
        raw = {**raw, "type": "message"}
    if kind is None:
        raise invalid(
            f"Invalid '{where}': an item needs a 'type' (or a 'role', for a message).",
            f"{where}.type",
        )
    if not isinstance(kind, str):
        raise invalid(f"Invalid '{where}.type': expected a string.", f"{where}.type")
    if kind == "item_reference":
        return _referenced(raw, where, referenced)
    if kind not in _ITEM_TYPES:
        raise invalid(
            f"Invalid '{where}.type': items of type {kind!r} are not supported; only message, "
            "function_call, function_call_output, custom_tool_call, custom_tool_call_output and "
            "reasoning are.",
            f"{where}.type",
        )
    item = _convert(raw, _ITEM_TYPES[kind], where)
    _check_parts(item, where)
    return item


def _referenced(raw: dict[str, Any], where: str, referenced):
    """The stored item an ``item_reference`` names (its ``id``), as :class:`References`
    finds it; unknown: OpenAI's 404."""
    item_id = raw.get("id")
    if not isinstance(item_id, str) or not item_id:
        raise invalid(
            f"Invalid '{where}.id': an item_reference needs the 'id' of a stored item.",
            f"{where}.id",
        )
    found = referenced(item_id) if referenced is not None else None
    if found is None:
        raise ApiError(
            404,
            f"Item with id '{item_id}' not found. Items are not persisted when `store` is set "
            "to false. Try again with `store` set to true, or remove this item from your input.",
            param="input",
        )
    return found


class References:
    """What ``item_reference`` inputs name: an item of a stored response (its context or its
    output; ``stored(item_id)`` gives the most recently used entry that holds it) or of a
    conversation (``conversation_item(item_id)``). A client that stores its responses (the
    Vercel AI SDK's OpenAI provider, by default) sends its earlier steps so, by id. Each
    entry is read once a request: the references of one request mostly name the items of
    one response."""

    def __init__(self, stored, conversation_item) -> None:
        self._stored = stored
        self._conversation_item = conversation_item
        self._found: dict[str, Any] = {}

    def __call__(self, item_id: str):
        if item_id in self._found:
            return self._found[item_id]
        entry = self._stored(item_id)
        if entry is not None:
            for item in (*entry.context, *output_as_input(entry.response)):
                if item.id:
                    self._found.setdefault(item.id, item)
            if item_id in self._found:
                return self._found[item_id]
        return self._conversation_item(item_id)


_OUTPUTS = (s.FunctionCallOutputItem, s.CustomToolCallOutputItem)


def _check_parts(item, where: str) -> None:
    """Refuse media parts that cannot be read, and parts in the wrong kind of message."""
    content = getattr(item, "content", None) if not isinstance(item, _OUTPUTS) else item.output
    field = "output" if isinstance(item, _OUTPUTS) else "content"
    if not isinstance(content, list):
        return
    for j, part in enumerate(content):
        param = f"{where}.{field}[{j}]"
        if isinstance(part, s.InputImage):
            if part.image_url is None:
                raise invalid(
                    f"Invalid '{param}.image_url': an input_image needs an image_url (a data:"
                    " URL); file_id is not supported, as no files are stored here.",
                    f"{param}.image_url",
                )
        elif isinstance(part, s.InputAudio):
            if not isinstance(part.input_audio, dict):
                raise invalid(
                    f'Invalid \'{param}.input_audio\': expected {{"data", "format"}}.',
                    f"{param}.input_audio",
                )
        elif isinstance(part, s.InputFile):
            if part.file_data is None:
                raise invalid(
                    f"Invalid '{param}.file_data': an input_file needs its file_data (a data:"
                    " URL, data:application/pdf;base64,...); file_id and file_url are not"
                    " supported, as no files are stored or fetched here.",
                    f"{param}.file_data",
                )


def bad_seal(where: str) -> ApiError:
    """The one answer to an ``encrypted_content`` this server did not issue, whatever is
    wrong with it (see :mod:`.sealing`)."""
    return ApiError(
        400,
        f"Invalid '{where}': the encrypted content could not be verified; it was not issued "
        "by this server (or its key has changed since). Send the reasoning item without it.",
        param=where,
        code="invalid_encrypted_content",
    )


def input_items(data: s.CreateResponse, sealer: Sealer | None = None, referenced=None) -> list:
    """The request's ``input`` as items, each with an ``id``; an ``item_reference`` is the
    item ``referenced`` (:class:`References`) finds. A reasoning item's ``encrypted_content``
    must verify under ``sealer``'s key (it is opened later, into the prompt only)."""
    if isinstance(data.input, str):
        return [
            s.MessageItem(role="user", content=data.input, id=new_id("msg"), status="completed")
        ]
    return parsed_items(data.input, "input", sealer, referenced)


def parsed_items(
    raws: Sequence[dict[str, Any]], field: str, sealer: Sealer | None = None, referenced=None
) -> list:
    """Raw items (a response's ``input``, a conversation's ``items``) as items, each with an
    ``id`` (an ``item_reference``: the item ``referenced`` finds); a mistake is a 400 naming
    its place under ``field``."""
    items = []
    for i, raw in enumerate(raws):
        item = _item(raw, i, field, referenced)
        if isinstance(item, s.ReasoningItem) and item.encrypted_content is not None:
            if sealer is None or sealer.open(item.encrypted_content) is None:
                raise bad_seal(f"{field}[{i}].encrypted_content")
        items.append(
            msgspec.structs.replace(
                item, id=item.id or new_id(_ID_PREFIX[type(item)]), status="completed"
            )
        )
    return items


def output_as_input(response: s.Response) -> list:
    """A response's output items as the input items that continue it."""
    items = []
    for out in response.output:
        if isinstance(out, s.OutputReasoning):
            # The template decides what earlier reasoning it keeps (see :func:`messages`).
            content = [{"type": "reasoning_text", "text": part.text} for part in out.content]
            items.append(s.ReasoningItem(id=out.id, content=content, status=out.status))
        elif isinstance(out, s.CustomToolCall):
            items.append(
                s.CustomToolCallItem(
                    call_id=out.call_id,
                    name=out.name,
                    input=out.input,
                    namespace=out.namespace,
                    id=out.id,
                    status=out.status,
                )
            )
        elif isinstance(out, s.OutputMessage):
            content = [s.OutputText(text=part.text) for part in out.content]
            items.append(
                s.MessageItem(role="assistant", content=content, id=out.id, status=out.status)
            )
        else:
            items.append(
                s.FunctionCallItem(
                    call_id=out.call_id,
                    name=out.name,
                    arguments=out.arguments,
                    namespace=out.namespace,
                    id=out.id,
                    status=out.status,
                )
            )
    return items


def _text(content: str | Sequence, images: Collector | None = None, where: str = "input") -> str:
    """Text parts joined by the core's rule, each ``input_image`` as the media marker (its
    image kept in ``images``), each ``input_file`` as its document's marker."""
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(content):
        if isinstance(part, (s.InputText, s.OutputText)):
            texts.append(part.text)
        elif isinstance(part, s.Refusal):
            texts.append(part.refusal)
        elif isinstance(part, s.InputImage) and images is not None:
            texts.append(images.add_url(part.image_url, f"{where}[{j}].image_url"))
        elif isinstance(part, s.InputAudio) and images is not None:
            audio = part.input_audio or {}
            field = f"{where}[{j}].input_audio.data"
            texts.append(images.add_audio(audio.get("data"), audio.get("format"), field))
        elif isinstance(part, s.InputFile) and images is not None:
            field = f"{where}[{j}].file_data"
            texts.append(images.add_file(part.file_data, field, filename=part.filename))
    return join_text(texts)


def reasoning_text(item: s.ReasoningItem) -> str:
    """A reasoning item's text: its ``reasoning_text`` parts, else its summary."""

    def texts(parts, kind: str) -> list[str]:
        return [
            p["text"]
            for p in parts or ()
            if isinstance(p, dict) and p.get("type") == kind and isinstance(p.get("text"), str)
        ]

    return join_text(texts(item.content, "reasoning_text") or texts(item.summary, "summary_text"))


def messages(
    items: Sequence,
    sealer: Sealer | None = None,
    images: Collector | None = None,
    first_new: int = 0,
    earlier: str = "previous_response_id",
) -> list[dict[str, Any]]:
    """Context items as the core's chat messages (string content, OpenAI chat roles). A
    call of a namespace's tool is named as the model was offered it (``ns.name``); a custom
    tool's call is a call of its function, its ``input`` the one argument. Their images go
    to ``images``; items from ``first_new`` on are this request's ``input`` (the ones before,
    the stored conversation, are named by ``earlier`` in errors)."""
    out: list[dict[str, Any]] = []
    reasoning: list[str] = []  # reasoning items not yet given to an assistant message

    def assistant(message: dict[str, Any]) -> dict[str, Any]:
        if reasoning:
            message["reasoning_content"] = join_text(reasoning)
            reasoning.clear()
        return message

    def call(call_id: str, name: str, arguments: str) -> None:
        entry = {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        if out and out[-1]["role"] == "assistant" and not reasoning:
            out[-1].setdefault("tool_calls", []).append(entry)
        else:
            out.append(assistant({"role": "assistant", "content": "", "tool_calls": [entry]}))

    for k, item in enumerate(items):
        where = f"input[{k - first_new}]" if k >= first_new else f"{earlier} (item {k})"
        if isinstance(item, s.ReasoningItem):
            if item.encrypted_content is not None:
                text = sealer.open(item.encrypted_content) if sealer is not None else None
                if text is None:  # new input was checked: this one was stored, under another key
                    raise bad_seal(earlier)
            else:
                text = reasoning_text(item)
            if text:
                reasoning.append(text)
            continue
        if isinstance(item, s.MessageItem):
            role = "system" if item.role == "developer" else item.role
            message = {"role": role, "content": _text(item.content, images, f"{where}.content")}
            out.append(assistant(message) if role == "assistant" else message)
        elif isinstance(item, s.FunctionCallItem):
            call(item.call_id, offered(item.name, item.namespace), item.arguments)
        elif isinstance(item, s.CustomToolCallItem):
            call(item.call_id, offered(item.name, item.namespace), custom_arguments(item.input))
        elif isinstance(item, _OUTPUTS):
            if images is None:
                output = _text(item.output, images, f"{where}.output")
            else:
                with images.from_tool():  # what a tool read: a note where the model cannot
                    output = _text(item.output, images, f"{where}.output")
            out.append({"role": "tool", "tool_call_id": item.call_id, "content": output})
    return out


# ---- formats ------------------------------------------------------------------------------


def _response_format(text: s.TextConfig | None) -> ResponseFormat | None:
    fmt = text.format if text else None
    if fmt is None or isinstance(fmt, s.FormatText):
        return None
    if isinstance(fmt, s.FormatJsonObject):
        return ResponseFormat(type="json_object")
    return ResponseFormat(
        type="json_schema", schema=fmt.schema, name=fmt.name, strict=bool(fmt.strict)
    )


def _refuse_unsupported(data: s.CreateResponse) -> None:
    if data.background and data.store is False:
        raise invalid(
            "'background' responses are stored (GET them, or stream them again): leave "
            "'store' true.",
            "background",
        )
    if data.prompt is not None:
        raise invalid(
            "Stored prompt templates ('prompt') are not supported; send 'instructions' and 'input'.",
            "prompt",
        )
    if data.context_management:
        raise invalid(
            "'context_management' (server-side compaction) is not supported.", "context_management"
        )
    if data.stream_options is not None and not data.stream:
        raise invalid("'stream_options' is only allowed when 'stream' is true.", "stream_options")


# ---- the job ------------------------------------------------------------------------------


def wants_logprobs(data: s.CreateResponse) -> bool:
    return data.top_logprobs is not None or LOGPROBS_INCLUDE in (data.include or ())


def previous_not_found(response_id: str) -> ApiError:
    return ApiError(
        404,
        f"Previous response with id '{response_id}' not found.",
        param="previous_response_id",
        code="previous_response_not_found",
    )


def conversation_id(data: s.CreateResponse) -> str | None:
    """The id of the request's ``conversation`` (a string, or ``{"id"}``), if any; with
    ``previous_response_id`` too, a 400."""
    conversation = data.conversation
    if conversation is not None and data.previous_response_id is not None:
        raise invalid(
            "'conversation' and 'previous_response_id' cannot be used together: a response "
            "continues one or the other.",
            "conversation",
        )
    return conversation.id if isinstance(conversation, s.ConversationRef) else conversation


def check_unique_ids(earlier: Sequence, new: Sequence, field: str) -> None:
    """Each of ``new`` items must have an id not in ``earlier`` (a conversation's items) nor
    before it in ``new``, as OpenAI requires: a 400 naming the first that does not."""
    seen = {item.id for item in earlier}
    for i, item in enumerate(new):
        if item.id in seen:
            raise invalid(f"Duplicate item found with id '{item.id}'.", f"{field}[{i}].id")
        seen.add(item.id)


def conversation_not_found(conversation: str, param: str | None = "conversation") -> ApiError:
    return ApiError(
        404,
        f"Conversation with id '{conversation}' not found.",
        param=param,
        code="conversation_not_found",
    )


def response_job(
    data: s.CreateResponse,
    previous: Stored | tuple | None,
    sealer: Sealer | None = None,
    images: Collector | None = None,
    referenced: References | None = None,
) -> tuple[Job, tuple, Tools]:
    """The job for ``data``, continuing ``previous`` (the stored predecessor, or a
    conversation's items, if any), the context items it is generated from, and its tools
    (to name the calls); the images of the context go to ``images``, and ``referenced``
    finds the items its ``item_reference`` inputs name."""
    _refuse_unsupported(data)
    new = input_items(data, sealer, referenced)
    if not new and not previous:
        raise invalid("'input' must not be empty.", "input")
    if isinstance(previous, Stored):
        context = (*previous.context, *output_as_input(previous.response))
    else:
        context = tuple(previous or ())
    if data.conversation is not None:  # the new items are added to it: their ids are its
        check_unique_ids(context, new, "input")
    first_new = len(context)
    context = (*context, *new)
    earlier = "conversation" if data.conversation is not None else "previous_response_id"
    chat = messages(context, sealer, images, first_new, earlier)
    if data.instructions:
        chat.insert(0, {"role": "system", "content": data.instructions})
    catalogue = tools_of(data)
    tools, tool_choice = choose(data, catalogue)
    logprobs = wants_logprobs(data)
    request = GenerationRequest(
        messages=tuple(chat),
        max_tokens=data.max_output_tokens,
        temperature=data.temperature,
        top_p=data.top_p,
        top_k=data.top_k,
        min_p=data.min_p,
        repeat_penalty=data.repeat_penalty,
        seed=data.seed,
        logprobs=logprobs,
        top_logprobs=data.top_logprobs or 0,
        response_format=_response_format(data.text),
        tools=tuple(tools) if tools else None,
        tool_choice=tool_choice if tools else None,
        grammar=data.grammar or None,
        speculative=speculative(data.speculative),
        reasoning=reasoning_of_effort(data.reasoning.effort if data.reasoning else None),
        cache_key=data.prompt_cache_key,
        truncate=data.truncation == "auto",
    )
    job = Job(
        endpoint="responses",
        model=data.model,
        keep_alive=keep_alive(data.keep_alive),
        requests=(request,),
        stream=data.stream,
    )
    return job, context, catalogue
