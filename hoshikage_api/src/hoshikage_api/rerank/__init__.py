"""Reranking (``POST /v1/rerank`` and ``/rerank``) in the Jina/Cohere shape that llama-server
serves: a model with a relevance head scores pairs itself, any generative model answers
"yes" or "no" through the scoring primitive."""


def router():
    """This surface's Litestar router (:func:`.routes.router`)."""
    from .routes import router

    return router()
