"""The llama.cpp functions the engine calls per token, bound so that they keep the GIL.

llama-cpp-python binds every function through ``ctypes.CDLL``, which releases the GIL for
the call and takes it back afterwards. For ``llama_decode`` that is right: other threads
(the event loop) run while the model computes. For the short calls made per token and per
sequence (sampling, the end-of-generation test, a token's bytes) it is a trap: each return
must win the GIL back, and while the event loop holds it the engine thread, and with it the
whole batch, waits up to the interpreter's switch interval. Measured on Gemma 3 270M with
four streams over HTTP, those hand-overs cost about a quarter of the aggregate throughput.
The same symbols bound through ``ctypes.PyDLL`` run with the GIL held: a few microseconds
(the sampler's pass over the vocabulary, well under a millisecond) without a hand-over.

A call whose cost grows with the request must not come through here: with the GIL held it
stops the event loop for as long as it runs (``/health`` took 16.7 s while a grammar of a
100,000-value ``enum`` filtered a vocabulary). :mod:`.sampling` therefore makes its grammar
calls through llama-cpp-python's own binding whenever they can be long.
"""

from __future__ import annotations

import ctypes
import functools

#: Called per token or per sequence; all short. ``llama_decode`` is not among them.
PER_TOKEN = (
    "llama_sampler_sample",
    "llama_sampler_apply",
    "llama_sampler_accept",
    "llama_vocab_is_eog",
    "llama_token_to_piece",
    "llama_get_logits_ith",
)


@functools.cache
def _bound() -> dict:
    import llama_cpp
    from llama_cpp import llama_cpp as raw

    lib = ctypes.PyDLL(raw._lib._name)
    out = {}
    for name in PER_TOKEN:
        cdll_func = getattr(llama_cpp, name)
        func = getattr(lib, name)
        func.argtypes = cdll_func.argtypes
        func.restype = cdll_func.restype
        out[name] = func
    # The same function again, returning the row's address as an int (None for NULL): what
    # :mod:`.logits` keys its views by.
    address = lib["llama_get_logits_ith"]  # a new function object, not the one above
    address.argtypes = out["llama_get_logits_ith"].argtypes
    address.restype = ctypes.c_void_p
    out["logits_address"] = address
    return out


class _Native:
    """``native.lib.llama_sampler_sample(...)``: the GIL-holding binding where there is
    one, llama-cpp-python's own otherwise; ``native.lib.logits_address(ctx, i)``:
    ``llama_get_logits_ith`` as an address (an int, None for NULL)."""

    def __getattr__(self, name: str):
        import llama_cpp

        func = _bound().get(name) or getattr(llama_cpp, name)
        setattr(self, name, func)
        return func


lib = _Native()
