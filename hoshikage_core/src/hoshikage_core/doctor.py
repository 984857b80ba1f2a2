"""Checks reported by ``hoshikage doctor``. Plugins add theirs through ``doctor_checks``."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class Check:
    #: Short label, e.g. "GPU offload" or "libcudart".
    name: str
    #: True: fine; False: a problem (doctor exits non-zero); None: information only.
    ok: bool | None
    #: What was found, e.g. "found at /usr/local/cuda/lib64/libcudart.so.12".
    detail: str = ""
    #: What to do about it, when ``ok`` is False (or worth knowing when None).
    hint: str = ""
    #: Which plugin reported it.
    source: str = ""
