"""The store of conversations (OpenAI's Conversations API, and the Responses API's
``conversation``): each an id, its metadata and its items in order, in the same SQLite file
as the :class:`~.store.ResponseStore` (``responses.sqlite3``), so a conversation survives a
restart.

Items are kept as the Responses API's input items, each with its ``id`` (a response's
output items as the items that continue it). The store holds at most ``[server]
responses_store`` conversations and ``responses_store_bytes`` bytes of items, counted apart
from the stored responses; one more evicts the least recently used conversation first
(creating, reading, adding to or answering in one counts as a use).

Like the response store, it is touched only from the event loop, one transaction a write.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import msgspec

from .schemas import Conversation, InputItem
from .store import connect, opened

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    used INTEGER NOT NULL,
    metadata BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_used ON conversations (used);
CREATE TABLE IF NOT EXISTS conversation_items (
    conversation TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    item BLOB NOT NULL,
    PRIMARY KEY (conversation, seq)
);
CREATE INDEX IF NOT EXISTS conversation_items_id ON conversation_items (conversation, id);
CREATE INDEX IF NOT EXISTS conversation_items_item ON conversation_items (id);
"""


class ConversationStore:
    def __init__(self, size: int, max_bytes: int = 64 * 1024 * 1024, path: Path | None = None):
        self.size = size
        self.max_bytes = max_bytes
        self.path, self._db = connect(path, _SCHEMA)
        self._lock = threading.Lock()
        self._used = self._db.execute(
            "SELECT COALESCE(MAX(used), 0) FROM conversations"
        ).fetchone()[0]
        self.bytes = self._db.execute(
            "SELECT COALESCE(SUM(bytes), 0) FROM conversation_items"
        ).fetchone()[0]
        self._item = msgspec.json.Decoder(InputItem)
        self._metadata = msgspec.json.Decoder(dict[str, str])

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0]

    def _tick(self) -> int:
        self._used += 1
        return self._used

    def _touch(self, conversation_id: str) -> tuple[int, bytes] | None:
        """Mark a use; the conversation's ``created_at`` and metadata, None if unknown."""
        row = self._db.execute(
            "SELECT created_at, metadata FROM conversations WHERE id = ?", (conversation_id,)
        ).fetchone()
        if row is not None:
            self._db.execute(
                "UPDATE conversations SET used = ? WHERE id = ?", (self._tick(), conversation_id)
            )
        return row

    def _conversation(self, conversation_id: str, row: tuple[int, bytes]) -> Conversation:
        return Conversation(
            id=conversation_id, created_at=row[0], metadata=self._metadata.decode(row[1])
        )

    def create(self, items: list, metadata: dict[str, str] | None) -> Conversation:
        """A new conversation holding ``items`` (each with its ``id``)."""
        conversation = Conversation(
            id="conv_" + uuid.uuid4().hex, created_at=int(time.time()), metadata=metadata or {}
        )
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO conversations (id, created_at, used, metadata) VALUES (?, ?, ?, ?)",
                (
                    conversation.id,
                    conversation.created_at,
                    self._tick(),
                    msgspec.json.encode(conversation.metadata),
                ),
            )
            self._append(conversation.id, items)
            self._evict()
        return conversation

    def get(self, conversation_id: str) -> Conversation | None:
        with self._lock:
            row = self._touch(conversation_id)
        return None if row is None else self._conversation(conversation_id, row)

    def update(self, conversation_id: str, metadata: dict[str, str]) -> Conversation | None:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._touch(conversation_id)
            if row is None:
                return None
            encoded = msgspec.json.encode(metadata)
            self._db.execute(
                "UPDATE conversations SET metadata = ? WHERE id = ?", (encoded, conversation_id)
            )
        return self._conversation(conversation_id, (row[0], encoded))

    def delete(self, conversation_id: str) -> bool:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            return self._remove(conversation_id)

    def items(self, conversation_id: str) -> tuple | None:
        """The conversation's items, oldest first; None if it is unknown."""
        with self._lock:
            if self._touch(conversation_id) is None:
                return None
            rows = self._db.execute(
                "SELECT item FROM conversation_items WHERE conversation = ? ORDER BY seq",
                (conversation_id,),
            ).fetchall()
        return tuple(self._item.decode(row[0]) for row in rows)

    def item(self, item_id: str):
        """The item ``item_id`` of any conversation (the newest copy), or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT item FROM conversation_items WHERE id = ? ORDER BY seq DESC LIMIT 1",
                (item_id,),
            ).fetchone()
        return None if row is None else self._item.decode(row[0])

    def add(self, conversation_id: str, items: list) -> bool:
        """Append ``items`` (each with its ``id``); False if the conversation is unknown."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if self._touch(conversation_id) is None:
                return False
            self._append(conversation_id, items)
            self._evict()
        return True

    def delete_item(self, conversation_id: str, item_id: str) -> Conversation | None | bool:
        """Remove one item: the conversation; None if it is unknown, False if the item is."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._touch(conversation_id)
            if row is None:
                return None
            found = self._db.execute(
                "SELECT seq, bytes FROM conversation_items WHERE conversation = ? AND id = ?",
                (conversation_id, item_id),
            ).fetchone()
            if found is None:
                return False
            self._db.execute(
                "DELETE FROM conversation_items WHERE conversation = ? AND seq = ?",
                (conversation_id, found[0]),
            )
            self.bytes -= found[1]
        return self._conversation(conversation_id, row)

    def _append(self, conversation_id: str, items: list) -> None:
        last = self._db.execute(
            "SELECT COALESCE(MAX(seq), -1) FROM conversation_items WHERE conversation = ?",
            (conversation_id,),
        ).fetchone()[0]
        for seq, item in enumerate(items, start=last + 1):
            encoded = msgspec.json.encode(item)
            self._db.execute(
                "INSERT INTO conversation_items (conversation, seq, id, bytes, item) "
                "VALUES (?, ?, ?, ?, ?)",
                (conversation_id, seq, item.id, len(encoded), encoded),
            )
            self.bytes += len(encoded)

    def _remove(self, conversation_id: str) -> bool:
        gone = self._db.execute(
            "SELECT COALESCE(SUM(bytes), 0) FROM conversation_items WHERE conversation = ?",
            (conversation_id,),
        ).fetchone()[0]
        deleted = self._db.execute(
            "DELETE FROM conversations WHERE id = ?", (conversation_id,)
        ).rowcount
        self._db.execute(
            "DELETE FROM conversation_items WHERE conversation = ?", (conversation_id,)
        )
        self.bytes -= gone
        return bool(deleted)

    def _evict(self) -> None:
        """Remove the least recently used conversations beyond the bounds; the one just
        used stays, even alone over the byte budget (its items are what it was given)."""
        count = self._db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0]
        while count > max(self.size, 1) or (self.bytes > self.max_bytes and count > 1):
            row = self._db.execute("SELECT id FROM conversations ORDER BY used LIMIT 1").fetchone()
            if row is None:
                break
            self._remove(row[0])
            count -= 1

    def resize(self, size: int, max_bytes: int) -> None:
        """Take the running config's bounds (a reload); the next write evicts down to them."""
        self.size = size
        self.max_bytes = max_bytes

    def close(self) -> None:
        self._db.close()


def conversations_of(request) -> ConversationStore:
    """The app's conversation store (see :func:`~.store.opened`)."""
    return opened(request, "conversation_store", ConversationStore)
