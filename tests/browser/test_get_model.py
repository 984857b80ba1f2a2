"""The page's "get a model" box in Chromium: the fit verdict for a reference before any
download (read from the loopback hub by ``Range``), then a pull with its progress bar, after
which the model is in the picker and answers a chat, with no restart."""

from __future__ import annotations

import pytest

from tests.support.hubs import Hubs
from tests.support.server import running_server

from .conftest import Watched, tiny_ui_config

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


@pytest.fixture
def hub_server(tiny_model_path, tmp_path):
    with Hubs() as hubs:
        hubs.add_hf("someorg/tiny-GGUF", {"Tiny-Q8_0.gguf": tiny_model_path})
        config = tiny_ui_config(tiny_model_path) | {"pull": {"dir": str(tmp_path / "store")}}
        with running_server(config, env={"HF_ENDPOINT": hubs.hf}) as server:
            yield server, hubs


def test_the_box_shows_the_fit_then_pulls_and_serves(browser, hub_server):
    server, hubs = hub_server
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    watched = Watched(context.new_page(), server.base_url)
    try:
        page = watched.page
        watched.open()
        hubs.delay = 0.05  # slow enough that the bar is seen moving
        page.fill("#get-ref", "hf.co/someorg/tiny-GGUF:Q8_0")
        verdict = page.locator("#get-verdict .verdict[data-tag=Q8_0]")
        verdict.wait_for()  # typed, then the verdict comes by itself
        assert verdict.get_attribute("data-fits") == "yes"
        assert "fits" in verdict.inner_text() and "KiB KV per token" in verdict.inner_text()
        assert "Largest that fits: Q8_0" in page.inner_text("#get-verdict")
        assert not [p for m, p, h in hubs.log if m == "GET" and "/cdn/" in p and "range" not in h]
        page.click("#get-pull")
        bar = page.locator("#get-progress .download")
        bar.wait_for()
        assert "Tiny-Q8_0.gguf" in bar.inner_text()
        page.wait_for_selector("#get-progress .download[data-done=true]")
        page.wait_for_function(
            "document.querySelector('#get-result').textContent.includes('Served as')"
        )
        assert page.inner_text("#get-result") == "Served as tiny-q8_0"
        assert page.locator("#model").input_value() == "tiny-q8_0"
        page.wait_for_selector(".card[data-model=tiny-q8_0]")
        watched.send("hello")
        watched.wait_answer()
        assert not watched.page_errors and not watched.console_errors, (
            watched.page_errors + watched.console_errors
        )
        # a bad reference is an error in the box, not an exception
        page.fill("#get-ref", "hf.co/someorg/nothing-here:Q8_0")
        page.click("#get-plan")
        page.wait_for_selector("#get-error:not([hidden])")
        assert "not found" in page.inner_text("#get-error")
    finally:
        hubs.delay = 0.0
        context.close()
