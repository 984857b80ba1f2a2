"""A model's life: loading it (``loader``, ``memory``, ``safe_mode``), the loaded model
(``model``), its own process (``isolation`` on the server's side, ``child`` in it,
``wire`` between them), reranking (``rerank``) and the doctor's facts (``doctor``). It may
import every other room, and ``options``."""
