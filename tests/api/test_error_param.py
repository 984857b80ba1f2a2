"""An error's ``param`` is the one the domain error carries, not a guess from the URL."""

from __future__ import annotations

import pytest

from tests.api.helpers import assert_openai_error


def test_the_domain_error_names_its_param():
    from hoshikage_api.errors import from_domain
    from hoshikage_core.errors import (
        ContextLengthExceeded,
        HoshikageError,
        InvalidRequest,
        ModelNotFound,
    )

    # Carried by the error: wins over any route.
    assert from_domain(ContextLengthExceeded(900, 512, param="input"), "/v1/chat/completions").param == "input"
    assert from_domain(InvalidRequest("bad", "tools[0]"), "/v1/chat/completions").param == "tools[0]"
    assert from_domain(ModelNotFound("x", []), "").param == "model"
    # Without one, a context overflow names the prompt field of the route that was called.
    assert from_domain(ContextLengthExceeded(900, 512), "/v1/embeddings").param == "input"
    assert from_domain(ContextLengthExceeded(900, 512), "/v1/completions").param == "prompt"
    assert from_domain(ContextLengthExceeded(900, 512), "/v1/messages").param == "messages"
    assert from_domain(ContextLengthExceeded(900, 512), "/somewhere/else").param is None
    # Backwards compatible: every domain error has the attribute, None by default.
    assert HoshikageError("x").param is None and ContextLengthExceeded(1, 1).param is None


async def test_over_long_embedding_input_names_input(client):
    pytest.importorskip("llama_cpp")
    # One input longer than n_batch (512) tokens.
    r = await client.post("/v1/embeddings", json={"model": "tiny-embed", "input": ["hello", "the cat " * 400]})
    assert_openai_error(r, 400, code="context_length_exceeded", param="input")
