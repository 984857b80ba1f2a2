"""Keeps llama.cpp's C logging quiet and useful.

llama-cpp-python's own callback maps an outdated level enum and prints some messages even
with ``verbose=False``. This one sends them to the ``hoshikage.llamacpp`` logger: errors at
ERROR, warnings at WARNING, the rest (load banners, tensor dumps) at DEBUG. The logger has a
NullHandler, so nothing reaches the terminal unless the application configures logging.

:func:`capture` also collects the lines logged by the current thread, which is how the
loader learns the sizes of the buffers llama.cpp allocated for a context.
"""

from __future__ import annotations

import contextlib
import logging
import threading

logger = logging.getLogger("hoshikage.llamacpp")
logger.addHandler(logging.NullHandler())

# enum ggml_log_level in ggml.h
_LEVELS = {3: logging.WARNING, 4: logging.ERROR}
_GGML_CONT = 5
_callback = None  # the ctypes callback must outlive every call into llama.cpp
_local = threading.local()


def install() -> None:
    """Route llama.cpp's log through :data:`logger` (once per process)."""
    global _callback
    if _callback is not None:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback
    def forward(level, text, _user_data):
        line = text.decode("utf-8", errors="replace")
        if level != _GGML_CONT:
            _local.level = _LEVELS.get(level, logging.DEBUG)
        lines = getattr(_local, "lines", None)
        if lines is not None:
            lines.append(line)
        level_now = getattr(_local, "level", logging.DEBUG)
        if logger.isEnabledFor(level_now):
            logger.log(level_now, "%s", line.rstrip("\n"))

    _callback = forward
    llama_cpp.llama_log_set(_callback, None)


_mtmd_installed = False


def install_mtmd() -> None:
    """Route the multimodal library's log (clip.cpp, mtmd) the same way (once per process)."""
    global _mtmd_installed
    install()
    if _mtmd_installed:
        return
    from llama_cpp import mtmd_cpp

    mtmd_cpp.mtmd_helper_log_set(_callback, None)
    _mtmd_installed = True


@contextlib.contextmanager
def capture():
    """Collect the lines llama.cpp logs from this thread inside the ``with`` block."""
    lines: list[str] = []
    _local.lines = lines
    try:
        yield lines
    finally:
        _local.lines = None
