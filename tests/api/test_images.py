"""Images on a real server: the tiny model with its projector found beside it in a
``models_dir`` (tests/support/projectors.py), real llama.cpp and ``mtmd`` in the model's
process, driven through the official SDKs; every bad image is a 400 naming its field."""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import subprocess
import sys
import zlib

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("PIL")

from tests.support.projectors import png_bytes  # noqa: E402
from tests.support.server import running_server  # noqa: E402

pytestmark = pytest.mark.timeout(180)

#: Embeddings per image of the tiny projector.
PER_IMAGE = 4


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def huge_png_header(width: int = 20000, height: int = 20000) -> bytes:
    """A PNG whose header claims ``width`` × ``height`` (a decompression bomb's shape)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def tiff_bytes() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out, format="TIFF")
    return out.getvalue()


@pytest.fixture(scope="module")
def server(tiny_vision_dir, tiny_model_path):
    config = {
        "server": {"max_images": 3},
        "models_dir": [{"path": str(tiny_vision_dir), "n_ctx": 512, "parallel": 2}],
        "models": [{"name": "text-only", "path": str(tiny_model_path), "n_ctx": 512}],
    }
    with running_server(config) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)


def image_message(*images: bytes, text: str = "what is this"):
    parts = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": data_url(i)}} for i in images]
    return [{"role": "user", "content": parts}]


def test_capabilities_are_listed(server, client):
    cards = {m.id: m for m in client.models.list().data}
    assert cards["tiny-vision"].input == ["text", "vision"]
    assert cards["text-only"].input == ["text"]
    import httpx

    shown = httpx.post(server.base_url + "/api/show", json={"model": "tiny-vision"}).json()
    assert "vision" in shown["capabilities"]
    plain = httpx.post(server.base_url + "/api/show", json={"model": "text-only"}).json()
    assert "vision" not in plain["capabilities"]
    listed = subprocess.run(
        [sys.executable, "-m", "hoshikage_core.cli", "--config", str(server.config_path)]
        + ["models", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    rows = {r["name"]: r for r in json.loads(listed.stdout)["models"]}
    assert rows["tiny-vision"]["input"] == ["text", "vision"]
    assert rows["text-only"]["input"] == ["text"]


def test_an_image_reaches_the_context_and_is_cached_the_second_time(client):
    plain = client.chat.completions.create(
        model="tiny-vision", messages=image_message(), max_tokens=3, temperature=0
    )
    red = png_bytes(color=(220, 10, 10))
    first = client.chat.completions.create(
        model="tiny-vision", messages=image_message(red), max_tokens=3, temperature=0
    )
    assert first.choices[0].finish_reason in ("stop", "length")
    # the text joined with a newline and the marker; the image adds its 4 embeddings
    assert first.usage.prompt_tokens >= plain.usage.prompt_tokens + PER_IMAGE
    again = client.chat.completions.create(
        model="tiny-vision", messages=image_message(red), max_tokens=3, temperature=0
    )
    assert again.usage.prompt_tokens == first.usage.prompt_tokens
    assert again.usage.prompt_tokens_details.cached_tokens == again.usage.prompt_tokens - 1
    assert again.choices[0].message.content == first.choices[0].message.content


def test_two_images_and_an_image_in_a_later_turn(client):
    red, blue = png_bytes(color=(200, 0, 0)), png_bytes(color=(0, 0, 200))
    one = client.chat.completions.create(
        model="tiny-vision", messages=image_message(red), max_tokens=2, temperature=0
    )
    two = client.chat.completions.create(
        model="tiny-vision", messages=image_message(red, blue), max_tokens=2, temperature=0
    )
    assert two.usage.prompt_tokens >= one.usage.prompt_tokens + PER_IMAGE
    turns = [
        *image_message(red),
        {"role": "assistant", "content": "red"},
        *image_message(blue, text="and this"),
    ]
    later = client.chat.completions.create(
        model="tiny-vision", messages=turns, max_tokens=2, temperature=0, stream=True
    )
    chunks = list(later)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


BAD = {
    "not an image": (b"this is plain text, not a picture", "not an image"),
    "truncated PNG": (None, "truncated"),
    "bomb": (None, "server.max_image_pixels"),
    "unsupported format": (None, "not supported"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_images_are_400s_naming_the_field(client, server, case):
    data, words = BAD[case]
    if case == "truncated PNG":
        full = png_bytes(width=64, height=64, color=(1, 2, 3))
        from PIL import Image

        noisy = io.BytesIO()
        Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)).save(noisy, format="PNG")
        data = noisy.getvalue()[: len(noisy.getvalue()) // 2]
        assert full  # a valid one of the same kind decodes (see the tests above)
    elif case == "bomb":
        data = huge_png_header()
    elif case == "unsupported format":
        data = tiff_bytes()
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="tiny-vision", messages=image_message(data), max_tokens=2
        )
    body = err.value.body
    assert body["param"] == "messages[0].content[1].image_url.url"
    assert words in body["message"]
    # the server is still up and serving images
    ok = client.chat.completions.create(
        model="tiny-vision", messages=image_message(png_bytes()), max_tokens=1
    )
    assert ok.choices


def test_an_image_for_a_text_only_model(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="text-only", messages=image_message(png_bytes()), max_tokens=2
        )
    assert err.value.body["param"] == "messages[0].content[1].image_url.url"
    assert "no image input" in err.value.body["message"] or "projector" in err.value.body["message"]


def test_http_urls_and_too_many_images(client):
    messages = [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}],
        }
    ]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny-vision", messages=messages, max_tokens=2)
    assert err.value.body["param"] == "messages[0].content[0].image_url.url"
    assert "data: URL" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="tiny-vision", messages=image_message(*[png_bytes()] * 4), max_tokens=2
        )
    assert err.value.body["param"] == "messages[0].content[4].image_url.url"
    assert "server.max_images" in err.value.body["message"]


def test_ollama_images_on_chat_and_generate(server):
    ollama = pytest.importorskip("ollama")
    client = ollama.Client(host=server.base_url)
    red = png_bytes(color=(230, 20, 20))
    plain = client.chat(
        model="tiny-vision",
        messages=[{"role": "user", "content": "what is this"}],
        options={"num_predict": 2, "temperature": 0},
    )
    seen = client.chat(
        model="tiny-vision",
        messages=[{"role": "user", "content": "what is this", "images": [red]}],
        options={"num_predict": 2, "temperature": 0},
    )
    assert seen.prompt_eval_count >= plain.prompt_eval_count + PER_IMAGE
    generated = client.generate(
        model="tiny-vision", prompt="look", images=[red], options={"num_predict": 2}
    )
    assert generated.done
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model="tiny-vision", prompt="look", images=[huge_png_header()])
    assert err.value.status_code == 400 and "images[0]" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(
            model="text-only",
            messages=[{"role": "user", "content": "x", "images": [red]}],
        )
    assert err.value.status_code == 400 and "messages[0].images[0]" in err.value.error


def test_anthropic_image_blocks(server):
    anthropic = pytest.importorskip("anthropic")
    client = anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0)
    red = png_bytes(color=(240, 30, 30))

    def image(data: bytes):
        encoded = base64.b64encode(data).decode()
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": encoded},
        }

    text = {"type": "text", "text": "what is this"}
    plain = client.messages.create(
        model="tiny-vision", max_tokens=2, messages=[{"role": "user", "content": [text]}]
    )
    seen = client.messages.create(
        model="tiny-vision",
        max_tokens=2,
        messages=[{"role": "user", "content": [text, image(red)]}],
    )

    def prompt(usage) -> int:  # Anthropic's input_tokens leave out what was read from cache
        return (
            usage.input_tokens
            + (usage.cache_read_input_tokens or 0)
            + (usage.cache_creation_input_tokens or 0)
        )

    assert prompt(seen.usage) >= prompt(plain.usage) + PER_IMAGE
    counted = client.messages.count_tokens(
        model="tiny-vision", messages=[{"role": "user", "content": [text, image(red)]}]
    )
    assert counted.input_tokens == prompt(seen.usage)
    # a screenshot in a tool result, as Claude Code sends one
    turns = [
        {"role": "user", "content": "look"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "shot", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [image(red)]}],
        },
    ]
    tools = [{"name": "shot", "description": "screenshot", "input_schema": {"type": "object"}}]
    answered = client.messages.create(
        model="tiny-vision", max_tokens=2, messages=turns, tools=tools
    )
    assert prompt(answered.usage) > PER_IMAGE
    for data, words in (
        (b"plain text", "not an image"),
        (huge_png_header(), "server.max_image_pixels"),
        (tiff_bytes(), "not supported"),
    ):
        with pytest.raises(anthropic.BadRequestError) as err:
            client.messages.create(
                model="tiny-vision",
                max_tokens=2,
                messages=[{"role": "user", "content": [text, image(data)]}],
            )
        assert "messages[0].content[1].source.data" in err.value.body["error"]["message"]
        assert words in err.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(
            model="text-only",
            max_tokens=2,
            messages=[{"role": "user", "content": [text, image(red)]}],
        )
    assert "messages[0].content[1].source.data" in err.value.body["error"]["message"]


def test_responses_input_image(client):
    red = png_bytes(color=(250, 60, 60))

    def asking(*images: bytes, text: str = "what is this"):
        parts = [{"type": "input_text", "text": text}]
        parts += [{"type": "input_image", "image_url": data_url(i)} for i in images]
        return [{"role": "user", "content": parts}]

    plain = client.responses.create(model="tiny-vision", input=asking(), max_output_tokens=2)
    seen = client.responses.create(model="tiny-vision", input=asking(red), max_output_tokens=2)

    assert seen.usage.input_tokens >= plain.usage.input_tokens + PER_IMAGE
    # the stored conversation keeps its image: the next turn reads it again, from the cache
    later = client.responses.create(
        model="tiny-vision",
        previous_response_id=seen.id,
        input=[{"role": "user", "content": "and now"}],
        max_output_tokens=2,
    )
    assert later.usage.input_tokens > seen.usage.input_tokens
    assert later.usage.input_tokens_details.cached_tokens >= seen.usage.input_tokens - 1
    for data, words in ((b"nope", "not an image"), (tiff_bytes(), "not supported")):
        with pytest.raises(openai.BadRequestError) as err:
            client.responses.create(model="tiny-vision", input=asking(data), max_output_tokens=2)
        assert err.value.body["param"] == "input[0].content[1].image_url"
        assert words in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="text-only", input=asking(red), max_output_tokens=2)
    assert err.value.body["param"] == "input[0].content[1].image_url"


def test_cli_chat_with_an_image(server, tmp_path):
    picture = tmp_path / "red.png"
    picture.write_bytes(png_bytes(color=(210, 0, 0)))
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not a picture")

    def chat(*args, stdin):
        env = {**os.environ, "COLUMNS": "200", "XDG_CONFIG_HOME": "/nonexistent"}
        env.pop("HOSHIKAGE_CONFIG", None)
        return subprocess.run(
            [sys.executable, "-m", "hoshikage_core.cli", "chat", "tiny-vision", "--max-tokens", "2"]
            + ["--url", server.base_url, *args],
            capture_output=True,
            text=True,
            timeout=60,
            input=stdin,
            env=env,
        )

    import re

    def prompts(out: str) -> list[int]:
        return [int(n) for n in re.findall(r"\(prompt (\d+)\)", out)]

    plain = chat(stdin="what is this\n/exit\n")
    seen = chat("--image", str(picture), stdin="what is this\n/exit\n")
    assert plain.returncode == 0 and seen.returncode == 0, seen.stdout + seen.stderr
    assert prompts(seen.stdout)[0] >= prompts(plain.stdout)[0] + PER_IMAGE
    # /image attaches to the next message; a refused image is reported and the chat goes on
    later = chat(stdin=f"hello\n/image {bad}\nwhat is this\n/image {picture}\nand this\n/exit\n")
    assert later.returncode == 0, later.stdout + later.stderr
    assert "not an image" in later.stdout
    counts = prompts(later.stdout)
    assert len(counts) == 2 and counts[1] > counts[0] + PER_IMAGE
    missing = chat("--image", str(tmp_path / "absent.png"), stdin="/exit\n")
    assert missing.returncode == 1 and "cannot read" in missing.stderr


@pytest.fixture(scope="module")
def image_host():
    """A loopback HTTP server with images, a slow one, a large one and a redirect away."""
    import http.server
    import threading
    import time

    red = png_bytes(color=(180, 0, 0))

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            port = self.server.server_address[1]
            if self.path == "/red.png":
                body = red
            elif self.path == "/big.png":
                body = png_bytes(width=512, height=512) + b"\0" * 300_000
            elif self.path == "/slow.png":
                time.sleep(3)
                body = red
            elif self.path == "/away":
                self.send_response(302)
                self.send_header("Location", f"http://localhost:{port}/red.png")
                self.end_headers()
                return
            elif self.path == "/here":
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{port}/red.png")
                self.end_headers()
                return
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_http_image_urls_from_allowed_hosts(tiny_vision_dir, image_host):
    config = {
        "server": {
            "image_url_hosts": ["127.0.0.1"],
            "image_url_max_bytes": 200_000,
            "image_url_timeout": "1s",
        },
        "models_dir": [{"path": str(tiny_vision_dir), "n_ctx": 512}],
    }
    with running_server(config) as running:
        client = openai.OpenAI(base_url=running.base_url + "/v1", api_key="x", max_retries=0)

        def ask(url):
            messages = [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this"},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                }
            ]
            return client.chat.completions.create(
                model="tiny-vision", messages=messages, max_tokens=2, temperature=0
            )

        fetched = ask(image_host + "/red.png")
        inline = ask(data_url(png_bytes(color=(180, 0, 0))))
        assert fetched.usage.prompt_tokens == inline.usage.prompt_tokens
        assert fetched.choices[0].message.content == inline.choices[0].message.content
        assert ask(image_host + "/here").usage.prompt_tokens == inline.usage.prompt_tokens
        for path, words in (
            ("/away", "'localhost'"),  # a redirect to a host not allowed
            ("/big.png", "server.image_url_max_bytes"),
            ("/slow.png", "server.image_url_timeout"),
            ("/missing.png", "HTTP 404"),
        ):
            with pytest.raises(openai.BadRequestError) as err:
                ask(image_host + path)
            assert err.value.body["param"] == "messages[0].content[1].image_url.url"
            assert words in err.value.body["message"], (path, err.value.body["message"])
        with pytest.raises(openai.BadRequestError) as err:
            ask("https://example.com/a.png")
        assert "'example.com'" in err.value.body["message"]
