"""The page itself: it loads from / with no console errors under its CSP, shows the status,
and works at phone width and in both colour schemes."""

from __future__ import annotations

import httpx
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def test_page_loads_from_root_with_csp_and_no_console_errors(watched):
    response = watched.open("/")
    page = watched.page
    assert page.url == watched.base_url + "/ui/"
    csp = response.headers["content-security-policy"]
    assert (
        "default-src 'self'" in csp and "connect-src 'self'" in csp and "script-src 'self'" in csp
    )
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    # The model picker lists the model and its alias, marked as one.
    options = page.locator("#model option")
    assert options.evaluate_all("os => os.map(o => o.value)") == ["tiny", "tiny-alias"]
    assert "alias of tiny" in options.nth(1).inner_text()
    # The status panel polls: the chart has points and the server figures are shown.
    page.wait_for_function("() => window.hoshikage.memory.length >= 2")
    assert page.locator("#server-figures [data-field=rss]").inner_text().endswith("MiB")
    assert watched.card_state() in ("unloaded", "loaded")
    assert watched.console_errors == [] and watched.page_errors == [] and watched.dialogs == []


def test_root_answers_probes_in_plain_text(server):
    """Ollama's clients probe ``/``: anything but a browser gets one line of text."""
    for method in ("GET", "HEAD"):
        r = httpx.request(method, server.base_url + "/", timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert r.text == ("Hoshikage is running" if method == "GET" else "")
    r = httpx.get(server.base_url + "/", headers={"Accept": "text/html"}, timeout=10)
    assert r.status_code == 302 and r.headers["location"] == "/ui/"


def test_page_scripts_run_only_under_the_policy(watched):
    """The CSP is enforced, not only sent: inline script and HTML sinks are refused."""
    watched.open()
    page = watched.page
    sink = page.evaluate(
        """() => {
            try { document.body.insertAdjacentHTML("beforeend", "<b id=x>x</b>"); return "allowed"; }
            catch (e) { return e.name; }
        }"""
    )
    assert sink == "TypeError" and page.locator("#x").count() == 0
    try:
        page.add_script_tag(content="window.inlineRan = true;")
    except Exception:
        pass  # Playwright reports the refused script
    assert page.evaluate("() => window.inlineRan") is None
    # The (expected) violations are reported on the console; nothing else is.
    assert all("Content Security Policy" in e or "Trusted" in e for e in watched.console_errors), (
        watched.console_errors
    )


@pytest.mark.parametrize(
    "context_options", [{"viewport": {"width": 390, "height": 844}, "is_mobile": True}]
)
def test_phone_width_has_no_horizontal_scroll(watched):
    watched.open()
    page = watched.page
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    for selector in ("#prompt", "#send", "#model"):
        box = page.locator(selector).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, selector


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_colours_follow_the_system_scheme(browser, server, scheme):
    context = browser.new_context(color_scheme=scheme)
    try:
        page = context.new_page()
        page.goto(server.base_url + "/ui/")
        page.wait_for_selector("body[data-ready=true]")
        rgb = page.evaluate("getComputedStyle(document.body).backgroundColor")
        brightness = sum(int(v) for v in rgb[rgb.index("(") + 1 : rgb.index(")")].split(",")[:3])
        assert (brightness > 600) if scheme == "light" else (brightness < 150), rgb
    finally:
        context.close()
