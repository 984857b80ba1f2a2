"""The store of finished responses, for ``previous_response_id``, ``GET /v1/responses/{id}``
and its ``input_items``: a SQLite database (the standard library's ``sqlite3``, WAL mode)
under the user's data directory, so a client's ``previous_response_id`` survives a restart.

It holds at most ``[server] responses_store`` entries and ``responses_store_bytes`` bytes
(each entry's JSON); adding one more evicts the least recently used first (creating,
continuing from or retrieving a response counts as a use). ``0`` entries keeps nothing, and
a single response over the byte budget is not kept. The file is
``$XDG_DATA_HOME/hoshikage/responses.sqlite3`` (``~/.local/share/hoshikage/...``).

Every entry keeps the whole context its response was generated from, as input items (those
of the earlier responses in its chain first), so a continuation needs only its direct
predecessor: evicting an older response in a chain does not break the newer ones.

Each entry's items (its context and its output) are indexed by their ids, for the
``item_reference`` inputs that name one (:meth:`ResponseStore.item`); an entry's rows go
with it.

Each write is one transaction, committed before the call returns: a crash (even kill -9)
loses nothing that was committed, and the file opens again at the next start. The store is
touched only from the event loop, by plain synchronous calls (a write is a few
milliseconds), so no lock is needed.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import attrs
import msgspec

from .schemas import InputItem, Response

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    used INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    response BLOB NOT NULL,
    context BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_used ON responses (used);
CREATE TABLE IF NOT EXISTS response_items (
    item TEXT NOT NULL,
    response TEXT NOT NULL,
    PRIMARY KEY (item, response)
);
CREATE INDEX IF NOT EXISTS response_items_response ON response_items (response);
"""


@attrs.frozen
class Stored:
    response: Response
    #: The input items the response was generated from (``instructions`` aside), each with an
    #: ``id``: the chain's earlier items, then this request's own ``input``.
    context: tuple[InputItem, ...]


def default_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "hoshikage" / "responses.sqlite3"


def connect(path: Path | None, schema: str) -> tuple[Path, sqlite3.Connection]:
    """The stores' SQLite file (``path``, else :func:`default_path`), in WAL mode, with the
    tables of ``schema``."""
    path = Path(path) if path is not None else default_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    # NORMAL: a transaction is durable once committed to the WAL against a crash of the
    # process (kill -9); only a power cut may lose the last ones.
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(schema)
    return path, db


class ResponseStore:
    def __init__(self, size: int, max_bytes: int = 64 * 1024 * 1024, path: Path | None = None):
        self.size = size
        self.max_bytes = max_bytes
        self.path, self._db = connect(path, _SCHEMA)
        self._lock = threading.Lock()
        used, total = self._db.execute(
            "SELECT COALESCE(MAX(used), 0), COALESCE(SUM(bytes), 0) FROM responses"
        ).fetchone()
        self._used = used
        self.bytes = total
        self._response = msgspec.json.Decoder(Response)
        self._context = msgspec.json.Decoder(list[InputItem])

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def _tick(self) -> int:
        self._used += 1
        return self._used

    def get(self, response_id: str) -> Stored | None:
        """The entry, now the most recently used; None if unknown, deleted or evicted."""
        with self._lock:
            row = self._db.execute(
                "SELECT response, context FROM responses WHERE id = ?", (response_id,)
            ).fetchone()
            if row is None:
                return None
            self._db.execute(
                "UPDATE responses SET used = ? WHERE id = ?", (self._tick(), response_id)
            )
        return Stored(self._response.decode(row[0]), tuple(self._context.decode(row[1])))

    def put(self, stored: Stored) -> None:
        """Keep ``stored``, evicting the least recently used entries beyond the size and the
        byte budget."""
        if self.size <= 0:
            return
        response = msgspec.json.encode(stored.response)
        context = msgspec.json.encode(list(stored.context))
        size = len(response) + len(context)
        if size > self.max_bytes:
            return
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            old = self._db.execute(
                "SELECT bytes FROM responses WHERE id = ?", (stored.response.id,)
            ).fetchone()
            self._db.execute(
                "INSERT OR REPLACE INTO responses (id, used, bytes, response, context) "
                "VALUES (?, ?, ?, ?, ?)",
                (stored.response.id, self._tick(), size, response, context),
            )
            ids = {item.id for item in (*stored.context, *stored.response.output) if item.id}
            self._db.executemany(
                "INSERT OR IGNORE INTO response_items (item, response) VALUES (?, ?)",
                [(item_id, stored.response.id) for item_id in ids],
            )
            self.bytes += size - (old[0] if old else 0)
            self._evict()

    def _evict(self) -> None:
        count = self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        while count > self.size or self.bytes > self.max_bytes:
            row = self._db.execute(
                "SELECT id, bytes FROM responses ORDER BY used LIMIT 1"
            ).fetchone()
            if row is None:
                break
            self._forget(row[0])
            self.bytes -= row[1]
            count -= 1

    def _forget(self, response_id: str) -> None:
        self._db.execute("DELETE FROM responses WHERE id = ?", (response_id,))
        self._db.execute("DELETE FROM response_items WHERE response = ?", (response_id,))

    def delete(self, response_id: str) -> bool:
        with self._lock, self._db:
            row = self._db.execute(
                "SELECT bytes FROM responses WHERE id = ?", (response_id,)
            ).fetchone()
            if row is None:
                return False
            self._forget(response_id)
            self.bytes -= row[0]
            return True

    def item(self, item_id: str) -> Stored | None:
        """The most recently used entry that holds the item ``item_id`` (in its context or
        its output), or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT r.response, r.context FROM response_items i "
                "JOIN responses r ON r.id = i.response WHERE i.item = ? "
                "ORDER BY r.used DESC LIMIT 1",
                (item_id,),
            ).fetchone()
        if row is None:
            return None
        return Stored(self._response.decode(row[0]), tuple(self._context.decode(row[1])))

    def resize(self, size: int, max_bytes: int) -> None:
        """Take the running config's bounds (a reload); the next put evicts down to them."""
        self.size = size
        self.max_bytes = max_bytes

    def close(self) -> None:
        self._db.close()


def opened(request, key: str, kind):
    """The app's store ``kind`` (kept in its state under ``key``), opened on first use, at
    the bounds the running config sets now (a config reload that changes
    ``responses_store`` or ``responses_store_bytes`` applies at the next write)."""
    state = request.app.state
    server = state.runtime.config.server
    store = state.get(key)
    if store is None:
        store = state[key] = kind(server.responses_store, server.responses_store_bytes)
    store.resize(server.responses_store, server.responses_store_bytes)
    return store


def store_of(request) -> ResponseStore:
    """The app's response store (see :func:`opened`)."""
    return opened(request, "responses_store", ResponseStore)
