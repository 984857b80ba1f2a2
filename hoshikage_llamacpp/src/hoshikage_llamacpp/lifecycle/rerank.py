"""Reranking with a relevance head: llama.cpp's rank pooling (bge-reranker, jina-reranker,
Qwen3-Reranker GGUFs), loaded with ``embedding = true``.

Each (query, document) pair is one sequence, formatted as llama-server formats it
(``format_prompt_rerank``): the model's ``rerank`` chat template with ``{query}`` and
``{document}`` replaced when its metadata has one, else ``[BOS] query [EOS] [SEP] document
[EOS]`` as the vocabulary asks. Pairs are decoded together, as many as fit in a batch; the
score of a pair is the head's first output (``llama_get_embeddings_seq``), which is P(yes)
for Qwen3-Reranker (llama.cpp applies its softmax) and a logit for BERT-style rerankers.
"""

from __future__ import annotations

from typing import Any

from hoshikage_core.errors import ContextLengthExceeded
from hoshikage_core.protocol import Ranking

RERANK_TEMPLATE = "tokenizer.chat_template.rerank"


def pair_tokens(llama, metadata: dict[str, Any], query: str, document: str) -> list[int]:
    import llama_cpp

    template = metadata.get(RERANK_TEMPLATE)
    if isinstance(template, str):
        text = template.replace("{query}", query).replace("{document}", document)
        return llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    vocab = llama._model.vocab
    eos = llama_cpp.llama_vocab_eos(vocab)
    if eos < 0:
        eos = llama_cpp.llama_vocab_sep(vocab)
    tokens: list[int] = []
    if llama_cpp.llama_vocab_get_add_bos(vocab):
        tokens.append(llama_cpp.llama_vocab_bos(vocab))
    tokens += llama.tokenize(query.encode("utf-8"), add_bos=False, special=False)
    if llama_cpp.llama_vocab_get_add_eos(vocab):
        tokens.append(eos)
    if llama_cpp.llama_vocab_get_add_sep(vocab):
        tokens.append(llama_cpp.llama_vocab_sep(vocab))
    tokens += llama.tokenize(document.encode("utf-8"), add_bos=False, special=False)
    if llama_cpp.llama_vocab_get_add_eos(vocab):
        tokens.append(eos)
    return tokens


def rank(llama, metadata: dict[str, Any], query: str, documents: list[str]) -> Ranking:
    """Scores in the documents' order. A pair longer than ``n_batch`` tokens (a whole pair
    must fit one micro-batch) is :class:`ContextLengthExceeded`."""
    import llama_cpp

    pairs = [pair_tokens(llama, metadata, query, d) for d in documents]
    limit = llama.n_batch
    for tokens in pairs:
        if len(tokens) > limit:
            raise ContextLengthExceeded(len(tokens), limit, param="documents")
    n_seq_max = llama.context_params.n_seq_max
    ctx = llama._ctx
    batch = llama._batch
    scores: list[float] = []

    def decode(count: int) -> None:
        ctx.kv_cache_clear()
        ctx.decode(batch)
        batch.reset()
        for seq in range(count):
            scores.append(float(llama_cpp.llama_get_embeddings_seq(ctx.ctx, seq)[0]))

    batch.reset()
    filled = in_batch = 0
    for tokens in pairs:
        if filled + len(tokens) > limit or in_batch >= n_seq_max:
            decode(in_batch)
            filled = in_batch = 0
        batch.add_sequence(tokens, in_batch, True)
        filled += len(tokens)
        in_batch += 1
    if in_batch:
        decode(in_batch)
    ctx.kv_cache_clear()
    return Ranking(scores=tuple(scores), prompt_tokens=sum(len(t) for t in pairs))
