"""A token's bytes, as llama.cpp's ``llama_token_to_piece`` writes them."""

from __future__ import annotations

import ctypes

from .native import lib


def token_piece(vocab, token: int, special: bool, buf) -> bytes:
    """The bytes ``token`` stands for, written into ``buf`` (a ctypes string buffer; a
    longer piece gets a buffer of its own). ``special``: a control token as its text, else
    as nothing."""
    n = lib.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    if n < 0:
        big = ctypes.create_string_buffer(-n)
        n = lib.llama_token_to_piece(vocab, token, big, -n, 0, special)
        return big.raw[:n]
    return buf.raw[:n]
