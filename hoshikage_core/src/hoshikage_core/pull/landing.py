"""One file onto the disk, whole and verified, or not at all.

:func:`land` downloads to ``<target>.partial`` beside the target, resumes an existing
partial file with ``Range`` (after Ctrl-C, a killed server or a dropped connection; a server
that ignores ranges answers 200 and the file restarts cleanly), fsyncs it, checks its
SHA-256, and only then renames it into place. A file at its final path has therefore always
been verified; a partial one is never served. A mismatch deletes the partial file and is a
:class:`Corrupt` error; a full disk deletes it too and is a :class:`DiskFull` naming the need.

Two pulls of one file share it: in this process a lock per target, across processes an
exclusive ``flock`` on ``<target>.partial.lock`` (an empty file left beside the target,
removed with it). The second waits, then finds the file there.

The bytes come from a *transfer*: ``transfer(url, file, offset, on_bytes)`` appends from
``offset`` to ``file`` (see :mod:`.hub` and :mod:`.registry`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import attrs

from ..errors import HoshikageError

#: Free space kept beyond a download's need (the filesystem's own reserve aside).
MARGIN = 50_000_000
_CHUNK = 1024 * 1024


class PullError(HoshikageError):
    """A pull that cannot go on, with what to do about it."""

    code = "pull_failed"
    #: The HTTP status the API answers it with.
    http_status = 502


class Corrupt(PullError):
    code = "digest_mismatch"
    http_status = 502


class DiskFull(PullError):
    code = "disk_full"
    http_status = 507


class Cancelled(PullError):
    code = "pull_cancelled"
    http_status = 499


@attrs.frozen(kw_only=True)
class Blob:
    """A file to fetch: where from, where to, and what it must hash to."""

    url: str
    target: Path
    #: Lower-case hex SHA-256 the file must have, or None when the hub gives none.
    sha256: str | None
    size: int | None


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def partial_of(target: Path) -> Path:
    return target.with_name(target.name + ".partial")


def check_space(folder: Path, need: int) -> None:
    """DiskFull, naming the need and the space available, unless ``need`` bytes fit."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if need + MARGIN > free:
        raise DiskFull(
            f"Not enough disk space in {folder}: the download needs {human(need)} "
            f"(plus {human(MARGIN)} kept free) and {human(free)} is available. "
            "Free some space or set [pull].dir to a larger disk."
        )


def remaining(blob: Blob) -> int:
    """Bytes still to fetch for ``blob`` (0 once it is in place)."""
    if blob.target.exists():
        return 0
    if blob.size is None:
        return 0
    try:
        have = partial_of(blob.target).stat().st_size
    except OSError:
        have = 0
    return max(0, blob.size - have)


_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(target: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(str(target), threading.Lock())


def sha256_of(path: Path, cancel: threading.Event | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            if cancel is not None and cancel.is_set():
                raise Cancelled("The pull was cancelled.")
            digest.update(chunk)
    return digest.hexdigest()


def land(
    blob: Blob,
    transfer: Callable[..., None],
    *,
    on_bytes: Callable[[int], None] = lambda n: None,
    on_verify: Callable[[], None] = lambda: None,
    cancel: threading.Event | None = None,
) -> bool:
    """Fetch ``blob`` to its target (see the module docstring). True when it was fetched
    here, False when it was there already (or another pull landed it meanwhile)."""
    import fcntl

    target = blob.target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock_for(target):
        if target.exists():
            return False
        partial = partial_of(target)
        with open(str(partial) + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if target.exists():  # another process landed it while we waited
                    return False
                _fetch(blob, partial, transfer, on_bytes, on_verify, cancel)
                os.replace(partial, target)
                _fsync_dir(target.parent)
                return True
            finally:
                # The lock file stays (empty): unlinking it while another process waits on
                # it would let a third lock a new one and write the same partial file.
                fcntl.flock(lock, fcntl.LOCK_UN)


def _fetch(blob, partial: Path, transfer, on_bytes, on_verify, cancel) -> None:
    offset = partial.stat().st_size if partial.exists() else 0
    if blob.size is not None and offset > blob.size:  # not ours: start again
        partial.unlink()
        offset = 0
    if blob.size is not None:
        check_space(partial.parent, blob.size - offset)
    if offset:
        on_bytes(offset)
    try:
        with open(partial, "ab") as f:
            if blob.size is None or offset < blob.size:
                transfer(blob.url, f, offset, on_bytes)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            partial.unlink(missing_ok=True)
            raise DiskFull(
                f"The disk filled up while writing {partial.name} in {partial.parent} "
                f"({human(blob.size or 0)} needed); the partial file was removed. "
                "Free some space and pull again."
            ) from exc
        raise
    size = partial.stat().st_size
    if blob.size is not None and size != blob.size:
        # A server that sent more or less than it said: nothing to resume from.
        partial.unlink(missing_ok=True)
        raise Corrupt(
            f"{blob.target.name}: received {size} bytes, expected {blob.size}; "
            "the partial file was removed. Pull again."
        )
    if blob.sha256:
        on_verify()
        got = sha256_of(partial, cancel)
        if got != blob.sha256.lower():
            partial.unlink(missing_ok=True)
            raise Corrupt(
                f"{blob.target.name}: SHA-256 mismatch (expected {blob.sha256}, got {got}); "
                "the download was deleted and nothing is served from it. Pull again; if it "
                "happens again the mirror or hub serves a corrupt file."
            )


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
