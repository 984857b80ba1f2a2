"""``context_management``: the edits a client asks for, applied to the conversation before
it becomes the prompt, as Anthropic applies them server side.

* ``clear_thinking_20251015``: thinking blocks are kept in the last ``keep.value`` assistant
  turns that have any (``{"type": "thinking_turns", "value": n}``, default 1) and cleared from
  the earlier ones; ``keep: "all"`` (or ``{"type": "all"}``) keeps every one.
* ``clear_tool_uses_20250919``: once the conversation passes ``trigger`` input tokens
  (default 100,000), the oldest tool results are replaced by a short note, all but the last
  ``keep.value`` tool uses (default 3) and any of ``exclude_tools``; with
  ``clear_tool_inputs`` (true, or a list of tool names) the calls' inputs are cleared too.
  When that would clear fewer than ``clear_at_least`` tokens, nothing is cleared. The
  conversation's tokens are estimated here, before the model renders it, at four characters
  a token (this surface knows no tokenizer); the trigger is a threshold, not a count the
  answer reports.

Another edit type (``compact_20260112``: a summary written by the server) is a 400 naming
it: compaction is the client's to do here (Claude Code compacts on ``prompt is too long``).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from ..kernel.errors import invalid
from . import schemas as s

#: The text a cleared tool result is replaced by.
CLEARED = "[This tool result was cleared to save context.]"
_CHARS_PER_TOKEN = 4


def apply(messages: list[s.MessageParam], config: s.ContextManagement | None) -> list:
    """``messages`` with the edits of ``config`` applied, in order."""
    if config is None:
        return messages
    for i, edit in enumerate(config.edits):
        kind = edit.get("type")
        where = f"context_management.edits[{i}]"
        if kind == "clear_thinking_20251015":
            messages = _clear_thinking(messages, _keep(edit, "thinking_turns", 1, where))
        elif kind == "clear_tool_uses_20250919":
            messages = _clear_tool_uses(messages, edit, where)
        else:
            raise invalid(
                f"Invalid '{where}.type': {kind!r} is not supported; this server applies "
                "clear_thinking_20251015 and clear_tool_uses_20250919.",
                f"{where}.type",
            )
    return messages


def _count(edit: dict, key: str, kind: str, default: int | None, where: str) -> int | None:
    value = edit.get(key)
    if value is None:
        return default
    if (
        not isinstance(value, dict)
        or value.get("type") != kind
        or not isinstance(value.get("value"), int)
        or isinstance(value.get("value"), bool)
        or value["value"] < 0
    ):
        raise invalid(
            f'Invalid \'{where}.{key}\': expected {{"type": "{kind}", "value": n}}.',
            f"{where}.{key}",
        )
    return value["value"]


def _keep(edit: dict, kind: str, default: int, where: str) -> int | None:
    """How many to keep; None: all."""
    keep = edit.get("keep")
    if keep == "all" or (isinstance(keep, dict) and keep.get("type") == "all"):
        return None
    return _count(edit, "keep", kind, default, where)


def _blocks(message: s.MessageParam) -> list:
    return [] if isinstance(message.content, str) else list(message.content)


def _clear_thinking(messages: list[s.MessageParam], keep: int | None) -> list:
    if keep is None:
        return messages
    thinking = (s.ThinkingBlock, s.RedactedThinkingBlock)
    turns = [
        i
        for i, m in enumerate(messages)
        if m.role == "assistant" and any(isinstance(b, thinking) for b in _blocks(m))
    ]
    clear = set(turns[: max(0, len(turns) - keep)])
    out = []
    for i, m in enumerate(messages):
        if i in clear:
            kept = [b for b in _blocks(m) if not isinstance(b, thinking)]
            m = msgspec.structs.replace(m, content=kept or "")
        out.append(m)
    return out


def _size(value: Any) -> int:
    return len(json.dumps(msgspec.to_builtins(value), ensure_ascii=False))


def _clear_tool_uses(messages: list[s.MessageParam], edit: dict, where: str) -> list:
    trigger = _count(edit, "trigger", "input_tokens", 100_000, where)
    keep = _keep(edit, "tool_uses", 3, where)
    at_least = _count(edit, "clear_at_least", "input_tokens", 0, where) or 0
    exclude = edit.get("exclude_tools") or []
    inputs = edit.get("clear_tool_inputs") or False
    if not isinstance(exclude, list) or not all(isinstance(n, str) for n in exclude):
        raise invalid(
            f"Invalid '{where}.exclude_tools': expected a list of tool names.",
            f"{where}.exclude_tools",
        )
    if not isinstance(inputs, bool | list) or (
        isinstance(inputs, list) and not all(isinstance(n, str) for n in inputs)
    ):
        raise invalid(
            f"Invalid '{where}.clear_tool_inputs': expected true, false or a list of tool names.",
            f"{where}.clear_tool_inputs",
        )
    exclude = set(exclude)
    if _size(messages) // _CHARS_PER_TOKEN <= (trigger or 0) or keep is None:
        return messages
    names = {b.id: b.name for m in messages for b in _blocks(m) if isinstance(b, s.ToolUseBlock)}
    results = [
        b.tool_use_id
        for m in messages
        for b in _blocks(m)
        if isinstance(b, s.ToolResultBlock)
        and names.get(b.tool_use_id) not in exclude
        and b.content != CLEARED
    ]
    cleared = set(results[: max(0, len(results) - keep)])
    if not cleared:
        return messages

    def inputs_of(name: str) -> bool:
        return inputs is True or (isinstance(inputs, list) and name in inputs)

    out, saved = [], 0
    for m in messages:
        blocks = _blocks(m)
        new = []
        for b in blocks:
            if isinstance(b, s.ToolResultBlock) and b.tool_use_id in cleared:
                saved += _size(b.content) - len(CLEARED)
                b = msgspec.structs.replace(b, content=CLEARED)
            elif isinstance(b, s.ToolUseBlock) and b.id in cleared and inputs_of(b.name):
                saved += _size(b.input) - 2
                b = msgspec.structs.replace(b, input={})
            new.append(b)
        out.append(msgspec.structs.replace(m, content=new) if blocks else m)
    if saved // _CHARS_PER_TOKEN < at_least:
        return messages
    return out
