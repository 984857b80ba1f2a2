"""Whether a model process would run the code its server runs.

Why. A model process (:mod:`.isolation`) is a new Python that imports Hoshikage's engine
from the disk when a model loads. When the files change under a running server (a ``git
pull`` over ``make serve``'s editable install, a ``pip install -U``), the server's code is
what was on the disk when it started and the model process's is what is there now: the
messages between them no longer match, and every request failed with an internal error
until the server was restarted.

How. The server takes a fingerprint of the sources its model processes import (the
``hoshikage_core`` and ``hoshikage_llamacpp`` packages: each ``.py`` file's path, size and
modification time; about 2 ms) once, when this backend's plugin is imported at its start,
and gives it to each model process in :data:`ENV`. A model process takes the fingerprint
again before anything else; when it differs, it says :data:`STALE` on its output and exits
with :data:`STALE_EXIT` at once, and the load fails with that message: restart the server.
Nothing else changes: a process that finds the same fingerprint goes on as before.
"""

from __future__ import annotations

import hashlib
import os

#: The environment variable that carries the server's fingerprint to its model processes.
ENV = "HOSHIKAGE_SOURCES"
#: The exit status of a model process that found other sources than its server's
#: (``EX_CONFIG``): no crash, so no safe mode and no back-off; the load fails with :data:`STALE`.
STALE_EXIT = 78
STALE = (
    "Hoshikage's files changed on the disk after this server started (an upgrade, or a git "
    "pull): a model process would run other code than the server. Restart the server "
    "(hoshikage serve) to load models again."
)
_PACKAGES = ("hoshikage_core", "hoshikage_llamacpp")
_taken: str | None = None


def fingerprint() -> str | None:
    """The sources' fingerprint now: a hash of every ``.py`` file's path, size and
    modification time in :data:`_PACKAGES`; None when a package cannot be found or read."""
    import importlib.util

    digest = hashlib.blake2b(digest_size=16)
    try:
        for package in _PACKAGES:
            spec = importlib.util.find_spec(package)
            roots = list(spec.submodule_search_locations or ()) if spec else []
            if not roots:
                return None
            for root in roots:
                for folder, dirs, files in os.walk(root):
                    dirs.sort()
                    for name in sorted(files):
                        if name.endswith(".py"):
                            path = os.path.join(folder, name)
                            stat = os.stat(path)
                            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    except (OSError, ImportError, ValueError):
        return None
    return digest.hexdigest()


def take() -> str | None:
    """The server's fingerprint: taken at the first call (the plugin's import, at the
    server's start), the same from then on."""
    global _taken
    if _taken is None:
        _taken = fingerprint() or ""
    return _taken or None


def stale() -> bool:
    """In a model process: whether its sources differ from its server's (:data:`ENV`; a
    process started without it, or whose sources cannot be read, is never stale)."""
    expected = os.environ.get(ENV)
    if not expected:
        return False
    now = fingerprint()
    return now is not None and now != expected
