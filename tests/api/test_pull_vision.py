"""A vision model pulled from Hugging Face (on loopback, :mod:`tests.support.hubs`) with its
``mmproj-*.gguf`` beside it: the pull fetches the projector, the pulled model takes images
at once, through the official clients."""

from __future__ import annotations

import base64
import shutil

import pytest

pytest.importorskip("llama_cpp")
ollama = pytest.importorskip("ollama")
openai = pytest.importorskip("openai")

from tests.support.hubs import Hubs  # noqa: E402
from tests.support.projectors import png_bytes  # noqa: E402
from tests.support.server import running_server  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def test_a_pulled_vision_model_takes_images(tiny_vision_dir, tmp_path):
    files = tmp_path / "hub-files"
    files.mkdir()
    model = shutil.copy(tiny_vision_dir / "tiny-vision.gguf", files / "tiny-vision-Q8_0.gguf")
    projector = shutil.copy(
        tiny_vision_dir / "mmproj-tiny-vision.gguf", files / "mmproj-tiny-vision-f16.gguf"
    )
    with Hubs() as hubs:
        hubs.add_hf(
            "someorg/tiny-vision-GGUF",
            {"tiny-vision-Q8_0.gguf": model, "mmproj-tiny-vision-f16.gguf": projector},
        )
        config = {"pull": {"dir": str(tmp_path / "store"), "registry": hubs.registry}}
        with running_server(config, env={"HF_ENDPOINT": hubs.hf}) as server:
            ref = "hf.co/someorg/tiny-vision-GGUF:Q8_0"
            assert ollama.Client(host=server.base_url).pull(ref).status == "success"
            shown = ollama.Client(host=server.base_url).show(ref)
            assert "vision" in shown.capabilities
            client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
            card = client.models.retrieve(ref)
            assert card.input == ["text", "vision"]
            url = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
            text = {"type": "text", "text": "what is this"}
            image = {"type": "image_url", "image_url": {"url": url}}
            plain = client.chat.completions.create(
                model=ref, messages=[{"role": "user", "content": [text]}], max_tokens=2
            )
            seen = client.chat.completions.create(
                model=ref, messages=[{"role": "user", "content": [text, image]}], max_tokens=2
            )
            assert seen.usage.prompt_tokens >= plain.usage.prompt_tokens + 4
