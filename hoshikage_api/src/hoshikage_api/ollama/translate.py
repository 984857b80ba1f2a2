"""From an Ollama request to the core's :class:`GenerationRequest`, and from the core's tool
calls back to Ollama's shape.

* ``/api/chat`` messages become the core's chat messages: ``tool_calls`` with object
  ``arguments`` become OpenAI-shaped calls (JSON-string arguments), a ``tool`` message's
  ``tool_name`` its ``name``; ``thinking`` is its ``reasoning_content``; ``images``
  (base64) go before the message's text, as Ollama puts them.
* ``/api/generate`` becomes a chat of one user message (after ``system``), rendered by the
  model's chat template, or with ``raw: true`` a plain completion of the prompt as it is.
* ``options`` map onto sampling (:data:`SAMPLING`); Ollama's load-time options
  (:data:`LOAD_TIME`) and the sampling options this backend has no sampler for
  (:data:`NOT_APPLIED`) are accepted, logged and ignored: the model's config decides them.
  Unknown keys are ignored too, as Ollama does. Hoshikage's ``speculative`` extension is
  read from ``options`` as well as from the top level (:data:`EXTENSIONS`).
* ``keep_alive`` is Ollama's: seconds or a Go duration (``"10m"``, ``"1h30m"``); any
  negative value means never unload.
"""

from __future__ import annotations

import json
import logging
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import msgspec
from hoshikage_core.protocol import GenerationRequest, ResponseFormat
from hoshikage_core.units import parse_duration
from msgspec import Meta, Struct

from ..kernel.errors import invalid
from ..kernel.job import Job, arguments_object, speculative
from ..kernel.media import Collector
from . import schemas as s

log = logging.getLogger("hoshikage.api")

#: ``num_predict`` of -1 (no limit) or -2 (fill the context): as many tokens as the context
#: leaves, which the backend bounds anyway.
UNLIMITED = 2**31 - 1

_Prob = Annotated[float, Meta(ge=0, le=1)]
_Penalty = Annotated[float, Meta(ge=-2, le=2)]


class SamplingOptions(Struct, kw_only=True, forbid_unknown_fields=False):
    """The ``options`` this server applies, with their ranges."""

    num_predict: Annotated[int, Meta(ge=-2, le=UNLIMITED)] | None = None
    temperature: Annotated[float, Meta(ge=0, le=100)] | None = None
    top_p: _Prob | None = None
    top_k: Annotated[int, Meta(ge=0, le=1_000_000)] | None = None
    min_p: _Prob | None = None
    seed: Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)] | None = None
    stop: str | Annotated[list[str], Meta(max_length=16)] | None = None
    repeat_penalty: Annotated[float, Meta(ge=0, le=10)] | None = None
    presence_penalty: _Penalty | None = None
    frequency_penalty: _Penalty | None = None


#: Option keys applied to sampling.
SAMPLING = frozenset(SamplingOptions.__struct_fields__)
#: Ollama's load-time options: how the model is loaded is the config's business here.
LOAD_TIME = frozenset(
    {
        "numa",
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "low_vram",
        "f16_kv",
        "logits_all",
        "vocab_only",
        "use_mmap",
        "use_mlock",
        "num_thread",
        "embedding_only",
        "rope_frequency_base",
        "rope_frequency_scale",
    }
)
#: Ollama's sampling options with no sampler here.
NOT_APPLIED = frozenset(
    {
        "num_keep",
        "typical_p",
        "repeat_last_n",
        "tfs_z",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
        "penalize_newline",
    }
)
#: Hoshikage's own options, read apart (``speculative``: the ollama client sends no
#: top-level field it does not know, but passes ``options`` as they are).
EXTENSIONS = frozenset({"speculative"})
#: Known keys already logged once at INFO (later requests log them at DEBUG). Only keys of
#: the two fixed sets above enter it, so clients cannot grow it.
_logged: set[str] = set()


def _log_ignored(keys: Sequence[str], why: str) -> None:
    if not keys:
        return
    new = [k for k in keys if k not in _logged]
    _logged.update(keys)
    level = logging.INFO if new else logging.DEBUG
    log.log(level, "ollama: options %s ignored (%s)", ", ".join(sorted(keys)), why)


def _log_unknown(keys: Sequence[str]) -> None:
    if keys:
        shown = ", ".join(repr(k[:40]) for k in sorted(keys)[:10])
        log.debug("ollama: %d unknown option keys ignored: %s", len(keys), shown)


_INTEGERS = frozenset({"num_predict", "top_k", "seed"})


def _integral(key: str, value: Any) -> Any:
    """Whole floats (``10.0``) where an integer is due, as Ollama accepts them."""
    if key in _INTEGERS and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def options(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """The sampling fields of :class:`GenerationRequest` from Ollama's ``options``."""
    if not raw:
        return {}
    known = {k: _integral(k, v) for k, v in raw.items() if k in SAMPLING and v is not None}
    try:
        opts = msgspec.convert(known, SamplingOptions, strict=True)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `$")
        param = "options" + ("." + path.rstrip("`").lstrip(".") if path else "")
        raise invalid(f"Invalid '{param}': {message}.", param) from None
    _log_ignored(
        [k for k in raw if k in LOAD_TIME], "load-time options are set in the model's config"
    )
    _log_ignored([k for k in raw if k in NOT_APPLIED], "no such sampler here")
    _log_unknown([k for k in raw if k not in SAMPLING | LOAD_TIME | NOT_APPLIED | EXTENSIONS])
    out: dict[str, Any] = {
        "temperature": opts.temperature,
        "top_p": opts.top_p,
        "top_k": opts.top_k,
        "min_p": opts.min_p,
        "repeat_penalty": opts.repeat_penalty,
        "presence_penalty": opts.presence_penalty,
        "frequency_penalty": opts.frequency_penalty,
        # Ollama's seed -1 (its default) means a random seed.
        "seed": opts.seed if opts.seed is not None and opts.seed >= 0 else None,
        "stop": (opts.stop,) if isinstance(opts.stop, str) else tuple(opts.stop or ()),
    }
    if opts.num_predict is not None:
        out["max_tokens"] = UNLIMITED if opts.num_predict < 0 else opts.num_predict
    if any(not stop for stop in out["stop"]):
        raise invalid("Invalid 'options.stop': stop strings must not be empty.", "options.stop")
    return out


# ---- keep_alive ---------------------------------------------------------------------------

#: Go's longest duration, in seconds: Ollama's "forever".
FOREVER = (2**63 - 1) / 1e9
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def _go_duration(text: str) -> float | None:
    """Seconds of a Go duration (``"1h30m"``, ``"-5m"``, ``"300ms"``), or None."""
    body = text.strip()
    sign = -1.0 if body.startswith("-") else 1.0
    body = body.lstrip("+-")
    if not body or _GO_DURATION.sub("", body):
        return None
    return sign * sum(float(n) * _GO_UNITS[unit] for n, unit in _GO_DURATION.findall(body))


def keep_alive(value: float | str | None) -> float | None:
    """Seconds, -1 for never, None for the model's default. Any negative value is never, as
    in Ollama; strings are Go durations, bare numbers of seconds, or ``"never"``."""
    if value is None:
        return None
    if isinstance(value, str):
        seconds = _go_duration(value)
        if seconds is None:
            try:
                seconds = parse_duration(value, allow_never=True)
            except ValueError:
                raise invalid(
                    f"Invalid 'keep_alive': {value!r} is not a duration: use seconds, or e.g. "
                    '"10m", "1h30m", 0 (unload now) or -1 (never).',
                    "keep_alive",
                ) from None
    else:
        seconds = float(value)
    if not math.isfinite(seconds):
        raise invalid("Invalid 'keep_alive': must be a finite number of seconds.", "keep_alive")
    # Negative, or longer than Go's longest duration (292 years): never.
    return -1.0 if seconds < 0 or seconds > FOREVER else seconds


# ---- shared checks ------------------------------------------------------------------------


def response_format(fmt: str | dict[str, Any] | None) -> ResponseFormat | None:
    """``"json"``: any JSON; an object: JSON valid against that schema (by grammar, keywords
    the grammar cannot enforce are ignored, as in Ollama); ``""``: plain text."""
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return ResponseFormat(type="json_object")
    if isinstance(fmt, dict):
        return ResponseFormat(type="json_schema", schema=fmt, strict=False)
    raise invalid(
        f"Invalid 'format': expected \"json\" or a JSON schema object, got {fmt!r}.", "format"
    )


def _thinking(think: bool | str | None) -> bool | str | None:
    """Ollama's ``think`` as the core's ``reasoning``."""
    if isinstance(think, str) and think not in ("high", "medium", "low"):
        raise invalid(
            f'Invalid \'think\': expected true, false, "high", "medium" or "low", got {think!r}.',
            "think",
        )
    return think


def _images(images: list | None, where: str, collector: Collector | None) -> str:
    """The markers of a message's (or a generate's) base64 ``images``, which go before its
    text as in Ollama; the images themselves go to ``collector``."""
    if not images:
        return ""
    if collector is None:
        raise invalid(f"Invalid '{where}': images are not taken here.", where)
    markers = []
    for k, image in enumerate(images):
        field = f"{where}[{k}]"
        if not isinstance(image, str):
            raise invalid(f"Invalid '{field}': an image must be a base64 string.", field)
        markers.append(collector.add_base64(image, field))
    return "".join(markers)


def _logprobs(data: s.GenerationFields) -> dict[str, Any]:
    top = data.top_logprobs or 0
    if top and not data.logprobs:
        raise invalid("'top_logprobs' requires 'logprobs' to be true.", "top_logprobs")
    return {"logprobs": bool(data.logprobs), "top_logprobs": top}


def _common(data: s.GenerationFields, model: str) -> dict[str, Any]:
    return {
        "reasoning": _thinking(data.think),
        **options(data.options),
        **_logprobs(data),
        "response_format": response_format(data.format),
        "grammar": data.grammar or None,
        # Top level (as ``keep_alive``) or in ``options``: false in either turns it off.
        "speculative": speculative(data.speculative)
        and speculative((data.options or {}).get("speculative"), "options.speculative"),
    }


def _job(endpoint: str, label: str, data: s.GenerationFields, request: GenerationRequest) -> Job:
    return Job(
        endpoint=endpoint,
        model=label,
        keep_alive=keep_alive(data.keep_alive),
        requests=(request,),
        stream=data.stream is not False,
    )


# ---- chat ---------------------------------------------------------------------------------

ROLES = ("system", "user", "assistant", "tool")


def _arguments(arguments: dict[str, Any] | str | None, where: str) -> str:
    if arguments is None:
        return "{}"
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            raise invalid(
                f"Invalid '{where}': arguments must be an object (or JSON text of one).", where
            ) from None
    return json.dumps(arguments, ensure_ascii=False)


def _message(message: s.ChatMessage, i: int, images: Collector | None = None) -> dict[str, Any]:
    where = f"messages[{i}]"
    if message.role not in ROLES:
        raise invalid(
            f"Invalid '{where}.role': {message.role!r} is not one of system, user, assistant, tool.",
            f"{where}.role",
        )
    markers = _images(message.images, f"{where}.images", images)
    out: dict[str, Any] = {"role": message.role, "content": markers + (message.content or "")}
    if message.tool_calls:
        if message.role != "assistant":
            raise invalid(
                f"Invalid '{where}.tool_calls': only assistant messages make tool calls.",
                f"{where}.tool_calls",
            )
        out["tool_calls"] = [
            {
                "id": call.id or f"call_{i}_{k}",
                "type": "function",
                "function": {
                    "name": call.function.name,
                    "arguments": _arguments(
                        call.function.arguments, f"{where}.tool_calls[{k}].function.arguments"
                    ),
                },
            }
            for k, call in enumerate(message.tool_calls)
        ]
    if message.role == "assistant" and message.thinking:
        out["reasoning_content"] = message.thinking
    if message.role == "tool":
        if message.tool_name:
            out["name"] = message.tool_name
        if message.tool_call_id:
            out["tool_call_id"] = message.tool_call_id
    return out


def _tools(tools: list[s.Tool] | None) -> tuple[dict[str, Any], ...] | None:
    if not tools:
        return None
    out = []
    for i, tool in enumerate(tools):
        if tool.type != "function":
            raise invalid(
                f"Invalid 'tools[{i}].type': only \"function\" tools are supported, not {tool.type!r}.",
                f"tools[{i}].type",
            )
        out.append({"type": "function", "function": msgspec.to_builtins(tool.function)})
    return tuple(out)


def chat_job(data: s.ChatRequest, label: str, images: Collector | None = None) -> Job:
    """The job of a chat with at least one message (see :func:`is_load` for none); its
    images go to ``images`` (see :func:`~..kernel.media.attach`)."""
    common = _common(data, data.model)
    request = GenerationRequest(
        messages=tuple(_message(m, i, images) for i, m in enumerate(data.messages or ())),
        tools=_tools(data.tools),
        # As Ollama: a chat over the context loses its oldest turns, unless truncate is false.
        truncate=data.truncate is not False,
        **common,
    )
    return _job("ollama_chat", label, data, request)


# ---- generate -----------------------------------------------------------------------------


def generate_job(data: s.GenerateRequest, label: str, images: Collector | None = None) -> Job:
    """The job of a generate with a prompt: a chat of one user turn, or ``raw`` the prompt
    as it is. ``system`` is ignored with ``raw``, as in Ollama."""
    if data.template:
        raise invalid(
            "'template' is not supported: Ollama's Go templates do not apply here; the model's own "
            "chat template is used. Send a fully formatted prompt with raw: true instead.",
            "template",
        )
    # Ollama's conversational memory: the ids an earlier answer returned as ``context`` are
    # read first, as they are, then this prompt (templated unless ``raw``).
    memory = {"prefix_token_ids": tuple(data.context)} if data.context else {}
    markers = _images(data.images, "images", images)
    if markers and data.suffix:
        raise invalid("Invalid 'images': fill in the middle (suffix) takes no images.", "images")
    if memory and (markers or data.suffix):
        raise invalid(
            "Invalid 'context': a request that continues an earlier one takes no images or suffix.",
            "context",
        )
    common = _common(data, data.model)
    prompt = markers + (data.prompt or "")
    if data.suffix:  # fill in the middle, from the model's FIM tokens (no chat template)
        request = GenerationRequest(prompt=prompt, suffix=data.suffix, **common)
    elif data.raw:
        request = GenerationRequest(prompt=prompt, **memory, **common)
    else:
        messages = [{"role": "system", "content": data.system}] if data.system else []
        messages.append({"role": "user", "content": prompt})
        # The ids of this prompt and its answer come back as ``context`` (not with raw, as
        # in Ollama).
        request = GenerationRequest(
            messages=tuple(messages), return_token_ids=True, **memory, **common
        )
    return _job("ollama_generate", label, data, request)


def check_load(data: s.GenerationFields) -> float | None:
    """The checks a load-or-unload request (no prompt, no messages) still gets; its keep-alive."""
    _common(data, data.model)
    return keep_alive(data.keep_alive)


# ---- output -------------------------------------------------------------------------------


def tool_calls(calls: Sequence[Mapping[str, Any]] | None) -> list[s.ToolCallOut] | None:
    """The backend's OpenAI-shaped tool calls in Ollama's shape (``arguments`` an object)."""
    if not calls:
        return None
    out = []
    for index, call in enumerate(calls):
        function = call.get("function") or {}
        out.append(
            s.ToolCallOut(
                id=str(call.get("id") or f"call_{uuid.uuid4().hex[:24]}"),
                function={
                    "index": index,
                    "name": str(function.get("name", "")),
                    "arguments": arguments_object(function.get("arguments")),
                },
            )
        )
    return out


def done_reason(finish: str | None) -> str:
    """Ollama's ``done_reason``: ``length`` at the token limit, else ``stop`` (a tool call too)."""
    return "length" if finish == "length" else "stop"
