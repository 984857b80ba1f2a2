"""An error's ``param`` is the one the domain error carries, not a guess from the URL."""

from __future__ import annotations

import pytest

from tests.api.helpers import assert_openai_error


def test_the_domain_error_names_its_param():
    from hoshikage_api.kernel.errors import from_domain
    from hoshikage_core.errors import (
        ContextLengthExceeded,
        HoshikageError,
        InvalidRequest,
        ModelNotFound,
    )

    # The param is the one the error carries; nothing is guessed from the URL.
    assert from_domain(ContextLengthExceeded(900, 512, param="input")).param == "input"
    assert from_domain(InvalidRequest("bad", "tools[0]")).param == "tools[0]"
    assert from_domain(ModelNotFound("x", [])).param == "model"
    assert from_domain(ContextLengthExceeded(900, 512)).param is None
    # Every domain error has the attribute, None by default.
    assert HoshikageError("x").param is None and ContextLengthExceeded(1, 1).param is None


async def test_over_long_chat_and_completion_name_their_prompt_field(client):
    """The backend names the field that holds the prompt: ``messages`` for chat (OpenAI
    and Anthropic), ``prompt`` for completions."""
    pytest.importorskip("llama_cpp")
    long = "the cat " * 400  # over the 512-token context of "tiny"
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "user", "content": long}]},
    )
    assert_openai_error(r, 400, code="context_length_exceeded", param="messages")
    r = await client.post("/v1/completions", json={"model": "tiny", "prompt": long})
    assert_openai_error(r, 400, code="context_length_exceeded", param="prompt")


async def test_over_long_embedding_input_names_input(client):
    pytest.importorskip("llama_cpp")
    # One input longer than n_batch (512) tokens.
    r = await client.post(
        "/v1/embeddings", json={"model": "tiny-embed", "input": ["hello", "the cat " * 400]}
    )
    assert_openai_error(r, 400, code="context_length_exceeded", param="input")
