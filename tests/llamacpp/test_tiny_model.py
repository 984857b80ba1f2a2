"""The backend on real llama.cpp with the tiny random model: fast, deterministic at
temperature 0. Constrained output (a JSON ``const``) makes it write chosen text, and
``logit_bias`` makes it repeat a chosen token."""

from __future__ import annotations

import json
import threading
import time

import attrs
import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from hoshikage_core.errors import ContextLengthExceeded, InvalidRequest, ModelLoadError  # noqa: E402
from hoshikage_core.protocol import (  # noqa: E402
    BlockingStream,
    CancelToken,
    GenerationRequest,
    LoadedModel,
    ResponseFormat,
    TokenLogprob,
    stream,
)
from hoshikage_core.registry import ModelEntry  # noqa: E402
from hoshikage_llamacpp.lifecycle.model import LlamaCppModel  # noqa: E402
from hoshikage_llamacpp.options import LlamaOptions  # noqa: E402

from hoshikage_llamacpp import plugin  # noqa: E402

USER = ({"role": "user", "content": "hello the cat"},)
EOS = 2


@pytest.fixture(scope="module")
def model(tiny_model_path):
    m = LlamaCppModel.load("tiny", str(tiny_model_path), LlamaOptions(n_ctx=512))
    yield m
    m.close()


def chunks_of(model, request, cancel=None):
    """One choice's chunks; errors found before generation are raised by this call."""
    return (chunk for _index, chunk in stream(model, request, cancel))


def run(model, cancel=None, **fields):
    chunks = list(chunks_of(model, GenerationRequest(**fields), cancel))
    return "".join(c.text for c in chunks), chunks


def const(text):
    return ResponseFormat(type="json_schema", schema={"const": text})


def token_id(model, piece):
    (token,) = model.tokenize(piece)
    return token


# ----------------------------------------------------------------------------- streaming


def test_is_a_loaded_model(model):
    assert isinstance(model, LoadedModel)
    assert model.n_ctx == 512


def test_streams_one_delta_per_token_and_reports_usage_last(model):
    cat = token_id(model, "cat")
    text, chunks = run(model, messages=USER, max_tokens=6, temperature=0, logit_bias={cat: 100})
    assert text == " cat" * 6
    assert [c.text for c in chunks[:-1]] == [" cat"] * 6
    assert all(c.finish_reason is None and c.completion_tokens is None for c in chunks[:-1])
    last = chunks[-1]
    assert (last.finish_reason, last.completion_tokens) == ("length", 6)
    assert last.prompt_tokens == len(model.prompt_tokens(model.chat.render(USER)))


def test_completion_prompt(model):
    text, chunks = run(model, prompt="the cat sat", max_tokens=5, temperature=0)
    assert chunks[-1].prompt_tokens == 1 + model.count_tokens("the cat sat")
    assert chunks[-1].completion_tokens == 5


def test_end_of_sequence_is_stop(model):
    _, chunks = run(model, messages=USER, max_tokens=50, temperature=0, logit_bias={EOS: 100})
    assert (chunks[-1].finish_reason, chunks[-1].completion_tokens) == ("stop", 0)


def test_stop_string_spanning_tokens(model):
    text, chunks = run(
        model,
        messages=USER,
        temperature=0,
        max_tokens=40,
        response_format=const("hello world stop here"),
        stop=("op he",),
    )
    assert text == '"hello world st'
    assert chunks[-1].finish_reason == "stop"


def test_multibyte_text_from_byte_tokens_is_never_split(model):
    text, chunks = run(
        model, messages=USER, temperature=0, max_tokens=40, response_format=const("日本語 ok")
    )
    assert text.startswith('"日本語 ok"')
    assert all("\ufffd" not in c.text for c in chunks)
    assert len(chunks) > 3  # streamed, not buffered


def test_seed_makes_sampling_repeatable(model):
    first, _ = run(model, messages=USER, max_tokens=30, temperature=1.0, seed=42)
    again, _ = run(model, messages=USER, max_tokens=30, temperature=1.0, seed=42)
    other, _ = run(model, messages=USER, max_tokens=30, temperature=1.0, seed=43)
    assert first == again
    assert first != other


def test_temperature_zero_is_deterministic(model):
    a, _ = run(model, messages=USER, max_tokens=30, temperature=0)
    b, _ = run(model, messages=USER, max_tokens=30, temperature=0)
    assert a == b


def test_repeat_penalty_changes_greedy_output(model):
    plain, _ = run(model, messages=USER, max_tokens=40, temperature=0)
    penalised, _ = run(model, messages=USER, max_tokens=40, temperature=0, repeat_penalty=1.8)
    assert plain != penalised


def test_the_models_sampling_defaults_fill_what_a_request_leaves_out(model, tiny_model_path):
    """``temperature = 0`` and ``repeat_penalty`` as model options: a request without them
    is greedy and penalised as if it had asked; a request's own values win."""
    penalised, _ = run(model, messages=USER, max_tokens=40, temperature=0, repeat_penalty=1.8)
    plain, _ = run(model, messages=USER, max_tokens=40, temperature=0)
    options = LlamaOptions(n_ctx=512, temperature=0, repeat_penalty=1.8)
    defaults = LlamaCppModel.load("tiny-defaults", str(tiny_model_path), options)
    try:
        assert run(defaults, messages=USER, max_tokens=40)[0] == penalised
        assert run(defaults, messages=USER, max_tokens=40, repeat_penalty=1.0)[0] == plain
    finally:
        defaults.close()


# ----------------------------------------------------------------------------- logit bias, logprobs


def test_logit_bias_bans_a_token(model):
    def first_text(**extra):
        text, _ = run(model, messages=USER, max_tokens=1, temperature=0, **extra)
        return text

    greedy = first_text()
    same_text = {t: -100 for t in range(model.n_vocab) if model._engine_piece(t) == greedy.encode()}
    assert same_text
    assert first_text(logit_bias=same_text) != greedy


def test_logit_bias_out_of_vocabulary_is_invalid(model):
    with pytest.raises(InvalidRequest, match="not in the vocabulary"):
        chunks_of(model, GenerationRequest(messages=USER, logit_bias={10**6: 5}), CancelToken())


def test_logprobs_cover_every_token_in_order(model):
    text, chunks = run(
        model, messages=USER, max_tokens=12, temperature=0, logprobs=True, top_logprobs=3
    )
    entries = [e for c in chunks for e in (c.logprobs or ())]
    assert len(entries) == 12
    assert all(isinstance(e, TokenLogprob) for e in entries)
    assert b"".join(bytes(e.bytes) for e in entries).decode("utf-8", errors="replace") == text
    for e in entries:
        assert e.logprob <= 0
        assert len(e.top_logprobs) == 3
        values = [t.logprob for t in e.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert e.logprob == pytest.approx(values[0])  # greedy takes the most likely token


# ----------------------------------------------------------------------------- structured output


def test_json_object_parses(model):
    text, chunks = run(
        model,
        messages=USER,
        max_tokens=200,
        temperature=0,
        response_format=ResponseFormat(type="json_object"),
    )
    assert chunks[-1].finish_reason == "stop"
    assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize("banned", ["eos", "brace"])
def test_bias_banning_what_the_grammar_requires_does_not_abort(model, banned):
    # Banning the only tokens the grammar allows used to leave llama.cpp no candidate, and
    # it aborted the whole process. The grammar wins: the output still parses.
    token = EOS if banned == "eos" else 3 + ord("{")  # the byte token <0x7B>
    text, chunks = run(
        model,
        messages=USER,
        max_tokens=200,
        temperature=0,
        response_format=ResponseFormat(type="json_object"),
        logit_bias={token: -100},
    )
    assert chunks[-1].finish_reason in ("stop", "length")
    if chunks[-1].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)
    assert text.lstrip().startswith("{")


def test_json_schema_validates(model):
    jsonschema = pytest.importorskip("jsonschema")
    schema = {
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green"]},
            "code": {"type": "string", "pattern": "^[a-c]{2}$"},
            "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 2},
        },
        "required": ["color", "code", "tags"],
        "additionalProperties": False,
    }
    fmt = ResponseFormat(type="json_schema", schema=schema, strict=True)
    text, _ = run(model, messages=USER, max_tokens=80, temperature=0, response_format=fmt)
    jsonschema.validate(json.loads(text), schema)


def test_strict_schema_with_keywords_the_grammar_cannot_enforce_is_refused(model):
    schema = {"type": "object", "properties": {"minimum": {"type": "integer", "maximum": 9}}}
    with pytest.raises(InvalidRequest, match="cannot enforce these JSON schema keywords: maximum$"):
        chunks_of(
            model,
            GenerationRequest(
                messages=USER,
                response_format=ResponseFormat(type="json_schema", schema=schema, strict=True),
            ),
            CancelToken(),
        )


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"$ref": "#/definitions/missing"}}},
        {"type": "nonsense"},
        {"type": "string", "pattern": "[unclosed"},
        ["not", "an", "object"],
    ],
)
def test_bad_schema_is_an_invalid_request_before_any_chunk(model, schema):
    with pytest.raises(InvalidRequest) as info:
        chunks_of(
            model,
            GenerationRequest(
                messages=USER, response_format=ResponseFormat(type="json_schema", schema=schema)
            ),
            CancelToken(),
        )
    assert info.value.param == "response_format"


# ----------------------------------------------------------------------------- tools

TOOLS = (
    {
        "type": "function",
        "function": {
            "name": "paint",
            "description": "Paint the cat",
            "parameters": {
                "type": "object",
                "properties": {"color": {"enum": ["red", "blue"]}},
                "required": ["color"],
            },
        },
    },
    {
        "type": "function",
        "function": {"name": "wait", "parameters": {"type": "object", "properties": {}}},
    },
)


def test_required_tool_choice_returns_a_tool_call(model):
    text, chunks = run(
        model, messages=USER, max_tokens=80, temperature=0, tools=TOOLS, tool_choice="required"
    )
    last = chunks[-1]
    assert text == ""
    assert last.finish_reason == "tool_calls"
    (call,) = last.tool_calls
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] in ("paint", "wait")
    assert isinstance(json.loads(call["function"]["arguments"]), dict)


def test_named_tool_choice_calls_that_tool(model):
    _, chunks = run(
        model,
        messages=USER,
        max_tokens=80,
        temperature=0,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "paint"}},
    )
    (call,) = chunks[-1].tool_calls
    assert call["function"]["name"] == "paint"
    assert json.loads(call["function"]["arguments"])["color"] in ("red", "blue")


def test_unknown_tool_choice_is_invalid(model):
    with pytest.raises(InvalidRequest, match="not in tools"):
        chunks_of(
            model,
            GenerationRequest(
                messages=USER,
                tools=TOOLS,
                tool_choice={"type": "function", "function": {"name": "fly"}},
            ),
            CancelToken(),
        )


def test_tools_are_described_to_a_template_without_tool_support(model):
    with_tools = model.chat.render(USER, TOOLS)
    assert "<tool_call>" in with_tools and '"name": "paint"' in with_tools
    _, none_chunks = run(
        model, messages=USER, max_tokens=1, temperature=0, tools=TOOLS, tool_choice="none"
    )
    _, plain_chunks = run(model, messages=USER, max_tokens=1, temperature=0)
    assert none_chunks[-1].prompt_tokens == plain_chunks[-1].prompt_tokens


# ----------------------------------------------------------------------------- context


def test_prompt_longer_than_the_context_is_refused_before_any_chunk(model):
    long = {"role": "user", "content": "the cat sat on the mat " * 150}
    with pytest.raises(ContextLengthExceeded) as info:
        chunks_of(model, GenerationRequest(messages=(long,)), CancelToken())
    assert info.value.n_ctx == 512
    assert info.value.prompt_tokens > 512
    assert str(info.value.prompt_tokens) in str(info.value) and "512" in str(info.value)


def test_generation_stops_with_length_when_the_context_is_full(tiny_model_path):
    small = LlamaCppModel.load("small", str(tiny_model_path), LlamaOptions(n_ctx=64))
    try:
        assert small.n_ctx == 256  # llama.cpp pads the window to a multiple of 256
        _, chunks = run(
            small, prompt="the cat", max_tokens=1000, temperature=0, logit_bias={EOS: -100}
        )
        last = chunks[-1]
        assert last.finish_reason == "length"
        assert last.prompt_tokens + last.completion_tokens == small.n_ctx
    finally:
        small.close()


def test_kv_cache_prefix_is_reused_across_turns(model):
    turn1 = ({"role": "system", "content": "the cat sat on the mat " * 20}, *USER)
    answer, chunks = run(model, messages=turn1, max_tokens=8, temperature=0)
    first_prompt = chunks[-1].prompt_tokens
    turn2 = (*turn1, {"role": "assistant", "content": answer}, {"role": "user", "content": "yes"})
    _, chunks = run(model, messages=turn2, max_tokens=4, temperature=0)
    assert chunks[-1].cached_tokens >= first_prompt
    _, chunks = run(
        model, messages=({"role": "user", "content": "red"},), max_tokens=1, temperature=0
    )
    assert chunks[-1].cached_tokens <= 11  # a different conversation shares at most "<s><|user|>\n"


# ----------------------------------------------------------------------------- cancellation and slots


class GatedSink(BlockingStream):
    """Holds the engine inside the delivery of its first chunk until the test lets go."""

    def __init__(self):
        super().__init__()
        self.first = threading.Event()
        self.go = threading.Event()

    def put(self, index, chunk):
        super().put(index, chunk)
        if not self.first.is_set():
            self.first.set()
            assert self.go.wait(5)


def test_cancel_stops_at_the_next_step(model):
    cat = token_id(model, "cat")
    cancel = CancelToken()
    sink = GatedSink()
    model.generate(
        GenerationRequest(messages=USER, max_tokens=200, logit_bias={cat: 100}), cancel, sink
    )
    assert sink.first.wait(5)
    cancel.cancel()  # while the engine is between two steps
    sink.go.set()
    chunks = [chunk for _index, chunk in sink]
    assert chunks[0].text == " cat"
    assert len(chunks) == 2
    assert (chunks[1].finish_reason, chunks[1].completion_tokens) == ("cancelled", 1)


def endless(model):
    """A request that never ends by itself: EOS is banned and the budget is large."""
    return GenerationRequest(messages=USER, max_tokens=100_000, logit_bias={EOS: -100})


def test_a_request_waits_for_a_free_slot_and_can_be_cancelled_while_waiting(tiny_model_path):
    one = LlamaCppModel.load(
        "one", str(tiny_model_path), LlamaOptions(n_ctx=100_000 // 256 * 256 + 256, parallel=1)
    )
    try:
        assert one.capacity == 1
        holder_cancel = CancelToken()
        holder = BlockingStream()
        one.generate(endless(one), holder_cancel, holder)
        waiting_cancel = CancelToken()
        waiting = BlockingStream()
        one.generate(GenerationRequest(messages=USER, max_tokens=5), waiting_cancel, waiting)
        time.sleep(0.2)
        assert one.stats().running == 1  # the second is queued, not decoding
        waiting_cancel.cancel()
        ((index, only),) = list(waiting)
        assert (only.finish_reason, only.completion_tokens) == ("cancelled", 0)
        holder_cancel.cancel()
        last = list(holder)[-1][1]
        assert last.finish_reason == "cancelled" and last.completion_tokens > 0
        # the slot is free again
        _, chunks = run(one, messages=USER, max_tokens=2, temperature=0)
        assert chunks[-1].completion_tokens == 2
    finally:
        one.close()


def test_cancelling_one_of_four_leaves_the_others_to_finish(model):
    expected = [
        run(model, prompt=f"the cat {word}", max_tokens=40, temperature=0, logit_bias={EOS: -100})[
            0
        ]
        for word in ("red", "blue", "green", "one")
    ]
    cancels = [CancelToken() for _ in range(4)]
    sinks = [BlockingStream() for _ in range(4)]
    for i, word in enumerate(("red", "blue", "green", "one")):
        request = GenerationRequest(
            prompt=f"the cat {word}", max_tokens=40, temperature=0, logit_bias={EOS: -100}
        )
        model.generate(request, cancels[i], sinks[i])
    cancels[1].cancel()
    results = [[chunk for _i, chunk in sink] for sink in sinks]
    assert results[1][-1].finish_reason == "cancelled"
    for i in (0, 2, 3):
        assert "".join(c.text for c in results[i]) == expected[i]
        assert results[i][-1].finish_reason == "length"
    assert model.stats().running == 0


def test_interleaved_conversations_each_keep_their_own_slot(model):
    """Two conversations taking turns each find their own prefix in the cache."""
    systems = ["tool call json name " * 12, "data here stop two " * 12]  # no other test's prompts
    history = [[{"role": "system", "content": system}] for system in systems]
    previous = [0, 0]
    for turn, word in enumerate(("yes", "no", "stop")):
        for conv in (0, 1):
            messages = (*history[conv], {"role": "user", "content": f"{word} {conv}"})
            answer, chunks = run(model, messages=messages, max_tokens=6, temperature=0)
            last = chunks[-1]
            if turn > 0:
                # everything before this turn's user message came from this conversation's slot
                assert last.cached_tokens >= previous[conv], (turn, conv, last)
            else:
                assert last.cached_tokens < 20, last  # the other conversation's slot was left alone
            history[conv] = [*messages, {"role": "assistant", "content": answer}]
            previous[conv] = last.prompt_tokens


def test_n_choices_read_the_prompt_once(model):
    before = model.stats()
    request = GenerationRequest(
        prompt="the cat sat", max_tokens=12, temperature=1.5, seed=3, logit_bias={EOS: -100}
    )
    by_choice: dict[int, list] = {}
    for index, chunk in stream(model, request, n=4):
        by_choice.setdefault(index, []).append(chunk)
    after = model.stats()
    assert sorted(by_choice) == [0, 1, 2, 3]
    texts = ["".join(c.text for c in by_choice[i]) for i in range(4)]
    assert len(set(texts)) == 4, texts  # seed + j: four different choices
    finals = [by_choice[i][-1] for i in range(4)]
    assert all(
        f.completion_tokens == 12 and f.prompt_tokens == finals[0].prompt_tokens for f in finals
    )
    assert after.prompt_tokens - before.prompt_tokens == finals[0].prompt_tokens  # counted once
    # choice j is exactly what a single request with seed + j gives
    for j in range(4):
        single = attrs_evolve(request, seed=3 + j)
        assert run(model, **single)[0] == texts[j]


def attrs_evolve(request, **changes):
    import attrs

    return {f.name: getattr(request, f.name) for f in attrs.fields(type(request))} | changes


def test_more_choices_than_slots_run_in_waves(tiny_model_path):
    two = LlamaCppModel.load("two", str(tiny_model_path), LlamaOptions(n_ctx=256, parallel=2))
    try:
        request = GenerationRequest(
            prompt="the cat", max_tokens=5, temperature=1.0, seed=9, logit_bias={EOS: -100}
        )
        finals = {i: c for i, c in stream(two, request, n=5) if c.finish_reason}
        assert sorted(finals) == [0, 1, 2, 3, 4]
        assert all(c.completion_tokens == 5 for c in finals.values())
    finally:
        two.close()


def test_concurrent_generations_give_the_same_text_as_sequential_ones(model):
    expected, _ = run(model, messages=USER, max_tokens=20, temperature=0)
    outputs = []

    def work():
        outputs.append(run(model, messages=USER, max_tokens=20, temperature=0)[0])

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert outputs == [expected] * 3


# ----------------------------------------------------------------------------- templates


def test_gguf_template_is_used_with_a_single_bos(model):
    assert model.chat.choice.origin == "GGUF tokenizer.chat_template"
    prompt = model.chat.render(USER)
    assert prompt.startswith("<s><|user|>\nhello the cat</s>\n<|assistant|>")
    tokens = model.prompt_tokens(prompt)
    assert tokens[0] == 1 and tokens[1] != 1


def test_plain_fallback_without_a_template(tiny_model_no_template_path):
    m = LlamaCppModel.load("plain", str(tiny_model_no_template_path), LlamaOptions(n_ctx=256))
    try:
        assert m.chat.choice.origin.startswith("plain fallback")
        messages = (
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Really."},
            *USER,
        )
        assert (
            m.chat.render(messages)
            == "System: Be brief.\n\nSystem: Really.\n\nUser: hello the cat\n\nAssistant:"
        )
        assert "\nUser:" in m.chat.stops
        _, chunks = run(m, messages=USER, max_tokens=3, temperature=0)
        assert chunks[-1].completion_tokens == 3
    finally:
        m.close()


def test_configured_format_and_template_override_the_gguf_one(tiny_model_path):
    by_format = LlamaCppModel.load(
        "f", str(tiny_model_path), LlamaOptions(n_ctx=128, chat_format="chatml")
    )
    by_template = LlamaCppModel.load(
        "t",
        str(tiny_model_path),
        LlamaOptions(
            n_ctx=128,
            chat_format="chatml",
            chat_template="{% for m in messages %}[{{ m.content }}]{% endfor %}",
        ),
    )
    try:
        assert (
            by_format.chat.render(USER)
            == "<|im_start|>user\nhello the cat<|im_end|>\n<|im_start|>assistant\n"
        )
        assert by_template.chat.render(USER) == "[hello the cat]"
    finally:
        by_format.close()
        by_template.close()


def test_content_parts_are_joined_and_images_refused(model):
    parts = (
        {
            "role": "user",
            "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": "the cat"}],
        },
    )
    # Joined with a newline, as every API surface joins them (hoshikage_core.protocol.join_text).
    assert model.chat.render(parts) == model.chat.render(
        ({"role": "user", "content": "hello\nthe cat"},)
    )
    image = ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},)
    with pytest.raises(InvalidRequest, match="text only"):
        chunks_of(model, GenerationRequest(messages=image), CancelToken())


def test_a_broken_chat_template_option_fails_the_load(tiny_model_path):
    with pytest.raises(ModelLoadError, match=str(tiny_model_path)):
        LlamaCppModel.load(
            "bad", str(tiny_model_path), LlamaOptions(chat_template="{% for m in messages %}")
        )


def test_template_errors_are_invalid_requests(tiny_model_path):
    strict = LlamaCppModel.load(
        "strict",
        str(tiny_model_path),
        LlamaOptions(n_ctx=128, chat_template="{{ raise_exception('roles must alternate') }}"),
    )
    try:
        with pytest.raises(InvalidRequest, match="roles must alternate"):
            chunks_of(strict, GenerationRequest(messages=USER), CancelToken())
    finally:
        strict.close()


# ----------------------------------------------------------------------------- tokens, memory, embeddings


def test_tokenize_and_count(model):
    tokens = model.tokenize("hello the cat")
    assert [model._engine_piece(t) for t in tokens] == [b" hello", b" the", b" cat"]
    assert model.count_tokens("hello the cat") == 3
    assert model.count_tokens("日") == 4  # "▁" then three byte-fallback tokens


def test_memory_bytes_counts_weights_and_grows_with_the_context(tiny_model_path):
    small = LlamaCppModel.load("a", str(tiny_model_path), LlamaOptions(n_ctx=256))
    large = LlamaCppModel.load("b", str(tiny_model_path), LlamaOptions(n_ctx=2048))
    try:
        kv_growth = 2 * (2048 - 256) * 64 * 2 * 2  # layers × cells × width × (K+V) × f16
        assert small.memory_bytes() > tiny_model_path.stat().st_size * 0.9
        assert large.memory_bytes() - small.memory_bytes() >= kv_growth
    finally:
        small.close()
        large.close()


def test_memory_bytes_counts_the_kv_cache_of_every_slot(tiny_model_path):
    # Of the host's compute buffer only the resident part is counted: the resident set's
    # growth while the context is made, less its KV and output buffers. That growth moves
    # with the rest of the process (malloc reusing pages freed earlier; CI once saw a whole
    # 4-slot context grow the resident set by less than its KV), so what is checked is what
    # holds whatever it measured: the weights, every slot's KV and the output buffer always,
    # and never more than the whole compute buffer on top.
    n_ctx = 16384
    one = LlamaCppModel.load("a", str(tiny_model_path), LlamaOptions(n_ctx=n_ctx, parallel=1))
    four = LlamaCppModel.load("b", str(tiny_model_path), LlamaOptions(n_ctx=n_ctx, parallel=4))
    try:
        assert (one.capacity, four.capacity) == (1, 4) and one.n_ctx == four.n_ctx == n_ctx
        kv_per_slot = 2 * n_ctx * 64 * 2 * 2  # layers × cells × width × (K+V) × f16
        kv = {m: sum(p.get("KV", 0) for p in m.placement.values()) for m in (one, four)}
        assert kv[four] - kv[one] == 3 * kv_per_slot  # as llama.cpp reported allocating
        slack = 64 * 1024  # llama.cpp reports each buffer in MiB to two decimals
        for m in (one, four):
            placed = list(m.placement.values())
            fixed = sum(p.get(k, 0) for p in placed for k in ("model", "KV", "output"))
            compute = sum(p.get("compute", 0) for p in placed)
            assert fixed - slack <= m.memory_bytes() <= fixed + compute + slack
        assert four.memory_bytes() >= 4 * kv_per_slot
    finally:
        one.close()
        four.close()


def test_device_memory_counts_only_this_hosts_gpu_buffers(tiny_model_path):
    from hoshikage_llamacpp.lifecycle.memory import device_bytes

    # From what llama.cpp reported allocating: host RAM, pinned host RAM and RPC servers
    # are not this host's GPU.
    placement = {
        "CPU_Mapped": {"model": 100},
        "CPU": {"output": 5},
        "CUDA_Host": {"compute": 7},
        "CUDA0": {"model": 1000, "KV": 200, "compute": 30},
        "RPC0[10.0.0.11:50052]": {"model": 900},
    }
    assert device_bytes(placement) == 1230
    model = LlamaCppModel.load("a", str(tiny_model_path), LlamaOptions(n_ctx=256, n_gpu_layers=-1))
    try:
        assert model.placement  # llama.cpp's own report was read
        gpu = [
            name
            for name in model.placement
            if not name.startswith(("CPU", "RPC")) and not name.endswith("_Host")
        ]
        if gpu:  # a GPU build: the offloaded weights are there
            assert model.device_memory_bytes() > 0
        else:  # a CPU-only build, even with RPC (where llama_supports_gpu_offload() is true)
            assert model.device_memory_bytes() == 0
    finally:
        model.close()


def test_embeddings_are_normalised_with_usage(tiny_model_path):
    emb = LlamaCppModel.load("emb", str(tiny_model_path), LlamaOptions(n_ctx=256, embedding=True))
    try:
        result = emb.embed(["hello the cat", "red"])
        assert len(result.vectors) == 2 and all(len(v) == 64 for v in result.vectors)
        for vector in result.vectors:
            assert sum(x * x for x in vector) == pytest.approx(1.0, abs=1e-4)
        assert result.vectors[0] != result.vectors[1]
        assert result.prompt_tokens == (1 + 3) + (1 + 1)
        single = emb.embed(["hello the cat"])
        assert single.vectors[0] == pytest.approx(result.vectors[0], abs=1e-5)
        with pytest.raises(ContextLengthExceeded):
            emb.embed(["the cat " * 400])
        with pytest.raises(InvalidRequest, match="embeddings"):
            chunks_of(emb, GenerationRequest(messages=USER), CancelToken())
    finally:
        emb.close()


def test_embed_on_a_chat_model_is_invalid(model):
    with pytest.raises(InvalidRequest, match="embedding = true"):
        model.embed(["x"])


# ----------------------------------------------------------------------------- plugin


def test_create_backend_hook(tiny_model_path):
    from hoshikage_llamacpp.lifecycle.isolation import ProcessModel

    entry = ModelEntry(name="tiny", path=str(tiny_model_path), options=LlamaOptions(n_ctx=768))
    loaded = plugin.create_backend(entry=entry, config=None)
    try:  # a process of its own, by default
        assert isinstance(loaded, ProcessModel) and loaded.n_ctx == 768 and loaded.pid
    finally:
        loaded.close()
    options = LlamaOptions(n_ctx=768, isolation="none")
    loaded = plugin.create_backend(entry=attrs.evolve(entry, options=options), config=None)
    try:
        assert isinstance(loaded, LlamaCppModel) and loaded.n_ctx == 768
    finally:
        loaded.close()
    assert (
        plugin.create_backend(entry=ModelEntry(name="x", path="/x", backend="other"), config=None)
        is None
    )
    from_dict = plugin.create_backend(
        entry=ModelEntry(name="d", path=str(tiny_model_path), options={"n_ctx": 64}), config=None
    )
    from_dict.close()
    with pytest.raises(ModelLoadError, match="bad options"):
        plugin.create_backend(
            entry=ModelEntry(name="d", path=str(tiny_model_path), options={"n_ctxx": 64}),
            config=None,
        )


def test_close_twice_is_harmless(tiny_model_path):
    m = LlamaCppModel.load("c", str(tiny_model_path), LlamaOptions(n_ctx=64))
    m.close()
    m.close()


def test_grammar_checked_after_the_draw_gives_the_same_greedy_answer_as_grammar_first(model):
    """The fast path (draw, check one token, redraw over the best-scored tokens on a
    rejection) must choose exactly what filtering the whole vocabulary first chooses."""
    schema = {
        "type": "object",
        "properties": {"pick": {"enum": ["red", "blue", "green"]}, "ok": {"type": "boolean"}},
        "required": ["pick", "ok"],
    }
    fmt = ResponseFormat(type="json_schema", schema=schema)
    for word in ("hello", "the cat", "json data", "one two"):
        messages = ({"role": "user", "content": word},)
        lazy, chunks = run(
            model, messages=messages, max_tokens=200, temperature=0, response_format=fmt
        )
        # any repetition penalty puts the grammar inside the chain, ahead of the draw
        first, _ = run(
            model,
            messages=messages,
            max_tokens=200,
            temperature=0,
            response_format=fmt,
            presence_penalty=1e-9,
        )
        assert lazy == first, word
        assert json.loads(lazy)["pick"] in ("red", "blue", "green")


def test_a_default_max_tokens_bounds_requests_that_give_none(tiny_model_path):
    """The default given at load ends a request without ``max_tokens`` with "length"; a
    request may still ask for more, up to the context."""
    bounded = LlamaCppModel.load(
        "bounded", str(tiny_model_path), LlamaOptions(n_ctx=256), default_max_tokens=7
    )
    try:
        _, chunks = run(bounded, prompt="the cat", temperature=0, logit_bias={EOS: -100})
        assert (chunks[-1].finish_reason, chunks[-1].completion_tokens) == ("length", 7)
        _, chunks = run(
            bounded, prompt="the cat", max_tokens=20, temperature=0, logit_bias={EOS: -100}
        )
        assert (chunks[-1].finish_reason, chunks[-1].completion_tokens) == ("length", 20)
        _, chunks = run(
            bounded, prompt="the cat", max_tokens=100_000, temperature=0, logit_bias={EOS: -100}
        )
        assert chunks[-1].prompt_tokens + chunks[-1].completion_tokens == bounded.n_ctx
    finally:
        bounded.close()


@pytest.mark.parametrize(
    ("model_option", "server_default", "expected"),
    [(None, 2048, 2048), (5, 2048, 5), (None, 0, None), (0, 2048, None), (9, 0, 9)],
)
def test_create_backend_takes_the_models_max_tokens_else_the_servers(
    tiny_model_path, model_option, server_default, expected
):
    from hoshikage_core.config import Config, ServerConfig

    config = Config(server=ServerConfig(max_tokens=server_default))
    entry = ModelEntry(
        name="t",
        path=str(tiny_model_path),
        options=LlamaOptions(n_ctx=256, max_tokens=model_option),
    )
    loaded = plugin.create_backend(entry=entry, config=config)
    try:
        assert loaded.default_max_tokens == expected
    finally:
        loaded.close()


def test_a_conversation_pushed_out_of_its_slot_comes_back_from_ram(tiny_model_path):
    """Two slots, three conversations taking turns: each turn finds its own prefix, from a
    slot or from the host-RAM cache, and answers exactly as if read in full."""
    two = LlamaCppModel.load(
        "two", str(tiny_model_path), LlamaOptions(n_ctx=1024, parallel=2, cache_ram=64)
    )
    fresh = LlamaCppModel.load(
        "fresh", str(tiny_model_path), LlamaOptions(n_ctx=1024, parallel=1, cache_ram=0)
    )
    try:
        systems = [
            "the cat sat on the mat " * 10,
            "hello world red blue green " * 10,
            "one two yes no data " * 10,
        ]
        history = [[{"role": "system", "content": system}] for system in systems]
        previous = [0, 0, 0]
        for turn, word in enumerate(("yes", "no")):
            for conv in range(3):
                messages = (*history[conv], {"role": "user", "content": f"{word} {conv}"})
                answer, chunks = run(two, messages=messages, max_tokens=6, temperature=0)
                if turn:
                    assert chunks[-1].cached_tokens >= previous[conv], (turn, conv, chunks[-1])
                    # the same answer as a model that read the whole prompt
                    run(
                        fresh, messages=({"role": "user", "content": "red"},), max_tokens=1
                    )  # empty its slot
                    alone, _ = run(fresh, messages=messages, max_tokens=6, temperature=0)
                    assert answer == alone
                history[conv] = [*messages, {"role": "assistant", "content": answer}]
                previous[conv] = chunks[-1].prompt_tokens
        assert two._engine.pool.cache.restored_tokens > 0
        assert two._engine.pool.cache.bytes <= 64 * 1024 * 1024
    finally:
        two.close()
        fresh.close()


@pytest.mark.parametrize("keyed", [False, True])
def test_a_cache_key_takes_its_own_slot_back(tiny_model_path, keyed):
    """``cache_key`` (Responses' ``prompt_cache_key``) as a slot-affinity hint: conversation
    A's prompt changes wholly (an agent compacted its history). Without a key it takes the
    least recently used slot, B's, and B's next turn reads everything again; with its key it
    takes its own slot back and B's cache survives."""
    two = LlamaCppModel.load(
        "two", str(tiny_model_path), LlamaOptions(n_ctx=1024, parallel=2, cache_ram=0)
    )
    try:
        b = "hello world red blue green " * 10
        a = "the cat sat on the mat " * 10

        def turn(prompt, key):
            return run(two, prompt=prompt, max_tokens=2, temperature=0, cache_key=key)[1][-1]

        turn(b, "b" if keyed else None)  # B first: its slot is the least recently used
        turn(a, "a" if keyed else None)
        turn("one two yes no data " * 10, "a" if keyed else None)  # A, compacted
        again = turn(b + "yes", "b" if keyed else None)
        if keyed:
            assert again.cached_tokens >= again.prompt_tokens - 4, again
        else:
            assert again.cached_tokens < 10, again
    finally:
        two.close()
