"""Prompt states kept on disk across an unload, so the first turn after an idle unload
reads only its new tokens.

When a model unloads, the KV states of its most recently used slots and of its RAM prompt
cache (:mod:`.prompt_cache`) are copied out of the context, the context and the weights
are freed, and only then are the copies written, by a thread of their own, to
``$XDG_CACHE_HOME/hoshikage/prompts/<model>/<key>/`` (else ``~/.cache/...``; see :func:`root`), newest first,
up to ``cache_disk`` MiB. The key is a hash of the model file's identity (real path, size,
modification time) and of the options that shape the KV cache, so a changed file or option
finds an empty folder, and the folders of older keys are removed. The next load indexes the
folder (the token lists only); a prompt that starts with a saved prefix gets that state
restored into its slot and reads only the rest. Files are evicted oldest first. A corrupt or
truncated file is skipped with a warning and removed, never loaded into llama.cpp.

A file: ``MAGIC``, a 4-byte little-endian header length, a JSON header (``n_tokens``,
``state``: the state's byte count, ``checkpoints``: ``[[n_tokens, pos_min, bytes], ...]``),
the tokens as int32, the state, then each sliding-window checkpoint's bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import struct
import threading
from pathlib import Path

import attrs

from ..prefix import longest

log = logging.getLogger("hoshikage.llamacpp.disk_cache")

MAGIC = b"HKPROMPT1\n"
SUFFIX = ".state"
#: Options that do not change what a saved state means.
_NOT_IN_KEY = frozenset(
    {
        "cache_ram",
        "cache_disk",
        "max_tokens",
        "seed",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "repeat_penalty",
        "isolation",
        "extra_buffers",
        "load_timeout",
        "call_timeout",
        "rpc_load_timeout",
        "rpc_call_timeout",
        "n_threads",
        "n_threads_batch",
    }
)
#: Writers still running, by folder: a load of the same model waits for its writer.
_writers: dict[Path, threading.Thread] = {}
_writers_lock = threading.Lock()


def root() -> Path:
    """``$HOSHIKAGE_PROMPT_CACHE``, else ``$XDG_CACHE_HOME/hoshikage/prompts``, else
    ``~/.cache/hoshikage/prompts``."""
    if explicit := os.environ.get("HOSHIKAGE_PROMPT_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hoshikage" / "prompts"


def cache_key(path: str, options) -> str | None:
    """The folder name for ``path`` loaded with ``options`` (the model's
    :class:`~hoshikage_llamacpp.options.LlamaOptions`); None if the file is missing."""
    try:
        real = os.path.realpath(os.path.expanduser(path))
        st = os.stat(real)
    except OSError:
        return None
    try:
        import llama_cpp

        version = llama_cpp.__version__
    except ImportError:
        version = "?"
    shaping = {k: v for k, v in attrs.asdict(options).items() if k not in _NOT_IN_KEY}
    ident_parts = [real, st.st_size, st.st_mtime_ns, version, shaping]
    if options.mmproj:  # an image's KV is the projector's: a changed projector is a new key
        try:
            proj = os.stat(os.path.realpath(os.path.expanduser(options.mmproj)))
            ident_parts.append([proj.st_size, proj.st_mtime_ns])
        except OSError:
            return None
    ident = json.dumps(ident_parts, sort_keys=True, default=str)
    return hashlib.sha256(ident.encode()).hexdigest()[:20]


def model_folder(name: str) -> Path:
    return root() / (re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "_")


def count(name: str, path: str, options) -> int:
    """Cached prefixes on disk for this model as it would load now (for status)."""
    if options.cache_disk <= 0 or options.embedding:
        return 0
    key = cache_key(path, options)
    if key is None:
        return 0
    folder = model_folder(name) / key
    try:
        return sum(1 for p in folder.iterdir() if p.name.endswith(SUFFIX))
    except OSError:
        return 0


@attrs.define
class Saved:
    """One state to write: the tokens it holds, its bytes and its checkpoints
    (``(n_tokens, pos_min, data)``)."""

    tokens: list[int]
    data: object  # bytes-like
    checkpoints: list[tuple[int, int, object]] = attrs.field(factory=list)

    @property
    def size(self) -> int:
        return len(memoryview(self.data)) + sum(len(memoryview(c[2])) for c in self.checkpoints)


@attrs.define
class Entry:
    """A state file, as indexed: its tokens and where it is."""

    tokens: list[int]
    path: Path
    header_bytes: int
    state_bytes: int
    checkpoints: list[tuple[int, int, int]]
    size: int


class DiskCache:
    """The state files of one model under one key."""

    def __init__(self, folder: Path, limit_bytes: int):
        self.folder = folder
        self.limit = limit_bytes
        self.entries: list[Entry] = []
        #: Prompt tokens served from restored disk states, for tests and status.
        self.restored_tokens = 0

    @classmethod
    def open(cls, name: str, path: str, options) -> DiskCache | None:
        """This model's cache, its folder indexed (after any writer of it has finished);
        folders of other keys are removed. None when ``cache_disk`` is 0."""
        if options.cache_disk <= 0:
            return None
        key = cache_key(path, options)
        if key is None:
            return None
        parent = model_folder(name)
        folder = parent / key
        wait_for_writer(folder)
        try:
            for other in parent.iterdir() if parent.is_dir() else ():
                if other.name != key and other.is_dir():
                    shutil.rmtree(other, ignore_errors=True)
        except OSError:
            pass
        cache = cls(folder, options.cache_disk * 1024 * 1024)
        cache.index()
        return cache

    def index(self) -> None:
        self.entries = []
        try:
            files = sorted(
                (p for p in self.folder.iterdir() if p.name.endswith(SUFFIX)),
                key=lambda p: p.stat().st_mtime_ns,
                reverse=True,
            )
        except OSError:
            return
        for path in files:
            entry = _read_index(path)
            if entry is not None:
                self.entries.append(entry)

    def __len__(self) -> int:
        return len(self.entries)

    def best(self, tokens: list[int]) -> tuple[Entry | None, int]:
        """The state sharing the longest prefix with ``tokens``, and that length."""
        return longest(self.entries, tokens)

    def take(self, entry: Entry) -> tuple[object, list[tuple[int, int, object]]] | None:
        """Read ``entry``'s state and checkpoints, and forget it (the file goes: the slot
        that restores it holds it now, and the next unload writes it again). None, with a
        warning, when the file is not what its header says."""
        if entry in self.entries:
            self.entries.remove(entry)
        try:
            with open(entry.path, "rb") as f:
                f.seek(entry.header_bytes)
                data = bytearray(entry.state_bytes)
                ok = f.readinto(data) == entry.state_bytes
                checkpoints = []
                for n_tokens, pos_min, size in entry.checkpoints:
                    buf = bytearray(size)
                    ok = ok and f.readinto(buf) == size
                    checkpoints.append((n_tokens, pos_min, buf))
                ok = ok and f.read(1) == b""
        except OSError as exc:
            log.warning("skipping the cached prompt state %s: %s", entry.path, exc)
            return None
        finally:
            _remove(entry.path)
        if not ok:
            log.warning("skipping the cached prompt state %s: the file is truncated", entry.path)
            return None
        return data, checkpoints

    def discard(self, entry: Entry) -> None:
        if entry in self.entries:
            self.entries.remove(entry)
        _remove(entry.path)

    def write_later(self, states: list[Saved]) -> threading.Thread | None:
        """Write ``states`` (most recently used first) in a thread of their own."""
        if not states:
            return None
        thread = threading.Thread(
            target=self.write, args=(states,), name="hoshikage-prompt-writer", daemon=False
        )
        with _writers_lock:
            _writers[self.folder] = thread
        thread.start()
        return thread

    def write(self, states: list[Saved]) -> None:
        """Write ``states`` newest first until ``limit``, then evict the oldest files."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            budget = self.limit
            written: set[str] = set()
            for saved in states:
                if saved.size > budget:
                    continue
                name = _file_name(saved.tokens)
                if name in written:
                    continue
                _write_file(self.folder / name, saved)
                written.add(name)
                budget -= saved.size
            self._evict(keep=written)
        except Exception:
            log.exception("writing cached prompt states to %s failed", self.folder)
        finally:
            with _writers_lock:
                if _writers.get(self.folder) is threading.current_thread():
                    del _writers[self.folder]

    def _evict(self, keep: set[str]) -> None:
        files = []
        for p in self.folder.iterdir():
            if p.name.endswith(SUFFIX):
                try:
                    st = p.stat()
                except OSError:
                    continue
                files.append((p.name in keep, st.st_mtime_ns, st.st_size, p))
        files.sort(key=lambda f: (f[0], f[1]), reverse=True)  # the new ones, then newest
        total = 0
        for _keep, _mtime, size, p in files:
            total += size
            if total > self.limit:
                _remove(p)
        for p in self.folder.glob("*.tmp"):
            _remove(p)


def wait_for_writers(timeout: float = 60.0) -> None:
    """Every write still running, finished (a model process waits so before it exits)."""
    with _writers_lock:
        threads = list(_writers.values())
    for thread in threads:
        thread.join(timeout)


def wait_for_writer(folder: Path, timeout: float = 30.0) -> None:
    with _writers_lock:
        thread = _writers.get(folder)
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout)


def _file_name(tokens: list[int]) -> str:
    raw = struct.pack(f"<{len(tokens)}i", *tokens)
    return hashlib.sha256(raw).hexdigest()[:24] + SUFFIX


def _write_file(path: Path, saved: Saved) -> None:
    header = json.dumps(
        {
            "n_tokens": len(saved.tokens),
            "state": len(memoryview(saved.data)),
            "checkpoints": [[n, pos, len(memoryview(d))] for n, pos, d in saved.checkpoints],
        }
    ).encode()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<I", len(header)))
        f.write(header)
        f.write(struct.pack(f"<{len(saved.tokens)}i", *saved.tokens))
        f.write(memoryview(saved.data))
        for _n, _pos, data in saved.checkpoints:
            f.write(memoryview(data))
    os.replace(tmp, path)


def _read_index(path: Path) -> Entry | None:
    """The header and tokens of a state file; None (with a warning, the file removed) when
    it is not a whole state file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise ValueError("not a Hoshikage prompt state")
            (header_len,) = struct.unpack("<I", f.read(4))
            if header_len > 1 << 20:
                raise ValueError("bad header")
            header = json.loads(f.read(header_len))
            n_tokens, state = int(header["n_tokens"]), int(header["state"])
            checkpoints = [(int(n), int(p), int(b)) for n, p, b in header["checkpoints"]]
            raw = f.read(4 * n_tokens)
            if len(raw) != 4 * n_tokens:
                raise ValueError("truncated")
            tokens = list(struct.unpack(f"<{n_tokens}i", raw))
        start = len(MAGIC) + 4 + header_len + 4 * n_tokens
        if size != start + state + sum(b for _n, _p, b in checkpoints) or state <= 0:
            raise ValueError("truncated")
    except (OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        log.warning("skipping the cached prompt state %s: %s", path, exc)
        _remove(path)
        return None
    return Entry(tokens, path, start, state, checkpoints, size)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
