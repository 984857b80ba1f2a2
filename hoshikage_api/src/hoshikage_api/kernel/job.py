"""The job: everything one generation request asks for, in the core's terms and no
surface's, and the field rules every surface shares (``keep_alive``, ``speculative``,
tool-call arguments as an object)."""

from __future__ import annotations

import json
from typing import Any

import attrs
from hoshikage_core.protocol import GenerationRequest
from hoshikage_core.units import parse_duration

from .errors import invalid


@attrs.frozen(kw_only=True)
class Job:
    """One session, ``len(requests) * n`` choices. Choice ``i * n + j`` is the ``j``-th
    sample of prompt ``i``."""

    endpoint: str
    #: The model name as the client wrote it (alias or not); echoed back in responses.
    model: str
    keep_alive: float | None
    requests: tuple[GenerationRequest, ...]
    n: int = 1
    stream: bool = False

    @property
    def choices(self) -> int:
        return len(self.requests) * self.n


def keep_alive(value: float | str | None) -> float | None:
    """Seconds (-1: never) from the ``keep_alive`` extension field."""
    if value is None:
        return None
    try:
        return parse_duration(value, allow_never=True)
    except ValueError as exc:
        raise invalid(f"Invalid 'keep_alive': {exc}.", "keep_alive") from None


def speculative(value: object, param: str = "speculative") -> bool:
    """Whether the request may draft, from the ``speculative`` extension field: only
    ``false`` turns speculative decoding off (absent or ``true``: the model's setting). A
    surface whose schema types the field passes it decoded; one that takes it from a free
    object (Ollama's ``options``) passes it raw, and anything but a boolean is a 400."""
    if value is None:
        return True
    if not isinstance(value, bool):
        raise invalid(
            f"Invalid '{param}': expected true or false, got {type(value).__name__}.", param
        )
    return value


def reasoning_of_effort(effort: str | None) -> bool | str | None:
    """OpenAI's ``reasoning_effort`` (chat) and ``reasoning.effort`` (Responses) as the
    core's ``reasoning``: "none" is off, "minimal" is "low"."""
    if effort is None:
        return None
    if effort == "none":
        return False
    return "low" if effort == "minimal" else effort


def arguments_object(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments as the object that Anthropic's ``input`` and Ollama's
    ``arguments`` must be (OpenAI's are a JSON string). Arguments encoded twice (a JSON
    string holding JSON) are decoded twice; anything still not an object is kept under
    ``"arguments"`` rather than lost."""
    value = arguments
    for _ in range(2):
        if not isinstance(value, str):
            break
        try:
            value = json.loads(value)
        except ValueError:
            break
    if isinstance(value, dict):
        return value
    return {} if value in (None, "") else {"arguments": value}
