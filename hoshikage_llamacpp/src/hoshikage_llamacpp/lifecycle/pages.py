"""Zero pages given back: a model process holds its KV cache's memory as it fills.

llama.cpp clears a context's KV cache when it creates it (``ggml_backend_buffer_clear``),
and once more after the warm-up (``llama_memory_clear``), so every page of it is resident
from the load on: 16,384 cells are 108 MiB for Gemma 3 270M and 360 MiB for SmolLM2-135M,
held by a model that has read a few hundred tokens. An anonymous private page that holds
only zeros reads the same after ``madvise(MADV_DONTNEED)``, and the kernel gives it a
page again on the first write, so the model process hands those pages back once its load
is done (:func:`give_back`): the cache is then resident as its cells are written, as the
weights are as they are read.

Safe because nothing else writes then. A page is given back only when it was resident and
held only zeros the moment before; between that check and the ``madvise`` only this thread
runs (a model process loads on one thread, and nothing else of it runs Python or calls
llama.cpp yet), and the calls in between allocate only Python's small objects, whose pages
are never all zeros. Only the memory mapped during the load is looked at, never a GPU
build's (pinned host buffers are the device's too) and never locked memory. In the
server's own process (``isolation = "none"``) it is not done: other threads write there.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys

#: Pages looked at together: one check and one ``madvise`` each.
CHUNK_PAGES = 16
_MADV_DONTNEED = 4


def may_give_back(options) -> bool:
    """Whether a model process with ``options`` gives its zero pages back: on Linux, with
    no locked memory and a build of llama.cpp without a GPU backend."""
    if not sys.platform.startswith("linux") or options.use_mlock:
        return False
    from ..llama.build import is_gpu_build

    return not is_gpu_build()


def mapped() -> list[tuple[int, int]]:
    """This process's anonymous private writable address ranges (Linux), else none."""
    out = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split()
                # start-end perms offset dev inode [path]: no path, inode 0, "rw-p"
                if len(fields) == 5 and fields[1] == "rw-p" and fields[4] == "0":
                    start, end = fields[0].split("-")
                    out.append((int(start, 16), int(end, 16)))
    except OSError:
        return []
    return out


def _new(before: list[tuple[int, int]], after: list[tuple[int, int]]):
    """The parts of ``after``'s ranges that no range of ``before`` covers."""
    before = sorted(before)
    for start, end in after:
        at = start
        for b_start, b_end in before:
            if b_end <= at or b_start >= end:
                continue
            if b_start > at:
                yield at, b_start
            at = max(at, b_end)
            if at >= end:
                break
        if at < end:
            yield at, end


def give_back(before: list[tuple[int, int]]) -> int:
    """Give the kernel back every resident page holding only zeros in the anonymous memory
    mapped since ``before`` (:func:`mapped`, taken before the load); the bytes given back.
    Call it only while no other thread of this process writes memory."""
    if not sys.platform.startswith("linux") or not before:
        return 0
    page = os.sysconf("SC_PAGE_SIZE")
    libc = ctypes.PyDLL(None)  # holds the GIL through each call
    madvise, mincore, memcmp = libc.madvise, libc.mincore, libc.memcmp
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    madvise.restype = mincore.restype = memcmp.restype = ctypes.c_int
    size = CHUNK_PAGES * page
    zeros = mmap.mmap(-1, size)  # a mapping of its own: read, never written
    zero = ctypes.addressof(ctypes.c_char.from_buffer(zeros))
    given = 0
    try:
        for start, end in list(_new(before, mapped())):
            pages = (end - start) // page
            resident = mmap.mmap(-1, max(pages, 1))  # mincore's answer, one byte a page
            vector = ctypes.addressof(ctypes.c_char.from_buffer(resident))
            try:
                if mincore(start, end - start, vector) != 0:
                    continue
                # chunks at whole multiples of their size, as huge pages are
                first = 0
                while first < pages:
                    count = min(CHUNK_PAGES - (start // page + first) % CHUNK_PAGES, pages - first)
                    address, length = start + first * page, count * page
                    whole = resident.find(b"\x00", first, first + count) < 0
                    first += count
                    if (
                        whole  # every page resident: never one the kernel has yet to give
                        and memcmp(address, zero, length) == 0
                        and madvise(address, length, _MADV_DONTNEED) == 0
                    ):
                        given += length
            finally:
                resident.close()
    finally:
        zeros.close()
    return given
