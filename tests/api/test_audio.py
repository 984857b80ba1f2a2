"""Audio on a real server: the tiny model with a tiny Qwen2-Audio-type projector beside it
(tests/support/projectors.py), real llama.cpp and mtmd in the model's process, through the
``openai`` SDK: ``input_audio`` parts on chat and ``/v1/audio/transcriptions``."""

from __future__ import annotations

import base64
import io
import json

import pytest

openai = pytest.importorskip("openai")

from tests.support.projectors import png_bytes, wav_bytes  # noqa: E402
from tests.support.server import running_server  # noqa: E402

pytestmark = pytest.mark.timeout(180)

#: Embeddings per 30-second chunk of the tiny audio projector.
PER_CLIP = 750


@pytest.fixture(scope="module")
def server(tiny_audio_dir, tiny_vision_dir):
    config = {
        "server": {"max_audio_seconds": 5},
        "models_dir": [{"path": str(tiny_audio_dir), "n_ctx": 2048, "parallel": 1}],
        "models": [
            {
                "name": "eyes-only",
                "path": str(tiny_vision_dir / "tiny-vision.gguf"),
                "n_ctx": 512,
            }
        ],
    }
    with running_server(config) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)


def audio_part(data: bytes, fmt: str = "wav") -> dict:
    return {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt},
    }


def test_the_model_lists_audio(client):
    cards = {m.id: m for m in client.models.list().data}
    assert cards["tiny-audio"].input == ["text", "audio"]


def test_input_audio_on_chat(client):
    text = {"type": "text", "text": "what is this"}
    plain = client.chat.completions.create(
        model="tiny-audio", messages=[{"role": "user", "content": [text]}], max_tokens=2
    )
    heard = client.chat.completions.create(
        model="tiny-audio",
        messages=[{"role": "user", "content": [text, audio_part(wav_bytes(1.0))]}],
        max_tokens=2,
    )
    assert heard.usage.prompt_tokens >= plain.usage.prompt_tokens + PER_CLIP


@pytest.mark.parametrize(
    ("part", "words"),
    [
        (audio_part(b"plain text"), "not WAV, MP3 or FLAC"),
        (audio_part(wav_bytes(1.0), fmt="ogg"), "not supported"),
        (audio_part(wav_bytes(6.0)), "server.max_audio_seconds"),
        ({"type": "input_audio", "input_audio": {"data": "%%%", "format": "wav"}}, "base64"),
    ],
    ids=["not-audio", "format", "too-long", "not-base64"],
)
def test_bad_audio_is_a_400_naming_the_field(client, part, words):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="tiny-audio", messages=[{"role": "user", "content": [part]}], max_tokens=2
        )
    assert err.value.body["param"] == "messages[0].content[0].input_audio.data"
    assert words in err.value.body["message"]


def test_audio_for_a_model_without_an_audio_encoder(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="eyes-only",
            messages=[{"role": "user", "content": [audio_part(wav_bytes(1.0))]}],
            max_tokens=2,
        )
    assert err.value.body["param"] == "messages[0].content[0].input_audio.data"


def test_transcriptions_in_every_format(client):
    clip = wav_bytes(2.0)
    result = client.audio.transcriptions.create(
        model="tiny-audio", file=("tone.wav", io.BytesIO(clip), "audio/wav")
    )
    assert isinstance(result.text, str)
    usage = (
        result.usage if getattr(result, "usage", None) is not None else result.model_extra["usage"]
    )
    usage = usage if isinstance(usage, dict) else usage.model_dump()
    assert usage["type"] == "tokens" and usage["input_tokens"] >= PER_CLIP
    verbose = client.audio.transcriptions.create(
        model="tiny-audio",
        file=("tone.wav", io.BytesIO(clip), "audio/wav"),
        response_format="verbose_json",
        language="en",
        temperature=0,
    )
    assert verbose.duration == pytest.approx(2.0)
    assert verbose.language == "en" and verbose.segments[0].end == pytest.approx(2.0)
    text = client.audio.transcriptions.create(
        model="tiny-audio", file=("tone.wav", io.BytesIO(clip), "audio/wav"), response_format="text"
    )
    assert isinstance(text, str)
    srt = client.audio.transcriptions.create(
        model="tiny-audio", file=("tone.wav", io.BytesIO(clip), "audio/wav"), response_format="srt"
    )
    assert srt.startswith("1\n00:00:00,000 --> 00:00:02,000\n")
    vtt = client.audio.transcriptions.create(
        model="tiny-audio", file=("tone.wav", io.BytesIO(clip), "audio/wav"), response_format="vtt"
    )
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.000\n")


def test_transcription_errors(client, server):
    import httpx

    with pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(
            model="tiny-audio", file=("a.png", io.BytesIO(png_bytes()), "image/png")
        )
    assert err.value.body["param"] == "file"
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(
            model="eyes-only", file=("tone.wav", io.BytesIO(wav_bytes(1.0)), "audio/wav")
        )
    assert err.value.body["param"] == "file"
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(
            model="tiny-audio",
            file=("tone.wav", io.BytesIO(wav_bytes(1.0)), "audio/wav"),
            response_format="xml",
        )
    assert err.value.body["param"] == "response_format"
    with pytest.raises(openai.NotFoundError):
        client.audio.transcriptions.create(
            model="nope", file=("tone.wav", io.BytesIO(wav_bytes(1.0)), "audio/wav")
        )
    missing = httpx.post(
        server.base_url + "/v1/audio/transcriptions",
        files={"model": (None, "tiny-audio")},  # multipart, without a file
        timeout=30,
    )
    assert missing.status_code == 400 and json.loads(missing.text)["error"]["param"] == "file"
    # the server is still up
    ok = client.audio.transcriptions.create(
        model="tiny-audio", file=("tone.wav", io.BytesIO(wav_bytes(1.0)), "audio/wav")
    )
    assert isinstance(ok.text, str)


def test_only_the_transcription_route_takes_a_form_and_not_from_other_sites(server):
    import httpx

    form = {"model": (None, "tiny-audio"), "file": ("t.wav", wav_bytes(0.5), "audio/wav")}
    chat = httpx.post(server.base_url + "/v1/chat/completions", files=form, timeout=30)
    assert chat.status_code == 415
    foreign = httpx.post(
        server.base_url + "/v1/audio/transcriptions",
        files=form,
        headers={"Origin": "https://evil.example"},
        timeout=30,
    )
    assert foreign.status_code == 403
    assert foreign.json()["error"]["code"] == "forbidden_origin"


def test_responses_input_audio(client):
    text = {"type": "input_text", "text": "what is this"}
    clip = {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(wav_bytes(1.0)).decode(), "format": "wav"},
    }
    plain = client.responses.create(
        model="tiny-audio", input=[{"role": "user", "content": [text]}], max_output_tokens=2
    )
    heard = client.responses.create(
        model="tiny-audio", input=[{"role": "user", "content": [text, clip]}], max_output_tokens=2
    )
    assert heard.usage.input_tokens >= plain.usage.input_tokens + PER_CLIP
    bad = {"type": "input_audio", "input_audio": {"data": "bm90IGF1ZGlv", "format": "wav"}}
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(
            model="tiny-audio",
            input=[{"role": "user", "content": [text, bad]}],
            max_output_tokens=2,
        )
    assert err.value.body["param"] == "input[0].content[1].input_audio.data"
