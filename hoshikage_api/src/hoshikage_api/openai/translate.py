"""From a decoded API request to the core's :class:`GenerationRequest`: the checks a type
cannot express (``stream_options`` without ``stream``, ...) and the
mapping of each OpenAI field onto the core's names."""

from __future__ import annotations

from typing import Any

import msgspec
from hoshikage_core.protocol import GenerationRequest, ResponseFormat, join_text

from ..kernel.errors import invalid
from ..kernel.job import Job, keep_alive, reasoning_of_effort, speculative
from ..kernel.media import Collector
from . import schemas as s


def _sampling(data: s.SamplingFields) -> dict[str, Any]:
    if data.stream_options is not None and not data.stream:
        raise invalid("'stream_options' is only allowed when 'stream' is true.", "stream_options")
    stop = data.stop
    return {
        "max_tokens": data.max_tokens,
        "temperature": data.temperature,
        "top_p": data.top_p,
        "top_k": data.top_k,
        "min_p": data.min_p,
        "repeat_penalty": data.repeat_penalty,
        "presence_penalty": data.presence_penalty,
        "frequency_penalty": data.frequency_penalty,
        "stop": (stop,) if isinstance(stop, str) else tuple(stop or ()),
        "seed": data.seed,
        "logit_bias": _logit_bias(data.logit_bias),
        "speculative": speculative(data.speculative),
        "grammar": data.grammar or None,
    }


def _logit_bias(bias: dict[str, float] | None) -> dict[int, float] | None:
    if not bias:
        return None
    out = {}
    for key, value in bias.items():
        try:
            token = int(key)
        except ValueError:
            token = -1
        if token < 0 or str(token) != key.strip():
            raise invalid(
                f"Invalid 'logit_bias': keys must be token ids, got {key!r}.", "logit_bias"
            )
        out[token] = value
    return out


def _job(data: s.SamplingFields, endpoint: str, requests: list[GenerationRequest]) -> Job:
    return Job(
        endpoint=endpoint,
        model=data.model,
        keep_alive=keep_alive(data.keep_alive),
        requests=tuple(requests),
        n=data.n,
        stream=data.stream,
    )


def include_usage(data: s.SamplingFields) -> bool:
    """Whether a stream ends with a usage chunk (``stream_options.include_usage``)."""
    return bool(data.stream_options and data.stream_options.include_usage)


# ---- chat ---------------------------------------------------------------------------------


def _text(content: str | list | None, param: str, images: Collector | None = None) -> str:
    """Message content as one string: text parts joined by the core's one rule
    (:func:`join_text`), each image part as the media marker (its image kept in
    ``images``)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for i, part in enumerate(content):
        if isinstance(part, s.ImageUrlPart):
            field = f"{param}[{i}].image_url"
            if images is None:
                raise invalid(f"Invalid '{field}': images are not taken here.", field)
            url = part.image_url.get("url") if isinstance(part.image_url, dict) else None
            texts.append(images.add_url(url, f"{field}.url"))
            continue
        if isinstance(part, s.InputAudioPart):
            field = f"{param}[{i}].input_audio"
            if images is None:
                raise invalid(f"Invalid '{field}': audio is not taken here.", field)
            audio = part.input_audio
            texts.append(images.add_audio(audio.get("data"), audio.get("format"), f"{field}.data"))
            continue
        if isinstance(part, s.FilePart):
            field = f"{param}[{i}].file"
            if images is None:
                raise invalid(f"Invalid '{field}': files are not taken here.", field)
            file = part.file
            name = file.get("filename")
            texts.append(
                images.add_file(
                    file.get("file_data"),
                    f"{field}.file_data",
                    filename=name if isinstance(name, str) else None,
                )
            )
            continue
        texts.append(part.text)
    return join_text(texts)


def _message(message: s.Message, i: int, images: Collector | None = None) -> dict[str, Any]:
    role = type(message).__struct_config__.tag
    out: dict[str, Any] = {
        # Chat templates know "system"; OpenAI's "developer" role means the same.
        "role": "system" if role == "developer" else role,
        "content": _text(message.content, f"messages[{i}].content", images),
    }
    if getattr(message, "name", None):
        out["name"] = message.name
    if isinstance(message, s.AssistantMessage) and message.tool_calls:
        out["tool_calls"] = msgspec.to_builtins(message.tool_calls)
    if isinstance(message, s.AssistantMessage) and (
        reasoning := message.reasoning_content or message.reasoning
    ):
        out["reasoning_content"] = reasoning
    if isinstance(message, s.ToolMessage):
        out["tool_call_id"] = message.tool_call_id
    return out


def _response_format(fmt: s.ResponseFormatField | None) -> ResponseFormat | None:
    if fmt is None or isinstance(fmt, s.TextFormat):
        return None
    if isinstance(fmt, s.JsonObjectFormat):
        return ResponseFormat(type="json_object")
    spec = fmt.json_schema
    return ResponseFormat(
        type="json_schema", schema=spec.schema, name=spec.name, strict=bool(spec.strict)
    )


def chat_job(data: s.ChatCompletionRequest, images: Collector | None = None) -> Job:
    """The job of a chat request; its image parts go to ``images`` (see
    :func:`~..kernel.media.attach`)."""
    if data.top_logprobs is not None and not data.logprobs:
        raise invalid("'top_logprobs' requires 'logprobs' to be true.", "top_logprobs")
    if data.tool_choice is not None and data.tool_choice != "none" and not data.tools:
        raise invalid("'tool_choice' is only allowed when 'tools' are given.", "tool_choice")
    sampling = _sampling(data)
    if data.max_completion_tokens is not None:
        sampling["max_tokens"] = data.max_completion_tokens
    tool_choice = data.tool_choice
    request = GenerationRequest(
        messages=tuple(_message(m, i, images) for i, m in enumerate(data.messages)),
        logprobs=data.logprobs,
        top_logprobs=data.top_logprobs or 0,
        response_format=_response_format(data.response_format),
        tools=tuple(msgspec.to_builtins(data.tools)) if data.tools else None,
        tool_choice=tool_choice
        if isinstance(tool_choice, str) or tool_choice is None
        else msgspec.to_builtins(tool_choice),
        template_kwargs=data.chat_template_kwargs or None,
        reasoning=reasoning_of_effort(data.reasoning_effort),
        truncate=data.truncate,
        **sampling,
    )
    return _job(data, "chat", [request])


# ---- completions --------------------------------------------------------------------------


#: Most prompts one completions request takes.
MAX_PROMPTS = 128


def _prompts(prompt: str | list) -> list[str | tuple[int, ...]]:
    """The request's prompts: each text, or token ids (OpenAI's ``list[int]`` for one prompt,
    ``list[list[int]]`` for several, ids of the model's own vocabulary)."""
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise invalid("'prompt' must not be an empty list.", "prompt")
    if all(isinstance(p, int) for p in prompt):
        return [tuple(prompt)]
    if len(prompt) > MAX_PROMPTS:
        raise invalid(f"Invalid 'prompt': a request takes at most {MAX_PROMPTS} prompts.", "prompt")
    out: list[str | tuple[int, ...]] = []
    for i, p in enumerate(prompt):
        if isinstance(p, int):
            raise invalid(
                f"Invalid 'prompt[{i}]': a list of prompts holds texts or lists of token ids,"
                " not a bare token id.",
                f"prompt[{i}]",
            )
        if isinstance(p, list) and not p:
            raise invalid(f"Invalid 'prompt[{i}]': an empty list of token ids.", f"prompt[{i}]")
        out.append(p if isinstance(p, str) else tuple(p))
    return out


def completion_job(data: s.CompletionRequest) -> Job:
    if data.best_of is not None and data.best_of != data.n:
        raise invalid("'best_of' is not supported (it may only equal 'n').", "best_of")
    prompts = _prompts(data.prompt)
    sampling = _sampling(data)
    if data.echo and not all(isinstance(p, str) for p in prompts):
        raise invalid(
            "'echo' repeats the prompt's text: send the prompt as text to have it echoed.",
            "echo",
        )
    requests = [
        GenerationRequest(
            prompt=p if isinstance(p, str) else None,
            prompt_token_ids=None if isinstance(p, str) else p,
            logprobs=data.logprobs is not None,
            top_logprobs=data.logprobs or 0,
            # Fill in the middle (the model needs FIM tokens): the prompt is the code before.
            suffix=data.suffix or None,
            **sampling,
        )
        for p in prompts
    ]
    return _job(data, "completions", requests)


def echo(data: s.CompletionRequest) -> tuple[str, ...] | None:
    """With ``echo``: each prompt, repeated before its choices' text (texts only: see
    :func:`completion_job`)."""
    return tuple(p for p in _prompts(data.prompt) if isinstance(p, str)) if data.echo else None


# ---- embeddings ---------------------------------------------------------------------------


def embedding_inputs(data: s.EmbeddingRequest) -> list[str]:
    if data.dimensions is not None:
        raise invalid(
            "'dimensions' is not supported: the model's own size is returned.", "dimensions"
        )
    inputs = [data.input] if isinstance(data.input, str) else data.input
    if not inputs:
        raise invalid("'input' must not be an empty list.", "input")
    if not all(isinstance(x, str) for x in inputs):
        raise invalid(
            "Token-id inputs are not supported: send the input as text. (LangChain's"
            " OpenAIEmbeddings sends OpenAI's own token ids, which mean nothing to a local"
            " model, unless it is made with check_embedding_ctx_length=False.)",
            "input",
        )
    for i, text in enumerate(inputs):
        if not text:
            param = "input" if isinstance(data.input, str) else f"input[{i}]"
            raise invalid(f"Invalid '{param}': must not be an empty string.", param)
    return inputs
