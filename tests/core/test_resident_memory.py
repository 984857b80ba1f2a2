"""``rss_bytes`` in the status: the process's resident memory now, which the web page charts."""

from __future__ import annotations

import builtins
import sys

import pytest

from hoshikage_core import runtime as runtime_mod


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_resident_bytes_follows_the_process_memory():
    before = runtime_mod.resident_bytes()
    assert before > 1024 * 1024
    block = bytearray(64 * 1024 * 1024)
    block[::4096] = b"\1" * len(block[::4096])  # touch every page: it becomes resident
    grown = runtime_mod.resident_bytes()
    assert grown - before > 48 * 1024 * 1024
    del block


def test_resident_bytes_without_proc(monkeypatch):
    real_open = builtins.open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc)
    monkeypatch.setitem(sys.modules, "psutil", None)  # not installed: no figure, no error
    assert runtime_mod.resident_bytes() is None


async def test_status_carries_rss_bytes(make_runtime):
    rt = await make_runtime()
    try:
        status = rt.status()
        assert status["rss_bytes"] is None or status["rss_bytes"] > 0
        if sys.platform.startswith("linux"):
            assert status["rss_bytes"] > 0
    finally:
        await rt.stop()
