"""Reranking (``POST /v1/rerank`` and ``/rerank``) in the Jina/Cohere shape that llama-server
serves: a model with a relevance head scores pairs itself, any generative model answers
"yes" or "no" through the scoring primitive."""
