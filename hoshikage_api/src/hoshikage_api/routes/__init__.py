"""Route handlers, grouped by feature."""

from __future__ import annotations


def handlers() -> list:
    from ..anthropic import routes as anthropic
    from ..decisions import routes as decisions
    from ..llamaserver import routes as llamaserver
    from ..ollama import routes as ollama
    from ..rerank import routes as rerank
    from ..responses import routes as responses
    from . import admin, chat, completions, embeddings, health, metrics, models, web

    return [
        *anthropic.handlers(),
        *decisions.handlers(),
        *llamaserver.handlers(),
        *rerank.handlers(),
        *ollama.handlers(),
        *responses.handlers(),
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
        web.root,
        web.page,
        web.page_file,
    ]
