"""A batch row's logits as numpy sees them, and the log of their softmax's denominator.

Imported by the engine thread's code, inside its functions: numpy and the native binding
load with the first decode, not with the package.
"""

from __future__ import annotations

import math

import numpy as np

from .native import lib


def row_logits(ctx, row: int, n_vocab: int):
    """The logits of batch row ``row`` (a view of llama.cpp's buffer, valid until the next
    decode)."""
    return np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, row), shape=(n_vocab,))


def log_total(logits) -> float:
    """``log(sum(exp(logits)))``, computed stably: a token's log-probability is its logit
    minus this."""
    peak = float(logits.max())
    return peak + math.log(float(np.exp(logits - peak).sum()))
