"""Route handlers, grouped by feature."""

from __future__ import annotations


def handlers() -> list:
    from ..anthropic import routes as anthropic
    from . import admin, chat, completions, embeddings, health, metrics, models

    return [
        *anthropic.handlers(),
        chat.chat_completions,
        completions.completions,
        embeddings.embeddings,
        models.list_models,
        models.get_model,
        health.health,
        metrics.metrics,
        admin.status,
        admin.load,
        admin.unload,
        admin.reload,
    ]
