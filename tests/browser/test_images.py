"""Images in the page, against a real server whose model has a projector: the Attach
button, pasting and dropping an image, the thumbnails, the image in the conversation and in
the request, and a refused image shown as the answer's error."""

from __future__ import annotations

import base64

import pytest

from tests.browser.conftest import Watched, sent_bodies
from tests.support.projectors import png_bytes
from tests.support.server import running_server

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def vision_server(tiny_vision_dir):
    config = {
        "models": [
            {
                "name": "tiny",
                "path": str(tiny_vision_dir / "tiny-vision.gguf"),
                "mmproj": str(tiny_vision_dir / "mmproj-tiny-vision.gguf"),
                "n_ctx": 1024,
            }
        ]
    }
    with running_server(config) as server:
        yield server


@pytest.fixture
def page_on(browser, vision_server):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(20_000)
    page = context.new_page()
    try:
        yield Watched(page, vision_server.base_url)
    finally:
        context.close()


def test_attach_button_sends_the_image_and_shows_it(page_on, tmp_path):
    watched = page_on
    watched.open()
    page = watched.page
    assert "vision" in page.locator("#model option[value=tiny]").inner_text()
    bodies = sent_bodies(page)
    picture = tmp_path / "red.png"
    picture.write_bytes(png_bytes(color=(220, 0, 0)))
    watched.settings(temperature="0", max_tokens="4")
    page.set_input_files("#attach-input", str(picture))
    thumbnail = page.locator("#attachments img")
    thumbnail.wait_for()
    assert thumbnail.get_attribute("alt") == "red.png"
    watched.send("what is this")
    stats = watched.wait_answer()
    assert "4 tokens" in stats, stats
    # the image went with the message, as an image_url part, and is shown in it
    parts = bodies[-1]["messages"][-1]["content"]
    assert parts[0] == {"type": "text", "text": "what is this"}
    assert parts[1]["type"] == "image_url"
    assert (
        parts[1]["image_url"]["url"]
        == "data:image/png;base64," + base64.b64encode(picture.read_bytes()).decode()
    )
    shown = page.locator(".message.user .images img")
    assert shown.count() == 1 and shown.get_attribute("src").startswith("data:image/png;base64,")
    assert page.locator("#attachments").is_hidden()  # the list is emptied once sent
    # the next turn sends the earlier image again (the server reuses its KV)
    watched.send("and now")
    watched.wait_answer()
    assert bodies[-1]["messages"][0]["content"][1]["type"] == "image_url"
    # after a reload the conversation still shows it (localStorage)
    watched.open()
    assert page.locator(".message.user .images img").count() == 1
    assert watched.console_errors == [] and watched.page_errors == []


def test_paste_and_drop_attach_images_and_remove_takes_one_away(page_on):
    watched = page_on
    watched.open()
    page = watched.page
    encoded = base64.b64encode(png_bytes(color=(0, 0, 200))).decode()
    make_file = f"""() => {{
        const bytes = Uint8Array.from(atob("{encoded}"), (c) => c.charCodeAt(0));
        return new File([bytes], "blue.png", {{ type: "image/png" }});
    }}"""
    page.evaluate(
        f"""() => {{
        const file = ({make_file})();
        const data = new DataTransfer();
        data.items.add(file);
        const paste = new ClipboardEvent("paste", {{ clipboardData: data, bubbles: true, cancelable: true }});
        document.getElementById("prompt").dispatchEvent(paste);
        const drop = new DragEvent("drop", {{ dataTransfer: data, bubbles: true, cancelable: true }});
        document.getElementById("composer").dispatchEvent(drop);
    }}"""
    )
    page.wait_for_function("() => document.querySelectorAll('#attachments img').length === 2")
    page.click("#attachments li:first-child .remove")
    assert page.locator("#attachments img").count() == 1


def test_a_file_that_is_neither_an_image_nor_a_document_is_refused_in_the_page(page_on, tmp_path):
    watched = page_on
    watched.open()
    page = watched.page
    archive = tmp_path / "notes.zip"
    archive.write_bytes(b"PK\x03\x04 not much of an archive")
    page.set_input_files("#attach-input", str(archive))
    error = page.locator("#chat-error")
    error.wait_for(state="visible")
    assert "neither an image" in error.inner_text() and "PDF" in error.inner_text()
    assert page.locator("#attachments li").count() == 0
    assert page.locator("#attachments img").count() == 0
    # bytes that claim to be a PNG reach the server, whose 400 is the answer's error
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"not really a png")
    page.set_input_files("#attach-input", str(fake))
    page.locator("#attachments img").wait_for(state="attached")
    watched.send("look")
    message = page.locator(".message.assistant .error").last
    message.wait_for()
    assert "not an image" in message.inner_text()
