"""Hoshikage's llama.cpp backend: GGUF models through llama-cpp-python, decoded in batches
(one engine thread per loaded model). Importing the package is cheap: llama_cpp loads only
when a model does."""
