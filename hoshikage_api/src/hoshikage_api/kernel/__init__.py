"""What every API surface shares, in no surface's words: the job (:mod:`.job`), the one
generation path (:mod:`.generation`), the one answer path behind the :class:`~.answer.Format`
protocol (:mod:`.answer`), errors as HTTP (:mod:`.errors`), strict bodies (:mod:`.body`),
cancel on disconnect (:mod:`.disconnect`), the runtime of a request (:mod:`.deps`), the
field types and encoders more than one surface's wire uses (:mod:`.wire`) and the OpenAPI
text of the default error shape (:mod:`.docs`).

The kernel imports no surface (``openai``, ``responses``, ``anthropic``, ``ollama``) and no
``server`` route; ``tests/api/test_layout.py`` checks it.
"""
