"""A batch row's logits as numpy sees them, and the log of their softmax's denominator.

Imported by the engine thread's code, inside its functions: numpy and the native binding
load with the first decode, not with the package.

The views are kept by address. Making one (``np.ctypeslib.as_array``) parses a buffer
format in Python: 2.5 µs in a warm loop, up to ~75 µs right after a decode, with the
weights just streamed through the caches; a view found again costs a dictionary lookup.
Keeping them cut the engine's greedy step outside ``llama_decode`` from ~425 to ~380 µs on
Gemma 3 270M (2-core EPYC). A view holds no memory of its own: it is valid exactly while
llama.cpp says the row at its address is (until the next decode), whichever buffer that
address belongs to now.
"""

from __future__ import annotations

import ctypes
import math

import numpy as np

from .native import lib

#: Views kept at most; past it they are dropped and made again as needed (a step asks for
#: one address per row with logits, and the same ones step after step).
VIEWS = 256

_views: dict[tuple[int, int, int], np.ndarray] = {}


def rows_at(address: int | None, rows: int, n_vocab: int):
    """``rows`` consecutive rows of ``n_vocab`` logits from ``address`` (a view of
    llama.cpp's buffer, shape ``(rows, n_vocab)``)."""
    if not address:
        raise ValueError("llama.cpp has no logits for that batch row")
    key = (address, rows, n_vocab)
    view = _views.get(key)
    if view is None:
        if len(_views) >= VIEWS:
            _views.clear()
        floats = (ctypes.c_float * (rows * n_vocab)).from_address(address)
        view = _views[key] = np.ctypeslib.as_array(floats).reshape(rows, n_vocab)
    return view


def row_logits(ctx, row: int, n_vocab: int):
    """The logits of batch row ``row`` (a view of llama.cpp's buffer, valid until the next
    decode)."""
    return rows_at(lib.logits_address(ctx, row), 1, n_vocab)[0]


def log_total(logits) -> float:
    """``log(sum(exp(logits)))``, computed stably: a token's log-probability is its logit
    minus this."""
    peak = float(logits.max())
    return peak + math.log(float(np.exp(logits - peak).sum()))
