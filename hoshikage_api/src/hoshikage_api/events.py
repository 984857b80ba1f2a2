"""The core's events, feeding the metrics and the serve log.

``create_app`` registers one :class:`EventSink` per app on the runtime's plugin manager for
the app's lifetime, so each app (and each test) has its own metrics. Each hook is called
once per request or per load, never per token.
"""

from __future__ import annotations

import logging

from hoshikage_core.hookspecs import hookimpl

from .metrics import Metrics

log = logging.getLogger("hoshikage.api")


def describe(record) -> str:
    """One line for a finished request: model, status, tokens, speed, TTFT, duration."""
    model = (
        record.model
        if record.requested_as == record.model
        else f"{record.model} (as {record.requested_as})"
    )
    parts = [f"{record.endpoint} {model} {record.status}"]
    if record.prompt_tokens or record.completion_tokens:
        parts.append(f"{record.prompt_tokens}+{record.completion_tokens} tok")
    if record.tokens_per_second is not None:
        parts.append(f"{record.tokens_per_second:.1f} tok/s")
    if record.draft_tokens:
        parts.append(f"drafts {record.draft_accepted}/{record.draft_tokens}")
    if record.ttft is not None:
        parts.append(f"ttft {record.ttft:.2f}s")
    if record.queued_seconds >= 0.01:
        parts.append(f"queued {record.queued_seconds:.2f}s")
    parts.append(f"{record.duration:.2f}s")
    if record.error:
        parts.append(f"- {record.error}")
    return " ".join(parts)


class EventSink:
    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    @hookimpl
    def request_finished(self, record):
        self.metrics.request_finished(record)
        if record.endpoint != "load":
            log.info("%s", describe(record))

    @hookimpl
    def model_loaded(self, name, seconds, memory_bytes):
        self.metrics.model_loaded(name, seconds)
        log.info("loaded %s in %.2fs (%.1f MB)", name, seconds, memory_bytes / 1e6)

    @hookimpl
    def model_unloaded(self, name, reason, seconds):
        self.metrics.model_unloaded(name, reason)
        log.info("unloaded %s (%s) in %.2fs", name, reason, seconds)

    @hookimpl
    def model_load_failed(self, name, error):
        self.metrics.model_load_failed(name)
        log.error("loading %s failed: %s", name, error)
