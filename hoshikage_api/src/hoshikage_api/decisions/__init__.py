"""The OpenAI Decisions API (``POST /v1/decisions``): predicate, choice and score questions
about one input, answered from the model's probabilities of each answer's text."""


def router():
    """This surface's Litestar router (:func:`.routes.router`)."""
    from .routes import router

    return router()
