"""A model that reasons: the page shows its reasoning as it streams, in a collapsed
"Thinking" block above the answer, with the time spent thinking, and never in the answer.

The model is the Qwen3.5 fixture (its real tokenizer and template, whose generation prompt
opens the think block) with ``reasoning_budget = 6``: the engine closes the block after six
tokens, and the answer follows."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import tiny_ui_config
from tests.support.server import running_server

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def server(tiny_model_path, family_model):
    config = tiny_ui_config(tiny_model_path)
    thinker = family_model("qwen35", "Qwen3.5-4B")
    config["models"].append(
        {
            "name": "thinker",
            "path": str(thinker),
            "n_ctx": 1024,
            "reasoning_budget": 6,
            # A random model repeats itself unless it samples from the whole distribution.
            "seed": 2,
            "top_k": 0,
            "top_p": 1.0,
            "min_p": 0.0,
        }
    )
    with running_server(config) as srv:
        yield srv


def test_reasoning_shows_in_a_collapsed_thinking_block(watched):
    watched.open()
    page = watched.page
    page.select_option("#model", "thinker")
    watched.settings(temperature="2", max_tokens="24")
    watched.send("hello")
    watched.wait_answer()
    message = page.locator(".message.assistant").last
    block = message.locator("details.thinking")
    assert block.is_visible()
    assert block.evaluate("d => d.open") is False  # collapsed
    assert re.fullmatch(r"Thought for \d+\.\d s", block.locator("summary").inner_text())
    reasoning = block.locator(".reasoning").text_content()
    answer = message.locator(".content").text_content()
    assert reasoning.strip() and answer.strip()
    assert reasoning.strip() not in answer
    block.locator("summary").click()
    assert block.evaluate("d => d.open") is True
    assert watched.console_errors == [] and watched.page_errors == []


def test_a_model_without_reasoning_shows_no_thinking_block(watched):
    watched.open()
    page = watched.page
    page.select_option("#model", "tiny-alias")
    watched.settings(temperature="0", max_tokens="5")
    watched.send("hello")
    watched.wait_answer()
    assert page.locator(".message.assistant").last.locator("details.thinking").is_hidden()
