"""Each model's real context, where each API has a place for it, and the error each client
acts on when a conversation outgrows it.

The context is what a request gets here: the loaded model's window, else its configured
``n_ctx`` (the Qwen3 fixture's GGUF says 4096; it is served with 2048). ``GET /v1/models``
is read by the OpenAI SDK (``context_length``) and the Anthropic SDK (``ModelInfo``'s
``max_input_tokens``), Ollama's ``/api/show`` by Ollama clients (``<arch>.context_length``)."""

from __future__ import annotations

from datetime import datetime

import pytest

anthropic = pytest.importorskip("anthropic")
ollama = pytest.importorskip("ollama")
openai = pytest.importorskip("openai")

from tests.support.server import running_server  # noqa: E402

pytestmark = pytest.mark.timeout(180)

N_CTX = 2048


@pytest.fixture(scope="module")
def server(family_model):
    qwen3 = family_model("qwen35", "Qwen-Qwen3-0.6B")
    config = {"models": [{"name": "qwen3", "path": str(qwen3), "n_ctx": N_CTX, "aliases": ["q"]}]}
    with running_server(config) as srv:
        yield srv


def test_every_api_advertises_the_served_context(server):
    oai = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
    claude = anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0)
    olla = ollama.Client(host=server.base_url)
    for loaded in (False, True):
        cards = {m.id: m for m in oai.models.list().data}
        assert set(cards) == {"qwen3", "q"}
        assert cards["qwen3"].model_extra["context_length"] == N_CTX
        assert cards["q"].model_extra["context_length"] == N_CTX
        page = claude.models.list()
        infos = {m.id: m for m in page.data}
        assert infos["qwen3"].max_input_tokens == N_CTX and infos["qwen3"].type == "model"
        assert infos["qwen3"].display_name == "qwen3"
        assert isinstance(infos["qwen3"].created_at, datetime)
        assert claude.models.retrieve("q").max_input_tokens == N_CTX
        assert page.has_more is False and page.first_id == "qwen3" and page.last_id == "q"
        info = olla.show("qwen3").modelinfo
        assert info["general.architecture"] == "llama" and info["llama.context_length"] == N_CTX
        if not loaded:
            oai.chat.completions.create(
                model="qwen3", max_tokens=1, messages=[{"role": "user", "content": "hi"}]
            )


def test_a_prompt_over_the_context_is_the_error_each_client_acts_on(server):
    long = [{"role": "user", "content": "cat " * 3000}]
    oai = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="qwen3", max_tokens=8, messages=long)
    assert info.value.code == "context_length_exceeded" and info.value.param == "messages"
    claude = anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model="qwen3", max_tokens=8, messages=long)
    message = info.value.response.json()["error"]["message"]
    assert message.startswith("prompt is too long: ") and message.endswith(f" > {N_CTX} maximum")


def test_a_pooled_kv_cache_advertises_the_pool_before_and_after_the_load(family_model):
    """With ``kv_unified`` the slots share one pool of ``n_ctx × parallel`` cells and one
    request may fill it: that is the context every API says, before the load as after it
    (it said ``n_ctx`` until the load), and a prompt between the two is answered."""
    qwen3 = family_model("qwen35", "Qwen-Qwen3-0.6B")
    entry = {"name": "pooled", "path": str(qwen3), "n_ctx": 512, "parallel": 2}
    config = {"models": [{**entry, "kv_unified": True}]}
    with running_server(config) as server:
        oai = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
        olla = ollama.Client(host=server.base_url)
        for loaded in (False, True):
            card = oai.models.retrieve("pooled")
            assert card.model_extra["context_length"] == 1024, (loaded, card)
            assert olla.show("pooled").modelinfo["llama.context_length"] == 1024, loaded
            assert "num_ctx                        1024" in olla.show("pooled").parameters
            if not loaded:
                long = [{"role": "user", "content": "cat " * 700}]
                reply = oai.chat.completions.create(model="pooled", max_tokens=1, messages=long)
                assert 512 < reply.usage.prompt_tokens < 1024
        with pytest.raises(openai.BadRequestError) as info:
            oai.chat.completions.create(
                model="pooled", max_tokens=1, messages=[{"role": "user", "content": "cat " * 1200}]
            )
        assert info.value.code == "context_length_exceeded"
