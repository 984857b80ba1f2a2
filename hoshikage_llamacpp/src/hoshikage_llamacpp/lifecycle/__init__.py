"""A model's life: loading it (``loader``, ``memory``, ``safe_mode``), the loaded model
(``model``), its own process (``isolation`` on the server's side, ``child`` in it,
``wire`` between them, ``sources`` whether the two run the same code), reranking
(``rerank``) and the doctor's facts (``doctor``). It may import every other room, and
``options``."""
