"""An image in a tool's output, for a model that takes no images: a note in its place, not a
400. An agent's tool (Claude Code's ``Read`` of a PNG, Codex's ``view_image``) reads images
whatever the model, and the answer stays in the session's history: a 400 there ends the
session. The image the user sends is still a 400. Through the official SDKs, on the tiny
model (no projector); each check compares token counts with the same request carrying the
note as text."""

from __future__ import annotations

import base64

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")
pytest.importorskip("PIL")

from hoshikage_api.kernel.media import LEFT_OUT  # noqa: E402

from tests.support.projectors import png_bytes  # noqa: E402
from tests.support.server import running_server  # noqa: E402

pytestmark = pytest.mark.timeout(180)

PNG = base64.b64encode(png_bytes()).decode()
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
READ = [{"name": "Read", "input_schema": {"type": "object"}}]


@pytest.fixture(scope="module")
def server(tiny_model_path):
    config = {"models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 2048}]}
    with running_server(config) as srv:
        yield srv


def conversation(result_content) -> list:
    return [
        {"role": "user", "content": "Look at chart.png"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": result_content}],
        },
    ]


def test_an_image_a_tool_read_is_a_note_and_one_the_user_sent_a_400(server):
    claude = anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0)

    def count(content) -> int:
        return claude.messages.count_tokens(
            model="tiny", tools=READ, messages=conversation(content)
        ).input_tokens

    text = {"type": "text", "text": "Read the file."}
    note = {"type": "text", "text": LEFT_OUT["image"]}
    assert count([text, IMAGE]) == count([text, note])
    assert count([text, IMAGE]) != count([text])
    answer = claude.messages.create(
        model="tiny", max_tokens=2, tools=READ, messages=conversation([text, IMAGE])
    )
    assert answer.stop_reason == "max_tokens"
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(
            model="tiny", max_tokens=2, messages=[{"role": "user", "content": [IMAGE, text]}]
        )
    message = info.value.response.json()["error"]["message"]
    assert "messages[0].content[0].source.data" in message and "no image input" in message
    # A broken image in a tool's output is still a 400: the note is for what the model
    # cannot take, not for bad input.
    broken = {**IMAGE, "source": {**IMAGE["source"], "data": "not base64!"}}
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.count_tokens(model="tiny", tools=READ, messages=conversation([broken]))


def test_a_function_call_outputs_image_is_a_note_on_the_responses_api(server):
    oai = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
    tools = [{"type": "function", "name": "view_image", "parameters": {"type": "object"}}]

    def tokens(output) -> int:
        answer = oai.responses.create(
            model="tiny",
            max_output_tokens=1,
            store=False,
            tools=tools,
            input=[
                {"role": "user", "content": "Look at chart.png"},
                {"type": "function_call", "call_id": "c1", "name": "view_image", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": output},
            ],
        )
        return answer.usage.input_tokens

    image = {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"}
    note = {"type": "input_text", "text": LEFT_OUT["image"]}
    assert tokens([image]) == tokens([note])
