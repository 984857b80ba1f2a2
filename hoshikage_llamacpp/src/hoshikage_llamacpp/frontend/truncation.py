"""A chat that does not fit the context, made to fit by dropping its oldest turns
(:attr:`GenerationRequest.truncate <hoshikage_core.protocol.GenerationRequest.truncate>`: the
Responses API's ``truncation: "auto"``, Ollama's ``/api/chat``).

Only a prompt over the context is truncated; one that fits is never touched. What is kept:

* every system message, where it stands;
* the last user message and everything after it (the turn being answered: its tool calls
  and their results);
* as many of the turns before it as fit, the newest first. A turn is dropped whole, from a
  user message to the next, so the kept ones still begin with a user message and every tool
  result keeps its call.

When the last turn alone is too long (an agent's one task and its many tool calls), its
oldest calls go too, each with its results, after the user message that set the task.

The aim is a prompt that leaves room for the answer: the request's ``max_tokens`` (or the
model's default), at most a quarter of the context. When even the shortest conversation
leaves less, it is used if it fits at all; if it does not, the request is refused as an
untruncated one would be.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

Messages = tuple[Mapping[str, Any], ...]


def shorter_conversations(messages: Sequence[Mapping[str, Any]]) -> list[Messages]:
    """The conversations truncation may try, each shorter than the one before."""
    roles = [m.get("role") for m in messages]
    users = [i for i, role in enumerate(roles) if role == "user"]
    if not users:
        return []
    last = users[-1]

    def keeping(start: int, head: tuple[int, ...] = ()) -> Messages:
        return tuple(
            m for i, m in enumerate(messages) if roles[i] == "system" or i in head or i >= start
        )

    out = [keeping(start) for start in users[1:]]
    # Within the last turn: its oldest assistant steps (each with the tool results after it).
    steps = [i for i in range(last + 1, len(messages)) if roles[i] == "assistant"]
    out += [keeping(start, (last,)) for start in steps[1:]]
    return out


def truncated(
    messages: Sequence[Mapping[str, Any]],
    tokens: list[int],
    n_ctx: int,
    limit: int | None,
    tokens_of: Callable[[Messages], tuple[str, list[int]]],
) -> tuple[str, list[int]] | None:
    """The prompt and tokens of the longest shorter conversation that leaves room for the
    answer (see the module), or of the shortest one that fits at all; None when none fits.
    ``tokens`` are the whole conversation's; ``tokens_of`` renders and tokenizes one."""
    reserve = max(1, min(limit if limit is not None else n_ctx, n_ctx // 4))
    target = n_ctx - reserve
    options = shorter_conversations(messages)
    if not options:
        return None
    rendered: dict[int, tuple[str, list[int]]] = {}

    def at(k: int) -> tuple[str, list[int]]:
        if k not in rendered:
            rendered[k] = tokens_of(options[k])
        return rendered[k]

    # The first option within the target: they only get shorter, so search by halves.
    lo, hi = 0, len(options) - 1
    if len(at(hi)[1]) > target:
        best = hi if len(at(hi)[1]) < n_ctx else None
    else:
        while lo < hi:
            mid = (lo + hi) // 2
            if len(at(mid)[1]) <= target:
                hi = mid
            else:
                lo = mid + 1
        best = lo
    if best is None:
        return None
    prompt, kept = at(best)
    log.info(
        "The conversation did not fit the context of %d tokens (%d): %d of its %d messages "
        "were dropped, the oldest first (%d prompt tokens)",
        n_ctx,
        len(tokens),
        len(messages) - len(options[best]),
        len(messages),
        len(kept),
    )
    return prompt, kept
