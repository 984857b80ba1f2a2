"""llama-server's own utility routes: ``/tokenize``, ``/detokenize``, ``/apply-template``
(and, with the FIM tokens a model declares, ``/infill``), in llama-server's shapes."""


def router():
    """This surface's Litestar router (:func:`.routes.router`)."""
    from .routes import router

    return router()
