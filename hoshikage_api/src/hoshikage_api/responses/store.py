"""The bounded in-memory store of finished responses, for ``previous_response_id``,
``GET /v1/responses/{id}`` and its ``input_items``.

It holds at most ``[server] responses_store`` entries; adding one more evicts the least
recently used (creating, continuing from or retrieving a response counts as a use). ``0``
keeps nothing. Nothing survives a restart.

Every entry keeps the whole context its response was generated from, as input items (those
of the earlier responses in its chain first), so a continuation needs only its direct
predecessor: evicting an older response in a chain does not break the newer ones.

The store is touched only from the event loop, by plain synchronous calls that never await
in between, so no lock is needed: a request reads its predecessor before it queues, and
stores its own response once generation has finished.
"""

from __future__ import annotations

from collections import OrderedDict

import attrs

from .schemas import InputItem, Response


@attrs.frozen
class Stored:
    response: Response
    #: The input items the response was generated from (``instructions`` aside), each with an
    #: ``id``: the chain's earlier items, then this request's own ``input``.
    context: tuple[InputItem, ...]


class ResponseStore:
    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[str, Stored] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, response_id: str) -> Stored | None:
        """The entry, now the most recently used; None if unknown, deleted or evicted."""
        stored = self._entries.get(response_id)
        if stored is not None:
            self._entries.move_to_end(response_id)
        return stored

    def put(self, stored: Stored) -> None:
        """Keep ``stored``, evicting the least recently used entries beyond the size."""
        if self.size <= 0:
            return
        self._entries[stored.response.id] = stored
        self._entries.move_to_end(stored.response.id)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def delete(self, response_id: str) -> bool:
        return self._entries.pop(response_id, None) is not None


def store_of(request) -> ResponseStore:
    """The app's store, made on first use, at the size the running config sets now (a
    config reload that changes ``responses_store`` applies at the next store)."""
    state = request.app.state
    size = state.runtime.config.server.responses_store
    store = state.get("responses_store")
    if store is None:
        store = ResponseStore(size)
        state["responses_store"] = store
    store.size = size
    return store
