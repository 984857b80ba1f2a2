"""The ``grammar`` extension (a GBNF string, as llama-server takes it) on every generation
route of every surface, through the official clients (``extra_body``): the output follows
it exactly, special tokens included, and a grammar that does not parse is a 400 naming the
problem in that surface's error shape, streamed or not."""

from __future__ import annotations

import pytest

anthropic = pytest.importorskip("anthropic")
ollama = pytest.importorskip("ollama")
openai = pytest.importorskip("openai")

from tests.support.server import running_server  # noqa: E402

pytestmark = pytest.mark.timeout(120)

KEY = "test-key"
YES = 'root ::= "yes cat"'
BAD = 'root ::= "yes" foo'
#: The Qwen3 fixture has the real Qwen tokenizer, where ``<think>`` is one added token; a
#: GBNF token reference (unquoted) asks for that token itself.
THINK = 'root ::= <think> "hmm" </think> "ok"'


@pytest.fixture(scope="module")
def server(tiny_model_path, family_model):
    qwen3 = family_model("qwen35", "Qwen-Qwen3-0.6B")
    config = {
        "server": {"api_key": KEY},
        "models": [
            {"name": "tiny", "path": str(tiny_model_path), "n_ctx": 1024},
            {"name": "qwen3", "path": str(qwen3), "n_ctx": 1024},
        ],
    }
    with running_server(config) as srv:
        yield srv


@pytest.fixture
def oai(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture
def claude(server):
    return anthropic.Anthropic(base_url=server.base_url, api_key=KEY, max_retries=0)


@pytest.fixture
def olla(server):
    return ollama.Client(host=server.base_url, headers={"Authorization": f"Bearer {KEY}"})


USER = [{"role": "user", "content": "hello"}]


def test_openai_chat_and_completions_follow_the_grammar(oai):
    chat = oai.chat.completions.create(model="tiny", messages=USER, extra_body={"grammar": YES})
    assert chat.choices[0].message.content == "yes cat"
    assert chat.choices[0].finish_reason == "stop"
    text = oai.completions.create(model="tiny", prompt="the", extra_body={"grammar": YES})
    assert text.choices[0].text == "yes cat"
    parts = oai.chat.completions.create(
        model="tiny", messages=USER, stream=True, extra_body={"grammar": YES}
    )
    assert "".join(c.choices[0].delta.content or "" for c in parts if c.choices) == "yes cat"


def test_responses_anthropic_and_ollama_follow_the_grammar(oai, claude, olla):
    response = oai.responses.create(model="tiny", input="hello", extra_body={"grammar": YES})
    assert response.output_text == "yes cat"
    message = claude.messages.create(
        model="tiny", max_tokens=20, messages=USER, extra_body={"grammar": YES}
    )
    assert message.content[0].text == "yes cat"
    # The ollama client has no extra_body; its ``_request`` sends the same JSON it would.
    chat = olla._request(
        ollama.ChatResponse,
        "POST",
        "/api/chat",
        json={"model": "tiny", "messages": USER, "stream": False, "grammar": YES},
    )
    assert chat.message.content == "yes cat"
    generate = olla._request(
        ollama.GenerateResponse,
        "POST",
        "/api/generate",
        json={"model": "tiny", "prompt": "hello", "stream": False, "grammar": YES},
    )
    assert generate.response == "yes cat"


def test_special_tokens_are_part_of_the_grammar(oai):
    """``<think>`` is one token of the real Qwen tokenizer; with reasoning off the raw text
    passes through, markers included."""
    text = oai.completions.create(
        model="qwen3", prompt="hi", max_tokens=20, extra_body={"grammar": THINK}
    )
    assert text.choices[0].text == "<think>hmm</think>ok"
    assert text.usage.completion_tokens < 8  # the markers are single tokens


def test_a_bad_grammar_is_a_400_naming_the_problem_on_every_surface(oai, claude, olla, server):
    import httpx

    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as exc:
            oai.chat.completions.create(
                model="tiny", messages=USER, stream=stream, extra_body={"grammar": BAD}
            )
        assert "undefined rule 'foo'" in exc.value.message
        assert exc.value.body["param"] == "grammar"
        with pytest.raises(anthropic.BadRequestError) as exc:
            claude.messages.create(
                model="tiny",
                max_tokens=5,
                messages=USER,
                stream=stream,
                extra_body={"grammar": BAD},
            )
        assert "undefined rule 'foo'" in exc.value.message
    with pytest.raises(openai.BadRequestError) as exc:
        oai.completions.create(model="tiny", prompt="x", extra_body={"grammar": BAD})
    assert "undefined rule 'foo'" in exc.value.message
    with pytest.raises(openai.BadRequestError) as exc:
        oai.responses.create(model="tiny", input="x", extra_body={"grammar": 'root := "a"'})
    assert "expecting ::=" in exc.value.message
    with pytest.raises(ollama.ResponseError) as exc:
        olla._request(
            ollama.ChatResponse,
            "POST",
            "/api/chat",
            json={"model": "tiny", "messages": USER, "stream": False, "grammar": BAD},
        )
    assert exc.value.status_code == 400 and "undefined rule 'foo'" in exc.value.error
    auth = {"Authorization": f"Bearer {KEY}"}
    for path, body in (
        ("/api/chat", {"messages": USER}),
        ("/api/generate", {"prompt": "hello"}),
    ):
        for stream in (False, True):
            answer = httpx.post(
                server.base_url + path,
                json={"model": "tiny", "grammar": BAD, "stream": stream, **body},
                headers=auth,
                timeout=30,
            )
            assert answer.status_code == 400, answer.text
            assert "undefined rule 'foo'" in answer.json()["error"]


def test_grammar_and_a_json_response_format_are_refused_together(oai):
    with pytest.raises(openai.BadRequestError) as exc:
        oai.chat.completions.create(
            model="tiny",
            messages=USER,
            response_format={"type": "json_object"},
            extra_body={"grammar": YES},
        )
    assert exc.value.body["param"] == "grammar"
