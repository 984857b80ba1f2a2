"""The OpenAI Responses API surface: ``POST /v1/responses`` (also ``/responses``), and
``GET``/``DELETE /v1/responses/{id}`` and ``GET /v1/responses/{id}/input_items`` over a
bounded SQLite store of finished responses, and ``/v1/conversations``. A translator onto the one generation path.

* :mod:`.schemas`: the wire types;
* :mod:`.translate`: input items to the core's chat messages, and the request to a job;
* :mod:`.format`: the ``response`` object, whole or as the server-sent event stream;
* :mod:`.store`: the least-recently-used store that ``previous_response_id`` reads;
* :mod:`.conversations`: OpenAI's Conversations API, over :mod:`.conversation_store`;
* :mod:`.errors`: OpenAI's error shape on these routes, in one place;
* :mod:`.routes`: the handlers.
"""


def router():
    """This surface's Litestar router (:func:`.routes.router`)."""
    from .routes import router

    return router()
