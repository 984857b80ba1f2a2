"""How far a model's load has got, told by the backend while ``create_backend`` runs.

The pool calls ``create_backend`` in a worker thread inside :func:`reporting`; a backend
calls :func:`reporter` on that thread to get the function to call with the share loaded
(0.0 to 1.0), or None when nobody listens. No hook signature changes, and a backend that
never reports simply shows no progress.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

_local = threading.local()


@contextlib.contextmanager
def reporting(report: Callable[[float], None]) -> Iterator[None]:
    previous = getattr(_local, "report", None)
    _local.report = report
    try:
        yield
    finally:
        _local.report = previous


def reporter() -> Callable[[float], None] | None:
    """The current load's progress callback on this thread, or None."""
    return getattr(_local, "report", None)
