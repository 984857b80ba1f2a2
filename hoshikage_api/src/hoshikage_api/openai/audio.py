"""``POST /v1/audio/transcriptions``: speech to text in OpenAI's shape, for a model whose
projector has an audio encoder.

As llama-server does it, the upload becomes a chat of one user message, an instruction
(the request's ``prompt``, else :data:`INSTRUCTION`, with the ``language`` when given) and
the audio after it, run on the one generation path; the answer is the transcript. The
multipart fields are OpenAI's: ``file`` and ``model`` required; ``response_format`` (json,
text, verbose_json, srt, vtt), ``prompt``, ``language``, ``temperature``. Errors have the
OpenAI shape and name the field.
"""

from __future__ import annotations

from hoshikage_core.protocol import GenerationRequest
from litestar import Request, Response, post

from ..kernel.deps import runtime_of
from ..kernel.disconnect import until_disconnect
from ..kernel.docs import GENERATION_ERRORS
from ..kernel.errors import invalid
from ..kernel.generation import collect
from ..kernel.job import Job
from ..kernel.media import Collector, attach

#: What the model is asked when the request gives no ``prompt`` (llama-server's words).
INSTRUCTION = "Transcribe audio to text"
FORMATS = ("json", "text", "verbose_json", "srt", "vtt")


def _field(form, name: str, required: bool = False) -> str | None:
    value = form.get(name)
    if value is None or value == "":
        if required:
            raise invalid(f"Missing required parameter: '{name}'.", name)
        return None
    if not isinstance(value, str):
        raise invalid(f"Invalid '{name}': expected text.", name)
    return value


def _timestamp(seconds: float, comma: bool) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{',' if comma else '.'}{ms:03d}"


def _duration(data: bytes) -> float | None:
    """A WAV file's length in seconds (None for other formats: the model decodes those)."""
    import io
    import wave

    try:
        with wave.open(io.BytesIO(data)) as w:
            return w.getnframes() / float(w.getframerate())
    except (wave.Error, EOFError, ValueError, ZeroDivisionError):
        return None


@post(
    "/v1/audio/transcriptions",
    status_code=200,
    summary="Transcribe audio",
    responses=GENERATION_ERRORS,
    description="Multipart form: `file` (WAV, MP3 or FLAC) and `model` (a model whose "
    "projector has an audio encoder); `response_format` json, text, verbose_json, srt or vtt.",
    opt={"multipart": True},  # see guard.py: the one route that takes a form upload
)
async def transcriptions(request: Request) -> Response:
    form = await request.form()
    model = _field(form, "model", required=True)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise invalid("Missing required parameter: 'file' (an audio file upload).", "file")
    response_format = _field(form, "response_format") or "json"
    if response_format not in FORMATS:
        raise invalid(
            f"Invalid 'response_format': {response_format!r} is not one of {', '.join(FORMATS)}.",
            "response_format",
        )
    if (_field(form, "stream") or "false").lower() == "true":
        raise invalid("Invalid 'stream': streamed transcriptions are not supported.", "stream")
    temperature = None
    if (raw := _field(form, "temperature")) is not None:
        try:
            temperature = float(raw)
        except ValueError:
            raise invalid("Invalid 'temperature': expected a number.", "temperature") from None
        if not 0 <= temperature <= 2:
            raise invalid("Invalid 'temperature': must be between 0 and 2.", "temperature")
    language = _field(form, "language")
    instruction = _field(form, "prompt") or INSTRUCTION
    if language:
        instruction += f" (language: {language})"
    data = await upload.read()
    audio = Collector()
    marker = audio.add_audio_bytes(data, "file")
    job = Job(
        endpoint="transcriptions",
        model=model,
        keep_alive=None,
        requests=(
            GenerationRequest(
                messages=({"role": "user", "content": instruction + marker},),
                temperature=temperature,
            ),
        ),
    )
    runtime = runtime_of(request)
    job = await attach(runtime, job, audio)
    (result,) = await until_disconnect(request, collect(runtime, job))
    text = "".join(result.texts).strip()
    usage = {
        "type": "tokens",
        "input_tokens": result.prompt_tokens,
        "output_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }
    if response_format == "json":
        return Response({"text": text, "usage": usage}, media_type="application/json")
    duration = _duration(data) or 0.0
    if response_format == "verbose_json":
        segment = {
            "id": 0,
            "seek": 0,
            "start": 0.0,
            "end": duration,
            "text": text,
            "tokens": [],
            "temperature": temperature or 0.0,
            "avg_logprob": 0.0,
            "compression_ratio": 0.0,
            "no_speech_prob": 0.0,
        }
        body = {
            "task": "transcribe",
            "language": language or "",
            "duration": duration,
            "text": text,
            "segments": [segment],
            "usage": usage,
        }
        return Response(body, media_type="application/json")
    if response_format == "text":
        return Response(text + "\n", media_type="text/plain; charset=utf-8")
    if response_format == "srt":
        cue = f"1\n{_timestamp(0, True)} --> {_timestamp(duration, True)}\n{text}\n"
        return Response(cue, media_type="text/plain; charset=utf-8")
    cue = f"WEBVTT\n\n{_timestamp(0, False)} --> {_timestamp(duration, False)}\n{text}\n"
    return Response(cue, media_type="text/vtt; charset=utf-8")
