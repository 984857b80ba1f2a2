"""The Anthropic Messages API surface: ``POST /v1/messages`` and
``POST /v1/messages/count_tokens``, a translator onto the one generation path.

* :mod:`.schemas`: the wire types;
* :mod:`.translate`: Anthropic content to the core's chat messages, tool calls to ``tool_use``;
* :mod:`.format`: whole messages and the server-sent event stream;
* :mod:`.errors`: Anthropic's error shape and its status mapping, in one place;
* :mod:`.routes`: the handlers.
"""


def router():
    """This surface's Litestar router (:func:`.routes.router`)."""
    from .routes import router

    return router()
