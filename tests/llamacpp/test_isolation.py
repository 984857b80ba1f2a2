"""A model in a child process (``isolation = "process"``) on the tiny model: the same
``LoadedModel`` contract as in-process, cancel reaching the child, and a dead child failing
its streams clearly while the server keeps serving (no RPC server needed here).

The contract tests run both ways the child's socket is read: by an event loop (the
server's way: the pool loads models with its loop in
:data:`~hoshikage_core.delivery.DELIVERY_LOOP`) and by a reader thread of the model's own
(a model driven without a loop)."""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import signal
import threading
import time

import httpx
import psutil
import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from hoshikage_core.delivery import DELIVERY_LOOP  # noqa: E402
from hoshikage_core.errors import Cancelled, InvalidRequest, ModelFailed, ModelLoadError  # noqa: E402
from hoshikage_core.protocol import CancelToken, GenerationRequest, stream  # noqa: E402
from hoshikage_llamacpp.lifecycle.isolation import ProcessModel  # noqa: E402
from hoshikage_llamacpp.lifecycle.model import LlamaCppModel  # noqa: E402
from hoshikage_llamacpp.options import LlamaOptions  # noqa: E402

from tests.support.server import running_server  # noqa: E402

PROMPT = GenerationRequest(prompt="Once upon a time", max_tokens=24, temperature=0)


class _Loop:
    """An event loop running on a thread of its own, as the server's does."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-loop")
        self.thread.start()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def load_for(loop, *args, **kwargs) -> ProcessModel:
    """``ProcessModel.load`` as the pool calls it: with ``loop`` in the load's context."""

    def load() -> ProcessModel:
        DELIVERY_LOOP.set(loop)
        return ProcessModel.load(*args, **kwargs)

    return contextvars.copy_context().run(load)


@pytest.fixture(params=["loop", "thread"])
def load(request):
    """``ProcessModel.load``, the child's socket read by an event loop on a thread of its own
    (``load.loop``) or by the model's reader thread (``load.loop`` None)."""
    loop = _Loop() if request.param == "loop" else None

    def load(*args, **kwargs) -> ProcessModel:
        if loop is None:
            return ProcessModel.load(*args, **kwargs)
        return load_for(loop.loop, *args, **kwargs)

    load.loop = loop
    yield load
    if loop is not None:
        loop.stop()


@pytest.fixture
def isolated(tiny_model_path, load):
    model = load(
        "tiny", str(tiny_model_path), LlamaOptions(n_ctx=256, parallel=2, isolation="process")
    )
    yield model
    model.close()


@pytest.fixture
def long_isolated(tiny_model_path, load):
    """Room for thousands of tokens: the tiny model writes them in about a second, long
    enough to cancel or kill it mid-stream without racing its end."""
    model = load(
        "tiny", str(tiny_model_path), LlamaOptions(n_ctx=8192, parallel=1, isolation="process")
    )
    yield model
    model.close()


LONG = GenerationRequest(prompt="Once upon a time", max_tokens=8000, temperature=0)


def text_of(model, request=PROMPT, n=1):
    out = [""] * n
    last = [None] * n
    for index, chunk in stream(model, request, n=n):
        out[index] += chunk.text
        if chunk.finish_reason:
            last[index] = chunk
    return out, last


def test_the_child_answers_like_the_model_in_process(isolated, tiny_model_path):
    local = LlamaCppModel.load("tiny", str(tiny_model_path), LlamaOptions(n_ctx=256, parallel=2))
    try:
        assert text_of(isolated) == text_of(local)
        assert text_of(isolated, n=2)[0] == text_of(local, n=2)[0]
        assert isolated.tokenize("hello world") == local.tokenize("hello world")
        assert isolated.count_tokens("hello world") == local.count_tokens("hello world")
        assert (isolated.n_ctx, isolated.capacity) == (local.n_ctx, local.capacity)
        assert isolated.placement and isolated.placement == local.placement
        # the same but for the compute buffer's resident share, measured in each process
        compute = sum(kinds.get("compute", 0) for kinds in local.placement.values())
        assert abs(isolated.memory_bytes() - local.memory_bytes()) <= compute
    finally:
        local.close()
    stats = isolated.stats()
    assert stats.slots == 2 and stats.running == 0 and stats.prompt_tokens > 0


def test_errors_before_generation_cross_the_process_boundary(isolated):
    with pytest.raises(InvalidRequest, match="n must be at least 1"):
        isolated.generate(PROMPT, CancelToken(), _Sink(), n=0)
    with pytest.raises(Exception) as info:
        list(stream(isolated, GenerationRequest(prompt="x " * 400, max_tokens=4)))
    assert type(info.value).__name__ == "ContextLengthExceeded" and info.value.n_ctx == 256
    with pytest.raises(InvalidRequest, match="embedding"):
        isolated.embed(["hi"])
    assert text_of(isolated)[1][0].finish_reason in ("stop", "length")  # still serving


def test_an_idle_model_process_does_not_wake_the_server(isolated, load):
    """With nothing running, the server's reader for a model process sleeps until the
    process speaks (it used to wake every 50 ms to look for cancellations): the event loop
    that reads it, or its reader thread."""
    text_of(isolated)  # served once, idle now
    readers = [t for t in threading.enumerate() if t.name == "hoshikage-proxy:tiny"]
    if load.loop is not None:
        assert not readers  # the loop reads
        readers = [load.loop.thread]
    (reader,) = readers
    status = f"/proc/self/task/{reader.native_id}/status"
    if not os.path.exists(status):
        pytest.skip("needs Linux's /proc")

    def wakes() -> int:
        with open(status) as f:
            return next(int(line.split()[1]) for line in f if line.startswith("voluntary"))

    before = wakes()
    time.sleep(1.0)
    assert wakes() - before <= 2
    assert text_of(isolated)[1][0].finish_reason in ("stop", "length")  # and it still serves


def test_read_on_a_loop_the_output_is_delivered_there_and_calls_must_not_wait_there(
    tiny_model_path,
):
    """Loaded for a loop, the model's output reaches its sinks on the loop's thread, with no
    reader thread; a call, which waits for an answer the loop reads, is refused there."""
    loop = _Loop()
    try:
        model = load_for(
            loop.loop, "tiny", str(tiny_model_path), LlamaOptions(n_ctx=256, isolation="process")
        )
        try:
            sink = _Sink()
            model.generate(PROMPT, CancelToken(), sink)
            assert sink.closed.wait(30) and sink.error is None
            assert sink.chunks[-1].finish_reason in ("stop", "length")
            assert sink.threads == {loop.thread}
            assert not [t for t in threading.enumerate() if t.name == "hoshikage-proxy:tiny"]

            async def on_the_loop():
                return model.tokenize("hi")

            with pytest.raises(RuntimeError, match="from another thread"):
                asyncio.run_coroutine_threadsafe(on_the_loop(), loop.loop).result(10)
            assert model.tokenize("hi")  # and from a thread, as ever
        finally:
            model.close()
    finally:
        loop.stop()


def test_cancel_reaches_the_child(long_isolated):
    cancel = CancelToken()
    seen = []
    for _index, chunk in stream(long_isolated, LONG, cancel):
        seen.append(chunk)
        if len(seen) == 3:
            cancel.cancel()
    assert seen[-1].finish_reason == "cancelled"
    assert seen[-1].completion_tokens < 4000


def test_a_load_error_in_the_child_is_a_load_error(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelLoadError, match="junk.gguf"):
        ProcessModel.load("junk", str(junk), LlamaOptions(isolation="process"))


def test_a_dead_child_fails_its_streams_and_reports_once(long_isolated):
    isolated = long_isolated
    failures = []
    isolated.on_failure(failures.append)
    child = psutil.Process(isolated._proc.pid)
    cancel = CancelToken()
    sink = _Sink()
    isolated.generate(LONG, cancel, sink)
    assert sink.first.wait(30)
    child.suspend()  # frozen mid-stream, then killed
    os.kill(child.pid, signal.SIGKILL)
    assert sink.closed.wait(10)
    assert isinstance(sink.error, ModelFailed)
    assert "killed by SIGKILL" in str(sink.error)
    deadline = time.monotonic() + 5
    while not failures and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(failures) == 1 and failures[0] is sink.error
    with pytest.raises(ModelFailed):
        isolated.tokenize("hi")
    with pytest.raises(ModelFailed):
        isolated.generate(PROMPT, CancelToken(), _Sink())


def _exited(process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_close_ends_the_child_and_what_still_runs(tiny_model_path, load):
    model = load("tiny", str(tiny_model_path), LlamaOptions(n_ctx=8192, isolation="process"))
    child = psutil.Process(model._proc.pid)
    sink = _Sink()
    model.generate(LONG, CancelToken(), sink)
    assert sink.first.wait(30)
    model.close()
    assert sink.closed.wait(10)
    assert sink.error is None or isinstance(sink.error, Cancelled)
    # close returns once the child has freed llama.cpp's buffers; it then writes its prompt
    # states to disk and exits on its own (it was seen running just after close under load).
    deadline = time.monotonic() + 30
    while not _exited(child):
        assert time.monotonic() < deadline, "the model process did not exit after close"
        time.sleep(0.05)
    with pytest.raises(Cancelled):
        model.generate(PROMPT, CancelToken(), _Sink())


def test_the_child_dies_with_its_parent(tiny_model_path, tmp_path):
    """No orphans: a server killed outright takes its model processes with it."""
    config = {
        "models": [
            {"name": "tiny", "path": str(tiny_model_path), "n_ctx": 256, "isolation": "process"}
        ]
    }
    with running_server(config) as server:
        r = httpx.post(
            server.base_url + "/v1/completions",
            json={"model": "tiny", "prompt": "hi", "max_tokens": 2},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        children = psutil.Process(server.process.pid).children()
        assert children, "the model should run in a child process"
        server.process.kill()
        server.process.wait(10)
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive


def test_server_survives_a_dead_model_process(tiny_model_path):
    config = {
        "server": {"concurrency": 4},
        "models": [
            {"name": "tiny", "path": str(tiny_model_path), "n_ctx": 256},
            {
                "name": "boxed",
                "path": str(tiny_model_path),
                "n_ctx": 8192,
                "parallel": 1,
                "isolation": "process",
            },
        ],
    }
    with running_server(config) as server:
        url = server.base_url
        # Greedy: this prompt runs to max_tokens on the tiny model (sampling could stop early).
        body = {
            "model": "boxed",
            "prompt": "Once upon a time",
            "max_tokens": 8000,
            "temperature": 0,
            "stream": True,
        }
        events = []
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                events.append(json.loads(line[6:]))
                if len(events) == 3:
                    (child,) = psutil.Process(server.process.pid).children()
                    child.suspend()  # frozen mid-stream, then killed
                    child.kill()
        error = events[-1].get("error")
        assert error, events[-3:]
        assert error["type"] == "server_error" and error["code"] == "model_failed"
        assert "Model 'boxed' failed" in error["message"] and "SIGKILL" in error["message"]
        assert server.get("/health")[0] == 200
        status = server.model_status("boxed", lambda m: m["state"] == "failed")
        assert "SIGKILL" in status["last_error"] and status["failed_at"]
        r = httpx.post(
            url + "/v1/completions",
            json={"model": "tiny", "prompt": "hi", "max_tokens": 4},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        # The next request loads it again, in a fresh process.
        r = httpx.post(
            url + "/v1/completions",
            json={"model": "boxed", "prompt": "hi", "max_tokens": 4},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert server.model_status("boxed", lambda m: m["state"] == "loaded")["last_error"] is None


class _Sink:
    def __init__(self):
        self.first = threading.Event()
        self.closed = threading.Event()
        self.error = None
        self.chunks = []
        self.threads = set()

    def put(self, index, chunk):
        self.chunks.append(chunk)
        self.threads.add(threading.current_thread())
        self.first.set()

    def close(self, error=None):
        self.error = error
        self.closed.set()

    def flush(self):
        pass


def test_embeddings_in_a_child_process(tiny_model_path):
    options = dict(n_ctx=256, embedding=True)
    local = LlamaCppModel.load("emb", str(tiny_model_path), LlamaOptions(**options))
    isolated = ProcessModel.load(
        "emb", str(tiny_model_path), LlamaOptions(isolation="process", **options)
    )
    try:
        expected = local.embed(["hello world", "good night"])
        got = isolated.embed(["hello world", "good night"])
        assert got.prompt_tokens == expected.prompt_tokens
        for vector, want in zip(got.vectors, expected.vectors, strict=True):
            assert vector == pytest.approx(want, abs=1e-6)
        with pytest.raises(InvalidRequest, match="embeddings"):
            isolated.generate(PROMPT, CancelToken(), _Sink())
    finally:
        local.close()
        isolated.close()


def test_a_hung_child_is_killed_and_reported_like_a_dead_one(tiny_model_path, load):
    """A child that stops answering without dying (SIGSTOP here; a wedged RPC call in life):
    a call waits ``call_timeout``, then the child is killed, the call and the running
    stream fail with ModelFailed, and the failure is reported once."""
    options = LlamaOptions(n_ctx=8192, parallel=1, isolation="process", call_timeout=2)
    model = load("tiny", str(tiny_model_path), options)
    try:
        failures = []
        model.on_failure(failures.append)
        sink = _Sink()
        model.generate(LONG, CancelToken(), sink)
        assert sink.first.wait(30)
        psutil.Process(model._proc.pid).suspend()
        started = time.monotonic()
        with pytest.raises(ModelFailed, match="call_timeout"):
            model.tokenize("hi")
        assert time.monotonic() - started < 15
        assert sink.closed.wait(10) and isinstance(sink.error, ModelFailed)
        assert "stopped answering" in str(sink.error)
        deadline = time.monotonic() + 5
        while not failures and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(failures) == 1
        assert model._proc.poll() is not None  # killed, not left frozen
    finally:
        model.close()


def test_a_stream_whose_child_hangs_fails_without_any_call(tiny_model_path, load):
    options = LlamaOptions(n_ctx=8192, parallel=1, isolation="process", call_timeout=2)
    model = load("tiny", str(tiny_model_path), options)
    try:
        sink = _Sink()
        model.generate(LONG, CancelToken(), sink)
        assert sink.first.wait(30)
        psutil.Process(model._proc.pid).suspend()
        assert sink.closed.wait(20), "the stream of a frozen child never ended"
        assert isinstance(sink.error, ModelFailed) and "call_timeout" in str(sink.error)
    finally:
        model.close()


def test_a_load_that_never_finishes_times_out(tiny_model_path):
    """A busy rpc-server accepts the connection and never answers: the load used to hang
    for good. Here a listener that never speaks stands in for it."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    options = LlamaOptions(n_ctx=256, parallel=1, rpc_servers=f"127.0.0.1:{port}", load_timeout=3)
    started = time.monotonic()
    try:
        with pytest.raises(ModelLoadError, match="load_timeout") as info:
            ProcessModel.load("tiny", str(tiny_model_path), options)
        assert time.monotonic() - started < 20
        assert f"127.0.0.1:{port}" in str(info.value)
    finally:
        listener.close()


def test_a_model_in_a_child_process_drafts_and_counts_its_drafts(isolated):
    looping = GenerationRequest(
        prompt="the cat sat on the mat the cat sat on the mat the cat",
        max_tokens=60,
        temperature=0,
        logit_bias={2: -100},
    )
    _texts, (last,) = text_of(isolated, looping)
    assert last.draft_accepted > 0 and last.draft_tokens >= last.draft_accepted
    stats = isolated.stats()
    assert (stats.draft_tokens, stats.draft_accepted) == (last.draft_tokens, last.draft_accepted)


def test_scoring_and_the_tokenizer_in_the_child(isolated, tiny_model_path):
    """The child serves the optional features too: the same scores as in process."""
    from hoshikage_core.protocol import (
        BlockingStream,
        CancelToken,
        ScorePrompt,
        Scorer,
        ScoreRequest,
        TokenCodec,
    )
    from hoshikage_llamacpp.lifecycle.model import LlamaCppModel

    assert isinstance(isolated, Scorer) and isinstance(isolated, TokenCodec)
    request = ScoreRequest(
        prompts=(ScorePrompt(prompt="the cat sat", continuations=(" on", " on the mat")),)
    )

    def scores(model):
        sink = BlockingStream()
        model.score(request, CancelToken(), sink)
        ((_index, result),) = list(sink)
        return result

    local = LlamaCppModel.load("tiny", str(tiny_model_path), LlamaOptions(n_ctx=256, parallel=2))
    try:
        assert list(scores(isolated).logprobs[0]) == pytest.approx(
            list(scores(local).logprobs[0]), abs=1e-4
        )
        tokens = isolated.encode("the cat", True, True)
        assert tokens == local.encode("the cat", True, True)
        assert isolated.token_bytes(tokens[1], True) == local.token_bytes(tokens[1], True)
        messages = ({"role": "user", "content": "hi"},)
        assert isolated.apply_template(messages) == local.apply_template(messages)
    finally:
        local.close()


def test_tool_call_deltas_cross_the_process_boundary(tiny_model_path):
    """Chunks are pickled to the server: their tool-call deltas (name first, then argument
    pieces) arrive as in-process, and the last chunk's whole call has the same id."""
    weather = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object"}},
    }
    request = GenerationRequest(
        messages=({"role": "user", "content": "weather?"},),
        tools=(weather,),
        grammar='root ::= "<tool_call>{\\"name\\": \\"get_weather\\", '
        '\\"arguments\\": {\\"city\\": \\"Kyoto\\"}}</tool_call>"',
        max_tokens=200,
        temperature=0,
    )
    options = LlamaOptions(n_ctx=1024, parallel=1, isolation="process")
    isolated = ProcessModel.load("tiny", str(tiny_model_path), options)
    local = LlamaCppModel.load("tiny", str(tiny_model_path), LlamaOptions(n_ctx=1024, parallel=1))
    try:
        seen = []
        for model in (isolated, local):
            chunks = [chunk for _, chunk in stream(model, request)]
            deltas = [d for chunk in chunks for d in chunk.tool_deltas or ()]
            (call,) = chunks[-1].tool_calls
            assert deltas[0].name == "get_weather" and deltas[0].id == call["id"]
            pieces = [d.arguments for d in deltas[1:]]
            assert len(pieces) > 1 and "".join(pieces) == call["function"]["arguments"]
            assert chunks[-1].finish_reason == "tool_calls"
            seen.append(("get_weather", call["function"]["arguments"], len(deltas)))
        assert seen[0] == seen[1]
    finally:
        isolated.close()
        local.close()


def test_a_model_process_computes_on_one_thread_so_openmp_keeps_spinning(gemma_model_path):
    """llama.cpp's CPU threads (OpenMP) meet at a barrier after every operation of a graph.
    libgomp spins there only while it manages no more threads than CPUs; a second thread
    that once computed (the load's warm-up, on the process's main thread) kept a team of its
    own, and every barrier then slept in the kernel: 200 context switches a token, and
    Gemma 3 270M 16 % slower. Loads now compute on a thread that ends (:mod:`.threads`)."""
    cpus = len(os.sched_getaffinity(0))
    if cpus < 2:
        pytest.skip("one CPU: no OpenMP team to throttle")
    model = ProcessModel.load(
        "gemma",
        str(gemma_model_path),
        LlamaOptions(n_ctx=512, parallel=1, n_threads=cpus, isolation="process"),
    )
    try:
        text_of(model, GenerationRequest(prompt="Hello", max_tokens=4, temperature=0))

        def switches() -> int:
            total = 0
            for task in psutil.Process(model.pid).threads():
                with open(f"/proc/{model.pid}/task/{task.id}/status") as f:
                    total += next(
                        int(line.split()[1]) for line in f if line.startswith("voluntary")
                    )
            return total

        before = switches()
        request = GenerationRequest(
            prompt="Once upon a time", max_tokens=64, temperature=0, logit_bias={1: -100, 106: -100}
        )
        (text,), _ = text_of(model, request)
        per_token = (switches() - before) / 64
        assert text and per_token < 20, f"{per_token:.0f} context switches a token"
    finally:
        model.close()
