"""The status panel against the real server: Load and Unload, the idle unload after a
1-second keep-alive, and the memory chart following both."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from tests.browser.conftest import model_status

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

LAST_SHARE = "() => window.hoshikage.memory.at(-1).models.tiny"


def unload(base_url: str) -> None:
    httpx.post(base_url + "/api/models/tiny/unload", timeout=10).raise_for_status()


def test_load_and_unload_buttons_change_the_state(watched):
    unload(watched.base_url)
    watched.open()
    page = watched.page
    card = page.locator(".card[data-model=tiny]")
    page.wait_for_function(
        "() => document.querySelector('.card[data-model=tiny]').dataset.state === 'unloaded'"
    )
    assert card.locator("[data-field=memory]").inner_text() == "–"
    assert card.locator("[data-field=slots]").inner_text() == "–"
    assert not card.get_by_role("button", name="Unload tiny", exact=True).is_enabled()

    card.get_by_role("button", name="Load tiny", exact=True).click()
    page.wait_for_function(
        "() => document.querySelector('.card[data-model=tiny]').dataset.state === 'loaded'"
    )
    assert model_status(watched.base_url)["state"] == "loaded"
    assert re.fullmatch(r"[\d.]+ MiB", card.locator("[data-field=memory]").inner_text())
    assert card.locator("[data-field=slots]").inner_text() == "0 of 4"
    assert re.fullmatch(
        r"in \d:\d\d", card.locator("[data-field=unload]").inner_text()
    )  # 5 min default
    assert not card.get_by_role("button", name="Load tiny", exact=True).is_enabled()
    page.wait_for_function(f"() => ({LAST_SHARE})() > 0")

    card.get_by_role("button", name="Unload tiny", exact=True).click()
    page.wait_for_function(
        "() => document.querySelector('.card[data-model=tiny]').dataset.state === 'unloaded'"
    )
    assert model_status(watched.base_url)["state"] == "unloaded"
    assert page.evaluate(LAST_SHARE) == 0
    assert watched.console_errors == [] and watched.page_errors == []


def test_one_second_keep_alive_unloads_and_the_chart_drops(watched):
    base = watched.base_url
    httpx.post(
        base + "/api/models/tiny/load", params={"keep_alive": "-1"}, timeout=30
    ).raise_for_status()
    watched.open()
    page = watched.page
    card = page.locator(".card[data-model=tiny]")
    page.wait_for_function(f"() => ({LAST_SHARE})() > 0")
    assert card.locator("[data-field=unload]").inner_text() == "stays loaded"
    loaded_share = page.evaluate(LAST_SHARE)

    watched.settings(max_tokens="5", keep_alive="1s")
    watched.send("hello")
    watched.wait_answer()
    # The chat's keep-alive replaces the load's "never": idle for a second, it unloads.
    page.wait_for_function(
        "() => document.querySelector('.card[data-model=tiny]').dataset.state === 'unloaded'",
        timeout=15_000,
    )
    assert model_status(base)["state"] == "unloaded"
    page.wait_for_function(f"() => ({LAST_SHARE})() === 0")
    points = page.evaluate("() => window.hoshikage.memory")
    shares = [p["models"]["tiny"] for p in points]
    assert max(shares) >= loaded_share > 0 and shares[-1] == 0
    last = points[-1]
    assert last["rss"] > 0  # the server's own resident memory stays on the chart
    assert card.locator("[data-field=memory]").inner_text() == "–"
    assert "models 0.0 MiB" in page.get_attribute("#memory-chart", "aria-label")
    legend = page.locator("#memory-legend li[data-series=tiny] .figure").inner_text()
    assert legend == "0.0 MiB"
    assert watched.page_errors == []


def test_the_card_counts_the_prompts_kept_on_disk(watched):
    base = watched.base_url
    httpx.post(base + "/api/models/tiny/load", timeout=30).raise_for_status()
    body = {
        "model": "tiny",
        "messages": [
            {"role": "system", "content": "hello world red blue green " * 20},
            {"role": "user", "content": "yes"},
        ],
        "max_tokens": 4,
        "temperature": 0,
    }
    httpx.post(base + "/v1/chat/completions", json=body, timeout=60).raise_for_status()
    unload(base)
    # The server counts the prompts on disk in the background, at most once a second, and
    # a status shows the last count: wait for the count to include the one just kept.
    deadline = time.monotonic() + 20
    while not model_status(base)["cached_prompts"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert model_status(base)["cached_prompts"] >= 1
    watched.open()
    page = watched.page
    # The card shows the count the server reports. Another test's prompt may still be
    # landing on the same disk cache (a save at unload runs in the background), so the
    # count may rise once more: compare the card with the status as they are now.
    disk = page.locator(".card[data-model=tiny] [data-field=disk]")
    deadline = time.monotonic() + 20
    while True:
        kept = model_status(base)["cached_prompts"]
        want = f"{kept} prompt" + ("" if kept == 1 else "s")
        shown = disk.text_content() if disk.count() else None
        if shown == want:
            break
        assert time.monotonic() < deadline, (shown, want)
        time.sleep(0.2)
    # the progress bar shows only while a model loads
    assert not page.locator(".card[data-model=tiny] [data-field=progress]").is_visible()
    assert watched.page_errors == []


def test_the_card_shows_the_share_of_drafts_accepted(watched):
    body = {
        "model": "tiny",
        "prompt": "the cat sat on the mat the cat sat on the mat the cat",
        "max_tokens": 80,
        "temperature": 0,
        "logit_bias": {"2": -100},
    }
    httpx.post(watched.base_url + "/v1/completions", json=body, timeout=60).raise_for_status()
    model = model_status(watched.base_url)
    assert model["draft_tokens"] > 0
    watched.open()
    field = watched.page.locator(".card[data-model=tiny] [data-field=drafts]")
    share = round(100 * model["draft_accepted"] / model["draft_tokens"])
    field.get_by_text(f"{share}% of {model['draft_tokens']}").wait_for()
    assert watched.console_errors == [] and watched.page_errors == []
