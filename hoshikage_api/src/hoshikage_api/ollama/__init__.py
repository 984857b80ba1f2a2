"""Ollama's native API surface: ``/api/chat``, ``/api/generate``, ``/api/tags``, ``/api/ps``,
``/api/show``, ``/api/embed``, ``/api/embeddings`` and ``/api/version``, a translator onto the
one generation path.

* :mod:`.schemas`: the wire types;
* :mod:`.translate`: Ollama requests (messages, options, ``format``, ``keep_alive``) to the
  core's :class:`~hoshikage_core.protocol.GenerationRequest`, tool calls back to Ollama's shape;
* :mod:`.models`: ``name:tag`` resolution and each model's facts (digest, details, GGUF info);
* :mod:`.format`: whole objects, NDJSON lines and the durations they report;
* :mod:`.errors`: Ollama's error shape ``{"error": "..."}`` and its status mapping, in one place;
* :mod:`.routes`: the handlers.
"""


def router():
    """This surface's Litestar router (:func:`.routes.router`)."""
    from .routes import router

    return router()
