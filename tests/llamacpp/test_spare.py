"""The spare model process (:mod:`hoshikage_llamacpp.lifecycle.spare`) on the tiny model, in
real processes: after an eviction the next model process is started ahead, beside a load,
and the model loaded after the next eviction runs in it; it is taken before it is ready
too (stopped by a real SIGSTOP); not by a model whose process would run otherwise; and it
goes with the last model process.

The pool tells the backend of its unloads through the ``model_unloaded`` hook; these tests
call :func:`~hoshikage_llamacpp.lifecycle.spare.unloaded` as that hook does."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest

pytest.importorskip("llama_cpp")

from hoshikage_llamacpp.lifecycle import spare  # noqa: E402
from hoshikage_llamacpp.lifecycle.isolation import ProcessModel  # noqa: E402
from hoshikage_llamacpp.options import LlamaOptions  # noqa: E402

from tests.llamacpp.test_isolation import PROMPT, text_of  # noqa: E402

OPTIONS = LlamaOptions(n_ctx=256, parallel=1, isolation="process")


@pytest.fixture(autouse=True)
def no_spare_around():
    spare.unloaded("shutdown")  # what the pool says last: no spare is left behind
    yield
    spare.unloaded("shutdown")


def spares() -> list[psutil.Process]:
    """This process's model processes started as spares: a model process's command line
    without a model's name ends with its parent's pid (it stays so once a model runs there)."""
    found = []
    for child in psutil.Process().children():
        try:
            cmdline = child.cmdline()
        except psutil.Error:
            continue
        if "hoshikage_llamacpp.lifecycle.child" in cmdline and cmdline[-1] == str(os.getpid()):
            found.append(child)
    return found


def one_spare(besides: tuple[int, ...] = (), timeout: float = 30) -> psutil.Process:
    """The one spare started, besides the processes ``besides`` (spares taken by models)."""
    deadline = time.monotonic() + timeout
    while not (found := [p for p in spares() if p.pid not in besides]):
        assert time.monotonic() < deadline, "no spare model process was started"
        time.sleep(0.005)
    (process,) = found
    return process


def maps(process: psutil.Process) -> str:
    with open(f"/proc/{process.pid}/maps") as f:
        return f.read()


def imported(process: psutil.Process) -> bool:
    """Whether ``process`` has llama.cpp's library mapped: its imports are done."""
    return "libllama" in maps(process)


def nice_values(process: psutil.Process) -> set[int]:
    """The nice value of each thread of ``process`` (field 19 of ``/proc/PID/task/TID/stat``)."""
    values = set()
    for task in os.listdir(f"/proc/{process.pid}/task"):
        with open(f"/proc/{process.pid}/task/{task}/stat") as f:
            values.add(int(f.read().rpartition(")")[2].split()[16]))
    return values


def gone(process: psutil.Process, timeout: float = 10) -> bool:
    """Whether ``process`` exits within ``timeout`` (reaped by the thread that started it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def test_no_spare_where_no_model_was_evicted(tiny_model_path):
    model = ProcessModel.load("tiny", str(tiny_model_path), OPTIONS)
    try:
        time.sleep(0.5)
        assert spares() == []
    finally:
        model.close()


def test_after_an_eviction_the_next_model_runs_in_the_spare(tiny_model_path, tmp_path):
    other = tmp_path / "other.gguf"
    other.write_bytes(tiny_model_path.read_bytes())
    first = ProcessModel.load("first", str(tiny_model_path), OPTIONS)
    expected, _ = text_of(first)
    first.close()
    spare.unloaded("evicted")  # a switch: spares are wanted from now on

    second = ProcessModel.load("second", str(other), OPTIONS)  # starts the spare beside it
    ready = one_spare()
    deadline = time.monotonic() + 30
    while not imported(ready):
        assert time.monotonic() < deadline, "the spare did not import llama.cpp"
        time.sleep(0.05)
    assert str(tiny_model_path) not in maps(ready)  # no model yet
    second.close()
    spare.unloaded("evicted")

    third = ProcessModel.load("third", str(tiny_model_path), OPTIONS)
    try:
        assert third.pid == ready.pid
        assert str(tiny_model_path) in maps(ready)
        assert text_of(third)[0] == expected
        # Its imports ran on a thread at nice 19, gone now, which started no other thread:
        # the model runs at the usual priority.
        assert nice_values(ready) == {0}
        following = one_spare(besides=(ready.pid,))  # the next, started with this load
    finally:
        third.close()
    spare.unloaded("idle")  # the last model process went idle: its spare goes too
    assert gone(following)
    assert gone(ready)
    assert spares() == []


def test_a_spare_still_starting_is_taken_and_the_load_waits_for_it(tiny_model_path):
    spare.unloaded("evicted")
    spare.started()  # as a load's would
    process = one_spare()
    process.suspend()  # a real SIGSTOP, before its imports
    try:
        assert not imported(process)
        loaded: list[ProcessModel] = []
        loading = threading.Thread(
            target=lambda: loaded.append(ProcessModel.load("tiny", str(tiny_model_path), OPTIONS))
        )
        loading.start()
        loading.join(1.0)
        waited = loading.is_alive()
    finally:
        process.resume()
    loading.join(60)
    (model,) = loaded
    try:
        assert waited, "the load should wait for the stopped spare"
        assert model.pid == process.pid
        out, last = text_of(model)
        assert out[0] and last[0].finish_reason in ("stop", "length")
    finally:
        model.close()


def test_a_load_waits_for_a_spare_whose_process_is_starting(tiny_model_path, monkeypatch):
    # Starting a process takes milliseconds, more on a busy machine: a load in that moment
    # takes the spare once it is started, rather than starting a second process beside it.
    spawn = spare.spawn

    def slow(env, name=None):
        started = spawn(env, name)
        if name is None:  # the spare's: the process runs, its start is not over yet
            time.sleep(0.5)
        return started

    monkeypatch.setattr(spare, "spawn", slow)
    spare.unloaded("evicted")
    spare.started()
    process = one_spare()
    model = ProcessModel.load("tiny", str(tiny_model_path), OPTIONS)
    try:
        assert model.pid == process.pid
    finally:
        model.close()
    spare.unloaded("request")  # the last model process went: the next spare goes too
    assert all(gone(p) for p in spares())


def test_a_spare_started_with_another_environment_is_not_taken(tiny_model_path, monkeypatch):
    spare.unloaded("evicted")
    spare.started()
    process = one_spare()
    monkeypatch.setenv("HOSHIKAGE_SPARE_TEST", "changed")  # a model process would see it
    model = ProcessModel.load("tiny", str(tiny_model_path), OPTIONS)
    try:
        assert model.pid != process.pid
        assert process.is_running()  # kept: it may serve a later load
    finally:
        model.close()
    spare.unloaded("request")
    assert gone(process)


def test_a_spare_killed_while_it_waits_is_not_taken(tiny_model_path):
    spare.unloaded("evicted")
    spare.started()
    process = one_spare()
    os.kill(process.pid, signal.SIGKILL)
    assert gone(process)
    model = ProcessModel.load("tiny", str(tiny_model_path), OPTIONS)
    try:
        assert model.pid != process.pid
        out, _ = text_of(model, PROMPT)
        assert out[0]
    finally:
        model.close()
