"""With ``api_key`` set: the page's files load without the key, the page asks for it once,
keeps it in sessionStorage and sends it with every call."""

from __future__ import annotations

import httpx
import pytest

from tests.browser.conftest import Watched, tiny_ui_config
from tests.support.server import running_server

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]
KEY = "s3cret-ui-key"


@pytest.fixture(scope="module")
def keyed_server(tiny_model_path):
    with running_server(tiny_ui_config(tiny_model_path, api_key=KEY)) as server:
        yield server


def test_the_page_asks_for_the_key_and_then_works(browser, keyed_server):
    context = browser.new_context()
    context.set_default_timeout(20_000)
    try:
        watched = Watched(context.new_page(), keyed_server.base_url)
        page = watched.page
        page.goto(keyed_server.base_url + "/ui/")  # the page itself needs no key
        dialog = page.locator("#key-dialog")
        dialog.wait_for(state="visible")
        assert page.locator("#model option").count() == 0

        page.fill("#key-input", "wrong")
        page.click("#key-submit")
        page.wait_for_function(
            "() => document.getElementById('key-error').textContent.includes('refused')"
        )
        assert dialog.is_visible()

        page.fill("#key-input", KEY)
        page.click("#key-submit")
        page.wait_for_selector("body[data-ready=true]")
        assert not dialog.is_visible()
        assert page.locator("#model option").count() == 2
        page.wait_for_selector(".card[data-model=tiny]")
        assert page.evaluate("() => sessionStorage.getItem('hoshikage.apiKey')") == KEY
        assert page.evaluate("() => localStorage.getItem('hoshikage.apiKey')") is None

        watched.settings(max_tokens="4")
        watched.send("hello")
        assert watched.wait_answer().endswith("4 tokens · hit max tokens")
        page.locator(".card[data-model=tiny]").get_by_role(
            "button", name="Unload tiny", exact=True
        ).click()
        page.wait_for_function(
            "() => document.querySelector('.card[data-model=tiny]').dataset.state === 'unloaded'"
        )

        # Once per tab: a reload does not ask again.
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        page.wait_for_selector(".card[data-model=tiny]")
        assert not dialog.is_visible()
        # The only console errors are the refused (401) calls; no script error.
        assert watched.page_errors == []
        assert all("401" in e for e in watched.console_errors), watched.console_errors
    finally:
        context.close()

    # The data routes still need the key.
    assert httpx.get(keyed_server.base_url + "/api/status", timeout=5).status_code == 401
    assert httpx.get(keyed_server.base_url + "/ui/app.js", timeout=5).status_code == 200
