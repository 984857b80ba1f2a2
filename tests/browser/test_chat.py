"""Chatting in the page against the real server: streaming, stats, Stop, the keyboard,
conversations kept in localStorage, and text that never becomes HTML."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from tests.browser.conftest import model_status, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

#: Counts every change to the last answer's text, with its length at that moment.
OBSERVE_ANSWER = """() => {
    window.answerLengths = [];
    new MutationObserver(() => {
        const answers = document.querySelectorAll(".message.assistant .content");
        if (answers.length) window.answerLengths.push(answers[answers.length - 1].textContent.length);
    }).observe(document.getElementById("messages"), {childList: true, subtree: true, characterData: true});
}"""


def test_answer_streams_in_steps_then_shows_ttft_and_speed(watched):
    watched.open()
    page = watched.page
    page.select_option("#model", "tiny-alias")
    watched.settings(temperature="0", max_tokens="300")  # greedy: the tiny model never ends early
    page.evaluate(OBSERVE_ANSWER)
    page.fill("#prompt", "hello")
    page.press("#prompt", "Shift+Enter")  # a new line, not a send
    page.type("#prompt", "the cat")
    assert page.locator(".message").count() == 0
    page.press("#prompt", "Enter")
    stats = watched.wait_answer()
    assert re.fullmatch(r"TTFT \d+\.\d\d s · \d+\.\d tok/s · 300 tokens · hit max tokens", stats), (
        stats
    )
    user = page.locator(".message.user .content").last.inner_text()
    assert user == "hello\nthe cat"
    final = page.locator(".message.assistant .content").last.text_content()
    lengths = [n for n in page.evaluate("() => window.answerLengths") if n]
    partial = {n for n in lengths if n < len(final)}
    assert len(partial) >= 2, f"the answer arrived in {len(set(lengths))} step(s): {lengths[:20]}"
    assert lengths == sorted(lengths)  # it only grows
    assert page.locator(".message.assistant .who").last.inner_text() == "tiny-alias"
    assert page.is_enabled("#send") and not page.is_enabled("#stop")
    assert watched.console_errors == [] and watched.page_errors == []


def test_stop_cancels_the_answer_and_frees_the_slot_at_once(watched):
    watched.open()
    page = watched.page

    def unspeculated(route):
        # Speculation drafts the tiny model's repeats so well that 3000 tokens can end
        # before Stop is clicked: the page's request goes out with it off.
        body = json.loads(route.request.post_data)
        route.continue_(post_data=json.dumps({**body, "speculative": False}))

    page.route("**/v1/chat/completions", unspeculated)
    # 7000 tokens: over 4 s even at the ~1,500 tok/s the tiny model reaches on a quiet
    # machine, while the panel's once-a-second poll shows it busy before Stop is clicked; a
    # stopped answer leaves the next turn room in the 8192-token context.
    watched.settings(temperature="0", max_tokens="7000")
    watched.send("the cat sat")
    answer = page.locator(".message.assistant .content").last
    page.wait_for_function(
        "() => { const a = document.querySelectorAll('.message.assistant .content'); "
        "return a.length && a[a.length - 1].textContent.length > 20; }"
    )
    busy = model_status(watched.base_url)
    assert busy["running_sequences"] == 1 and busy["in_use"] == 1, busy
    # The panel shows it too (it polls once a second).
    card = page.locator(".card[data-model=tiny]")
    page.wait_for_function(
        "() => document.querySelector('.card[data-model=tiny]').dataset.state === 'busy'"
    )
    assert card.locator("[data-field=slots]").inner_text() == "1 of 4"
    assert card.locator("[data-field=unload]").inner_text() == "in use"
    assert page.locator("#server-figures [data-field=running]").inner_text() == "1"
    page.click("#stop")
    clicked = time.monotonic()
    free = wait_for(
        lambda: (lambda m: m["running_sequences"] == 0 and m["in_use"] == 0)(
            model_status(watched.base_url)
        ),
        5.0,
    )
    freed_after = time.monotonic() - clicked
    assert free, "the slot was not freed after Stop"
    assert freed_after < 1.0, f"the slot was freed {freed_after:.2f}s after Stop"
    stats = watched.wait_answer()
    assert stats.endswith("· stopped"), stats
    tokens = int(re.search(r"(\d+) tokens", stats).group(1))
    assert 0 < tokens < 7000
    assert len(answer.text_content()) > 20
    assert page.is_enabled("#send") and not page.is_enabled("#stop")
    # The page (and the server) can go on.
    watched.settings(temperature="0", max_tokens="5")
    watched.send("again")
    assert watched.wait_answer().endswith("5 tokens · hit max tokens")
    assert watched.page_errors == []


def test_markup_in_a_message_stays_text(watched):
    watched.open()
    page = watched.page
    watched.settings(max_tokens="3")
    payload = "<img src=x onerror=alert(1)> and <script>alert(2)</script>"
    watched.send(payload)
    watched.wait_answer()
    page.wait_for_timeout(300)
    assert page.locator(".message.user .content").inner_text() == payload
    assert page.locator("#conversation-list .open").first.inner_text() == payload
    assert page.locator("img").count() == 0 and page.locator("body script").count() == 0
    assert watched.dialogs == [] and watched.page_errors == []


def test_model_markdown_is_built_from_text_nodes(watched):
    """The renderer, fed chosen model output: a canned event stream replaces the server's
    answer (only in this test), so the output can hold markup and Markdown."""
    text = (
        "Here:\n```html\n<img src=x onerror=alert(1)>\n```\n"
        "- <b>bold?</b>\n- `code` and **strong**\n\n"
        "3. three\n4. four\n\n<script>alert(2)</script> <img src=y onerror=alert(3)>"
    )
    events = [
        {
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ]
        }
    ]
    events += [
        {"choices": [{"index": 0, "delta": {"content": text[i : i + 7]}, "finish_reason": None}]}
        for i in range(0, len(text), 7)
    ]
    events += [{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    watched.open()
    page = watched.page
    page.route(
        "**/v1/chat/completions",
        lambda route: route.fulfill(
            status=200, headers={"Content-Type": "text/event-stream"}, body=body
        ),
    )
    watched.send("show me markdown")
    watched.wait_answer()
    content = page.locator(".message.assistant .content").last
    assert content.locator("pre code").inner_text() == "<img src=x onerror=alert(1)>"
    assert content.locator("pre code").get_attribute("data-lang") == "html"
    assert content.locator("ul > li").all_inner_texts() == ["<b>bold?</b>", "code and strong"]
    assert content.locator("ul > li code").inner_text() == "code"
    assert content.locator("ul > li strong").inner_text() == "strong"
    assert content.locator("ol").get_attribute("start") == "3"
    assert content.locator("ol > li").all_inner_texts() == ["three", "four"]
    assert "<script>alert(2)</script> <img src=y onerror=alert(3)>" in content.inner_text()
    assert page.locator("img, b, #messages script").count() == 0
    # Plain text mode shows the raw text.
    watched.open_settings()
    page.click("#markdown")
    assert content.text_content() == text
    page.wait_for_timeout(300)
    assert watched.dialogs == [] and watched.page_errors == []


def test_conversations_are_kept_switched_and_deleted(watched):
    watched.open()
    page = watched.page
    watched.settings(max_tokens="3")
    watched.send("first conversation")
    watched.wait_answer()
    page.click("#new-chat")
    assert page.locator(".message").count() == 0
    watched.open_settings()
    page.fill("#system", "You are terse.")
    page.dispatch_event("#system", "change")
    watched.send("second conversation")
    watched.wait_answer()
    titles = page.locator("#conversation-list .open")
    assert titles.all_inner_texts() == ["second conversation", "first conversation"]
    # Switch back, then reload: both are still there, the open one too.
    titles.nth(1).click()
    assert page.locator(".message.user .content").all_inner_texts() == ["first conversation"]
    assert page.input_value("#system") == ""
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert page.locator(".message.user .content").all_inner_texts() == ["first conversation"]
    assert (
        page.locator("#conversation-list .open[aria-current=true]").inner_text()
        == "first conversation"
    )
    page.locator("#conversation-list .open").first.click()
    assert page.input_value("#system") == "You are terse."
    page.click("#conversation-list li:first-child .delete")
    assert page.locator("#conversation-list .open").all_inner_texts() == ["first conversation"]
    stored = json.loads(page.evaluate("() => localStorage.getItem('hoshikage.conversations')"))
    assert [c["title"] for c in stored] == ["first conversation"]
    assert [m["role"] for m in stored[0]["messages"]] == ["user", "assistant"]
    assert stored[0]["messages"][1]["stats"]["tokens"] == 3


def test_a_bad_setting_shows_the_servers_message(watched):
    watched.open()
    page = watched.page
    watched.settings(keep_alive="soon")
    watched.send("hi")
    error = page.locator(".message.assistant .error").last
    error.wait_for()
    assert "keep_alive" in error.inner_text()
    assert page.is_enabled("#send")
    assert httpx.get(watched.base_url + "/health", timeout=5).status_code == 200


def test_a_chat_longer_than_the_context_goes_on(watched):
    """Past the model's 8192-token context the page's chat still answers: its oldest turns
    are left out (it sends ``truncate``), where the same conversation sent plainly is
    refused."""
    watched.open()
    page = watched.page
    watched.settings(temperature="0", max_tokens="8")

    def turn(text: str, number: int) -> None:
        watched.send(text)
        stats = watched.wait_answer(timeout=90_000)
        assert page.locator(".message.assistant").count() == number
        assert page.locator(".message.assistant .error").count() == 0, stats

    def over_the_context(text: str) -> bool:
        """Whether the conversation so far and ``text``, sent plainly, is refused."""
        said = page.locator(".message .content").all_text_contents()
        roles = ["user", "assistant"] * len(said)
        messages = [{"role": r, "content": t} for r, t in zip(roles, said, strict=False)]
        plain = httpx.post(
            watched.base_url + "/v1/chat/completions",
            json={"model": "tiny", "messages": [*messages, {"role": "user", "content": text}]},
            timeout=60,
        )
        if plain.status_code == 200:
            return False
        assert plain.json()["error"]["code"] == "context_length_exceeded", plain.text
        return True

    # Long messages, each a few thousand tokens: the conversation outgrows 8192 in a few.
    words = ["the cat", "sat on", "the mat", "and then", "it slept", "all day", "long"]
    for number, text in enumerate((f"{word} " * 500 for word in words), start=1):
        if over_the_context(text):
            turn(text, number)  # answered all the same
            break
        turn(text, number)
    else:
        raise AssertionError("the conversation never outgrew the context")
