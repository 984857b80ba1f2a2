"""Fixtures for the browser tests: Debian's ``chromium`` driven by Playwright's sync API,
against a real ``hoshikage serve`` on the tiny model.

Playwright cannot download its own browser here, so it launches the system's ``chromium``
(``executable_path``). Without it these tests fail, saying how to install it or skip them:
they are never skipped silently. The tests are plain (non-async) functions, so pytest-asyncio
runs no event loop under Playwright's sync API.
"""

from __future__ import annotations

import json
import shutil
import time

import httpx
import pytest

from tests.support.server import running_server

MISSING_CHROMIUM = (
    "The browser tests need Chromium: install it with "
    "`apt-get install chromium` (Debian/Ubuntu), or deselect them with `-m 'not browser'`."
)
MISSING_PLAYWRIGHT = (
    "The browser tests need Playwright for Python: `pip install -e '.[test]'`, "
    "or deselect them with `-m 'not browser'`."
)


def tiny_ui_config(tiny_model_path, **server) -> dict:
    """The tiny model (alias ``tiny-alias``), with a context long enough for long answers."""
    return {
        "server": {**server},
        "models": [
            {"name": "tiny", "path": str(tiny_model_path), "aliases": ["tiny-alias"], "n_ctx": 8192}
        ],
    }


@pytest.fixture(scope="package")
def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail(MISSING_CHROMIUM, pytrace=False)
    return path


@pytest.fixture(scope="package")
def browser(chromium_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(MISSING_PLAYWRIGHT, pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="package")
def server(tiny_model_path):
    """One server for the package's tests; each test sets up the model state it needs."""
    with running_server(tiny_ui_config(tiny_model_path)) as server:
        yield server


class Watched:
    """A page with what it reported: console errors, uncaught errors and JS dialogs."""

    def __init__(self, page, base_url: str):
        self.page = page
        self.base_url = base_url
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        page.on("dialog", self._dialog)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def open(self, path: str = "/ui/"):
        """Go to the page and wait until it has listed the models and polled the status."""
        response = self.page.goto(self.base_url + path)
        self.page.wait_for_selector("body[data-ready=true]")
        self.page.wait_for_selector(".card[data-model=tiny]")
        return response

    def open_settings(self) -> None:
        if not self.page.locator("details.more").evaluate("d => d.open"):
            self.page.click("details.more summary")

    def settings(
        self, *, temperature: str = "", max_tokens: str = "", keep_alive: str = ""
    ) -> None:
        page = self.page
        self.open_settings()
        page.fill("#temperature", temperature)
        page.fill("#max-tokens", max_tokens)
        page.fill("#keep-alive", keep_alive)

    def send(self, text: str) -> None:
        self.page.fill("#prompt", text)
        self.page.press("#prompt", "Enter")

    def wait_answer(self, timeout: float = 30_000) -> str:
        """Wait for the last answer's stats line (it is written when the answer ends)."""
        stats = self.page.locator(".message.assistant").last.locator(".stats")
        stats.wait_for(state="visible", timeout=timeout)
        return stats.inner_text()

    def card_state(self, model: str = "tiny") -> str:
        return self.page.locator(f".card[data-model={model}]").get_attribute("data-state")


@pytest.fixture
def context_options() -> dict:
    return {"viewport": {"width": 1280, "height": 800}}


@pytest.fixture
def watched(browser, server, context_options):
    context = browser.new_context(**context_options)
    context.set_default_timeout(20_000)
    page = context.new_page()
    try:
        yield Watched(page, server.base_url)
    finally:
        context.close()


def model_status(base_url: str, model: str = "tiny", headers: dict | None = None) -> dict:
    status = httpx.get(base_url + "/api/status", headers=headers or {}, timeout=10).json()
    return next(m for m in status["models"] if m["name"] == model)


def wait_for(predicate, timeout: float, interval: float = 0.02):
    """Poll ``predicate`` until it returns a truthy value; return it, or None at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def sent_bodies(page) -> list:
    """The bodies of the page's ``/v1/chat/completions`` requests from now on, as sent."""
    bodies: list = []
    page.on(
        "request",
        lambda r: r.url.endswith("/v1/chat/completions") and bodies.append(json.loads(r.post_data)),
    )
    return bodies
