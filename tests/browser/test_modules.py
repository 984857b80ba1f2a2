"""The page's JavaScript modules on their own, in the browser, on inputs a live server
rarely produces on demand: events split at any byte, and Markdown cut off mid-stream."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]


def test_event_stream_parser_reassembles_events_split_anywhere(watched):
    watched.open()
    result = watched.page.evaluate(
        """async () => {
            const { eventBatches } = await import("./api.js");
            const text = 'data: {"a":"星"}\\n\\n: a comment\\n\\ndata: {"b":1}\\r\\n\\r\\n'
                + 'event: x\\ndata: [DONE]\\n\\n';
            const bytes = new TextEncoder().encode(text);
            const runs = [];
            for (const size of [1, 2, 3, 5, 7, 1000]) {
                const stream = new ReadableStream({
                    start(controller) {
                        for (let i = 0; i < bytes.length; i += size) controller.enqueue(bytes.slice(i, i + size));
                        controller.close();
                    },
                });
                const events = [];
                for await (const batch of eventBatches(new Response(stream))) events.push(...batch);
                runs.push(events);
            }
            return runs;
        }"""
    )
    for events in result:
        assert events == ['{"a":"星"}', '{"b":1}', "[DONE]"]


def test_markdown_mid_stream_and_edge_cases(watched):
    watched.open()
    shapes = watched.page.evaluate(
        """async () => {
            const { renderMarkdown } = await import("./markdown.js");
            const shape = (text) => {
                const div = document.createElement("div");
                div.append(renderMarkdown(text));
                return [...div.children].map((e) => [e.tagName, e.textContent]);
            };
            return {
                open: shape("Look:\\n```py\\nprint('<b>')\\nx = 1"),
                closedLonger: shape("````\\n```\\ninner\\n```\\n````\\nafter"),
                lists: shape("- a\\n- b\\n\\n1. c\\n2) d\\n* e"),
                heading: shape("## Title ##\\ntext"),
                inline: shape("a `<i>x</i>` b **c** d ** e"),
            };
        }"""
    )
    assert shapes["open"] == [["P", "Look:"], ["PRE", "print('<b>')\nx = 1"]]
    assert shapes["closedLonger"] == [["PRE", "```\ninner\n```"], ["P", "after"]]
    assert shapes["lists"] == [["UL", "ab"], ["OL", "cd"], ["UL", "e"]]
    assert shapes["heading"] == [["P", "Title"], ["P", "text"]]
    assert shapes["inline"] == [["P", "a <i>x</i> b c d ** e"]]
    assert watched.page.locator("i, b").count() == 0
