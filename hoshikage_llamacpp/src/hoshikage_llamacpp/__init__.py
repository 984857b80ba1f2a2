"""Hoshikage's llama.cpp backend: GGUF models through llama-cpp-python, decoded in batches
(one engine thread per loaded model). Importing the package is cheap: llama_cpp loads only
when a model does.

Its rooms (docs/backend-llamacpp.md has the picture): ``llama`` (next to llama.cpp),
``grammar`` (GBNF), ``dialects`` (what a model's text means), ``engine`` (the batched
step loop), ``frontend`` (a request's plan and output), and the model's lifecycle at the
top. Old module paths still import, with a DeprecationWarning (:mod:`.moved`)."""

from . import moved

moved.install()
