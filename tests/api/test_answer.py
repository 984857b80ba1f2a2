"""The one answer path's stream loop (:func:`hoshikage_api.kernel.answer.streamed`), run over
every surface's format: an error before anything was sent is raised (the handler turns it
into an ordinary JSON error), an error after it is the surface's own last item.

The chunks come from a generator that fails on purpose after its first chunk: a failure in
the middle of a stream cannot be provoked on demand through llama.cpp. Everything up to and
after the chunks is the code a request runs.

An answer given whole (``collect``) comes from the real model process in a few messages."""

from __future__ import annotations

import json

import openai
import pytest
from hoshikage_core.errors import ModelLoadError
from hoshikage_core.protocol import Chunk, GenerationRequest

from tests.support.messages import output_messages


def job(endpoint: str):
    from hoshikage_api.kernel.job import Job

    return Job(
        endpoint=endpoint,
        model="tiny",
        keep_alive=None,
        requests=(GenerationRequest(prompt="x"),),
        stream=True,
    )


def sse(text: str) -> list[tuple[str | None, dict]]:
    """``(event name or None, data)`` of each event of a server-sent event stream."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields.get("event"), json.loads(fields["data"])))
    return events


def openai_chat():
    from hoshikage_api.openai.format import ChatFormat

    def check(text: str) -> None:
        events = [data for _, data in sse(text)]
        assert [e["choices"][0]["delta"] for e in events[:2]] == [
            {"role": "assistant", "content": ""},
            {"content": "hello"},
        ]
        assert set(events[-1]) == {"error"} and events[-1]["error"]["type"] == "server_error"
        assert "[DONE]" not in text

    return ChatFormat(job("chat")), check


def anthropic():
    from hoshikage_api.anthropic.format import MessageFormat

    def check(text: str) -> None:
        events = sse(text)
        assert [name for name, _ in events] == [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "error",
        ]
        assert all(data["type"] == name for name, data in events)
        assert events[-1][1]["error"]["type"] == "api_error"

    return MessageFormat(job("messages")), check


def ollama():
    from hoshikage_api.ollama.format import ChatFormat

    def check(text: str) -> None:
        lines = [json.loads(line) for line in text.splitlines()]
        assert lines[0]["message"]["content"] == "hello" and lines[0]["done"] is False
        assert set(lines[-1]) == {"error"} and "gone" in lines[-1]["error"]

    return ChatFormat("tiny"), check


def responses():
    from hoshikage_api.responses.format import ResponseBuilder
    from hoshikage_api.responses.schemas import CreateResponse

    stored = []
    fmt = ResponseBuilder(
        CreateResponse(model="tiny", input="x"), logprobs=False, on_final=stored.append
    )

    def check(text: str) -> None:
        events = [data for _, data in sse(text)]
        assert [e["type"] for e in events] == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.failed",
        ]
        failed = events[-1]["response"]
        assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
        assert failed["error"]["message"]
        assert failed["output"][0]["status"] == "incomplete"
        assert failed["output"][0]["content"][0]["text"] == "hello"
        assert stored == []  # a failed response is not kept
        # The SDK's stream reader accepts the sequence.
        from openai.lib.streaming.responses._responses import ResponseStreamState
        from openai.types.responses import ResponseStreamEvent
        from pydantic import TypeAdapter

        state = ResponseStreamState(input_tools=openai.omit, text_format=openai.omit)
        for event in events:
            state.handle_event(TypeAdapter(ResponseStreamEvent).validate_python(event))

    return fmt, check


FORMATS = {"openai": openai_chat, "anthropic": anthropic, "ollama": ollama, "responses": responses}


@pytest.mark.parametrize("surface", FORMATS)
async def test_an_error_after_the_stream_started_is_the_surfaces_last_item(surface):
    from hoshikage_api.kernel.answer import streamed

    fmt, check = FORMATS[surface]()

    async def chunks():
        yield 0, Chunk(text="hello")
        raise ModelLoadError("tiny", "gone")

    items = [item async for item in streamed(fmt, chunks())]
    assert len(items) == 2  # one write for the chunk, one for the error
    check(b"".join(items).decode())


@pytest.mark.parametrize("surface", FORMATS)
async def test_an_error_before_anything_was_sent_is_raised(surface):
    from hoshikage_api.kernel.answer import streamed

    fmt, _check = FORMATS[surface]()

    async def chunks():
        raise ModelLoadError("tiny", "gone")
        yield  # pragma: no cover

    with pytest.raises(ModelLoadError):
        [item async for item in streamed(fmt, chunks())]


WHOLE = {
    "openai": (
        "/v1/completions",
        {"model": "tiny", "prompt": "the cat", "max_tokens": 120, "logit_bias": {"2": -100}},
        lambda body: body["usage"]["completion_tokens"],
    ),
    # Greedy: sampled, the tiny model ended its answer before 60 tokens in about one request
    # in seven (Ollama's API has no logit bias to ban the end, as the OpenAI case does).
    "ollama": (
        "/api/generate",
        {
            "model": "tiny",
            "prompt": "the cat",
            "stream": False,
            "options": {"num_predict": 120, "temperature": 0},
        },
        lambda body: body["eval_count"],
    ),
}


@pytest.mark.parametrize("surface", WHOLE)
async def test_an_answer_given_whole_comes_from_its_model_process_in_a_few_messages(
    client, surface
):
    """Nothing reads an answer given whole before it ends (the kernel's ``collect`` marks
    its requests ``stream = False``): the model process sends the first step's chunks, then
    the rest with the end, not a message a step."""
    path, body, tokens = WHOLE[surface]
    warm = await client.post(path, json={**body, "prompt": "a"})  # loads the model
    assert warm.status_code == 200, warm.text
    messages = output_messages(client.app.state.runtime.pool.loaded_model("tiny"))
    response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    assert tokens(response.json()) >= 60
    assert 1 <= len(messages) <= 4 and messages[0] == 1, messages
