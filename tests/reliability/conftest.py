"""Reliability tests: a real ``hoshikage serve`` on loopback, real llama.cpp, bounded time."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("litestar")


def server_threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise RuntimeError("no Threads line")


def server_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line")


def tree_rss(pid: int) -> int:
    """The resident bytes of the server and its model processes together."""
    import psutil

    server = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [server, *server.children(recursive=True)])
