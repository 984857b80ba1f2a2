"""Rerank requests onto the core: a relevance head's scores as they are, or, for a generative
model, P(``yes``) normalised over ``yes`` and ``no`` after a question in Qwen3-Reranker's
format, one prompt per document, all sharing the instructions and the query.

The prompt (rendered with the model's chat template, the assistant's turn opened):

* system: :data:`JUDGE`;
* user: ``Query: {query}\\nDocument: {document}\\n{QUESTION}``.
"""

from __future__ import annotations

import math

from hoshikage_core.protocol import ScorePrompt, ScoreRequest, Scores

from . import schemas as s

JUDGE = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
QUESTION = "Is this document relevant to the query? Answer yes or no."
#: The continuations scored: the first is "relevant".
ANSWERS = ("yes", "no")


def texts(data: s.RerankRequest) -> list[str]:
    return [d if isinstance(d, str) else d.text for d in data.documents]


def score_request(query: str, documents: list[str]) -> ScoreRequest:
    return ScoreRequest(
        prompts=tuple(
            ScorePrompt(
                messages=(
                    {"role": "system", "content": JUDGE},
                    {
                        "role": "user",
                        "content": f"Query: {query}\nDocument: {doc}\n{QUESTION}",
                    },
                ),
                continuations=ANSWERS,
            )
            for doc in documents
        )
    )


def relevance(scores: Scores) -> list[float]:
    """P(yes) / (P(yes) + P(no)) per document."""
    out = []
    for yes, no in scores.logprobs:
        peak = max(yes, no)
        a, b = math.exp(yes - peak), math.exp(no - peak)
        out.append(a / (a + b))
    return out


def response(
    data: s.RerankRequest, documents: list[str], scores: list[float], prompt_tokens: int
) -> s.RerankResponse:
    """Results best first (ties keep the documents' order), cut to ``top_n``."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    if data.top_n is not None:
        order = order[: data.top_n]
    results = [
        s.Result(
            index=i,
            relevance_score=scores[i],
            **({"document": s.ResultDocument(text=documents[i])} if data.return_documents else {}),
        )
        for i in order
    ]
    return s.RerankResponse(
        model=data.model,
        usage=s.RerankUsage(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens),
        results=results,
    )
