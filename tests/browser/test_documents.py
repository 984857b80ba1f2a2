"""Documents in the page, against a real server: a PDF and a text file attached with the
Attach button are shown by name, sent as chat ``file`` parts, read by the server for a model
without any projector, and shown in the conversation; a damaged PDF's 400 is the answer's
error."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.browser.conftest import sent_bodies
from tests.support.documents import pdf

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


def test_a_pdf_and_a_text_file_are_sent_and_read(watched, server, tmp_path):
    watched.open()
    page = watched.page
    watched.settings(temperature="0", max_tokens="3")
    report = tmp_path / "report.pdf"
    report.write_bytes(pdf("The lighthouse keeper counted 41 ships."))
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\nThe fog lifted at noon.\n")
    bodies = sent_bodies(page)
    page.set_input_files("#attach-input", [str(report), str(notes)])
    chips = page.locator("#attachments .file-chip")
    chips.nth(1).wait_for()
    assert chips.all_inner_texts() == ["report.pdf", "notes.md"]
    watched.send("What do they say?")
    watched.wait_answer()
    assert page.locator("#attachments").is_hidden()
    (body,) = bodies
    parts = body["messages"][-1]["content"]
    files = [p["file"] for p in parts if p["type"] == "file"]
    assert [f["filename"] for f in files] == ["report.pdf", "notes.md"]
    assert files[0]["file_data"].startswith("data:application/pdf;base64,")
    assert base64.b64decode(files[0]["file_data"].split(",", 1)[1]) == report.read_bytes()
    assert parts[-1] == {"type": "text", "text": "What do they say?"}
    # The conversation shows them, and the server read them: the page's request, sent again,
    # is as many prompt tokens as the same request with the documents' text in their place.
    shown = page.locator(".message.user").last.locator(".files .file-chip")
    assert shown.all_inner_texts() == ["report.pdf", "notes.md"]
    assert page.locator(".message.assistant .error").count() == 0

    def prompt_tokens(messages) -> int:
        request = {"model": body["model"], "messages": messages, "max_tokens": 1}
        r = httpx.post(server.base_url + "/v1/chat/completions", json=request, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()["usage"]["prompt_tokens"]

    texts = [
        "Document: report.pdf\n\nThe lighthouse keeper counted 41 ships.",
        "Document: notes.md\n\n# Notes\nThe fog lifted at noon.\n",
    ]
    as_text = [{"type": "text", "text": t} for t in texts] + parts[-1:]
    user = {"role": "user", "content": as_text}
    assert prompt_tokens(body["messages"]) == prompt_tokens([*body["messages"][:-1], user])
    assert watched.console_errors == [] and watched.page_errors == []


def test_a_damaged_pdf_is_the_answers_error(watched, tmp_path):
    watched.open()
    page = watched.page
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 this is not the rest of a PDF")
    page.set_input_files("#attach-input", str(broken))
    page.locator("#attachments .file-chip").wait_for()
    watched.send("read it")
    message = page.locator(".message.assistant .error").last
    message.wait_for()
    assert "PDF cannot be read" in message.inner_text()
