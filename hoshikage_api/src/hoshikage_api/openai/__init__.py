"""The OpenAI surface: chat completions, text completions, embeddings and models, a
translator onto the one answer path.

* :mod:`.schemas`: the wire types (the Responses surface shares some of them);
* :mod:`.translate`: a request to the kernel's :class:`~hoshikage_api.kernel.job.Job`;
* :mod:`.format`: whole answers and the server-sent event stream;
* :mod:`.routes`: the handlers and the surface's :func:`~.routes.router`.

Errors have the default shape (:mod:`hoshikage_api.kernel.errors`).
"""


def router():
    """This surface's Litestar router (:func:`.routes.router`)."""
    from .routes import router

    return router()
