"""Images and audio sent to a model: collected by each surface, images decoded here with
Pillow in a worker thread (never on the event loop), checked against ``[server]``
``max_image_pixels`` and ``max_images``, and handed to the backend as
:class:`~hoshikage_core.protocol.Media`. Audio goes to the backend as the file (WAV, MP3,
FLAC), which decodes it at its projector's sample rate and holds it to ``[server]
max_audio_seconds``; here its bytes are only recognised by their header.

A surface's translator calls :meth:`Collector.add` for each image part, in prompt order, and
writes :data:`~hoshikage_core.protocol.MEDIA_MARKER` where the part was; the route then
awaits :func:`attach`, which decodes them and puts them on the job's requests. Documents
(:mod:`.documents`: PDFs and text files, for any model) are collected the same way, each
under a marker of its own, and :func:`attach` reads them in the worker too and writes their
text in place of their markers. Every problem is a 400 naming the part's field (an
:class:`~.errors.ApiError`, which each surface renders in its own shape).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import re
import secrets
from collections.abc import Mapping

import attrs
from hoshikage_core.errors import ModelNotFound
from hoshikage_core.protocol import MEDIA_MARKER, Media

from .documents import Document, kind_of
from .errors import invalid

#: Formats Pillow decodes that a browser or an SDK sends.
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*),", re.I)


#: Audio formats taken (OpenAI's ``input_audio.format`` values, and FLAC).
AUDIO_FORMATS = ("wav", "mp3", "flac")


@attrs.define
class Pending:
    """An image or audio part as the client sent it: its encoded bytes and its field."""

    data: bytes
    field: str
    kind: str = "image"
    #: An http(s) URL to fetch the image from (``data`` is empty until then).
    url: str | None = None
    #: For a part of a tool's output: the marker of its own it stands as in the text until
    #: :func:`attach` knows whether the model takes it (see :meth:`Collector.from_tool`).
    marker: str | None = None


@attrs.define
class Collector:
    """The image parts of one request, in the order their markers stand in the prompt, and
    its documents (:mod:`.documents`), each with a marker of its own."""

    items: list[Pending] = attrs.Factory(list)
    documents: list[Document] = attrs.Factory(list)
    _token: str = attrs.field(factory=lambda: secrets.token_hex(8))
    #: Whether the parts being added are a tool's output (:meth:`from_tool`).
    _tool_output: bool = False

    @contextlib.contextmanager
    def from_tool(self):
        """Within it, images and audio added are a tool's output (a ``tool_result``, a
        ``function_call_output``): what an agent's tool read, not what the user sent. For a
        model that cannot take them they become a note in the text instead of a 400, which
        would end the agent's session (the part stays in its history; see :func:`attach`)."""
        before, self._tool_output = self._tool_output, True
        try:
            yield self
        finally:
            self._tool_output = before

    def _keep(self, item: Pending) -> str:
        """Keep ``item``; the marker that stands for it in the text."""
        if self._tool_output:
            item.marker = f"\x00media-{self._token}-{len(self.items)}\x00"
        self.items.append(item)
        return item.marker or MEDIA_MARKER

    def add_document(
        self,
        data: bytes,
        media_type: str | None,
        field: str,
        *,
        filename: str | None = None,
        title: str | None = None,
        context: str | None = None,
    ) -> str:
        """Keep a document (a PDF or a text file); returns the marker that stands for it in
        the text until :func:`attach` puts its text there."""
        kind = kind_of(media_type, filename)
        if kind is None:
            raise invalid(
                f"Invalid '{field}': documents of type {media_type or 'unknown'!r} are not read"
                " here; PDFs and text files are.",
                field,
            )
        if not data:
            raise invalid(f"Invalid '{field}': the document is empty.", field)
        marker = f"\x00document-{self._token}-{len(self.documents)}\x00"
        self.documents.append(
            Document(data, kind, field, marker, title=title or filename, context=context)
        )
        return marker

    def add(self, data: bytes, field: str) -> str:
        """Keep an image part; returns the marker that stands for it in the text."""
        return self._keep(Pending(data, field))

    def add_file(self, file_data, field: str, *, filename: str | None = None) -> str:
        """A file part of the OpenAI APIs (chat's ``file``, the Responses API's
        ``input_file``): ``file_data`` a ``data:`` URL (``data:application/pdf;base64,...``)
        or bare base64 whose type ``filename`` tells, read as a document."""
        if not isinstance(file_data, str) or not file_data:
            raise invalid(
                f"Invalid '{field}': a file needs its file_data (a data: URL,"
                " data:application/pdf;base64,...); file_id and file_url are not supported,"
                " as no files are stored or fetched here.",
                field,
            )
        if _DATA_URL.match(file_data) is None:
            media_type, data = None, base64_bytes(file_data, field, "file")
        else:
            media_type, data = data_url(file_data, field, "file")
        return self.add_document(data, media_type, field, filename=filename)

    def add_url(self, url: str, field: str) -> str:
        """An image given as a URL: a ``data:`` URL, or an ``http(s)`` one that :func:`attach`
        fetches where ``[server] image_url_hosts`` allows it."""
        if isinstance(url, str) and url.lower().startswith(("http://", "https://")):
            return self._keep(Pending(b"", field, "image", url))
        return self.add(data_url_bytes(url, field), field)

    def add_base64(self, text: str, field: str) -> str:
        return self.add(base64_bytes(text, field), field)

    def add_audio(self, text: str, fmt: str | None, field: str) -> str:
        """Base64 audio whose format the client names (``wav``, ``mp3``; ``flac`` too)."""
        if fmt is not None and fmt not in AUDIO_FORMATS:
            raise invalid(
                f"Invalid '{field}': audio format {fmt!r} is not supported"
                f" ({', '.join(AUDIO_FORMATS)} are).",
                field,
            )
        return self.add_audio_bytes(base64_bytes(text, field), field)

    def add_audio_bytes(self, data: bytes, field: str) -> str:
        """An audio file (WAV, MP3, FLAC, recognised by its header)."""
        if audio_format(data) is None:
            raise invalid(f"Invalid '{field}': the bytes are not WAV, MP3 or FLAC audio.", field)
        return self._keep(Pending(data, field, "audio"))


def audio_format(data: bytes) -> str | None:
    """``wav``, ``mp3`` or ``flac`` from the file's first bytes; None for anything else."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def data_url_bytes(url: str, field: str) -> bytes:
    """The bytes of a ``data:`` URL holding base64 (the only kind of image URL served)."""
    if not isinstance(url, str) or not url:
        raise invalid(f"Invalid '{field}': an image URL must be a non-empty string.", field)
    return data_url(url, field)[1]


def data_url(url: str, field: str, what: str = "image") -> tuple[str | None, bytes]:
    """A base64 ``data:`` URL's media type (None when it names none) and bytes."""
    match = _DATA_URL.match(url)
    if match is None:
        example = "data:image/png;base64,..." if what == "image" else "data:TYPE;base64,..."
        raise invalid(f"Invalid '{field}': expected a data: URL ({example}).", field)
    if ";base64" not in match.group("params").lower():
        raise invalid(f"Invalid '{field}': the data: URL must be base64-encoded.", field)
    return match.group("type"), base64_bytes(url[match.end() :], field, what)


def base64_bytes(text: str, field: str, what: str = "image") -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise invalid(f"Invalid '{field}': the {what} is not valid base64.", field) from None
    if not data:
        raise invalid(f"Invalid '{field}': the {what} is empty.", field)
    return data


def decode(item: Pending, max_pixels: int) -> Media:
    """One image as RGB pixels (blocking: run it in a worker). The size is checked from the
    header before any pixel is decoded, so a decompression bomb costs nothing."""
    import io

    from PIL import Image, UnidentifiedImageError

    field = item.field
    try:
        image = Image.open(io.BytesIO(item.data))
    except UnidentifiedImageError:
        raise invalid(
            f"Invalid '{field}': the bytes are not an image in a supported format"
            f" ({', '.join(FORMATS)}).",
            field,
        ) from None
    except Image.DecompressionBombError:
        raise invalid(
            f"Invalid '{field}': the image has more pixels than {max_pixels}"
            " (server.max_image_pixels).",
            field,
        ) from None
    except (OSError, ValueError) as exc:
        raise invalid(f"Invalid '{field}': the image cannot be read ({exc}).", field) from None
    with image:
        if image.format not in FORMATS:
            raise invalid(
                f"Invalid '{field}': {image.format} images are not supported"
                f" ({', '.join(FORMATS)} are).",
                field,
            )
        width, height = image.size
        if width * height > max_pixels:
            raise invalid(
                f"Invalid '{field}': the image is {width} × {height} pixels, more than"
                f" {max_pixels} (server.max_image_pixels).",
                field,
            )
        try:
            rgb = _rgb(image)
            width, height = rgb.size  # turned upright: a phone photo's EXIF orientation
            pixels = rgb.tobytes()
        except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data
            raise invalid(
                f"Invalid '{field}': the image data is truncated or corrupt ({exc}).", field
            ) from None
    return Media(
        kind="image",
        data=pixels,
        width=width,
        height=height,
        id=hashlib.sha256(pixels).hexdigest(),
        field=field,
    )


def host_allowed(host: str, allowed) -> bool:
    host = host.lower().rstrip(".")
    return any(a == "*" or host == a.lower().rstrip(".") for a in allowed)


def fetch(item: Pending, server) -> None:
    """Fetch an image URL into ``item.data`` (blocking: run it in a worker), within
    ``image_url_timeout`` and ``image_url_max_bytes``, following redirects only to allowed
    hosts."""
    import time
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    field, allowed = item.field, server.image_url_hosts

    def check(url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise invalid(f"Invalid '{field}': {url[:200]!r} is not an http(s) URL.", field)
        if not host_allowed(parts.hostname, allowed):
            raise invalid(
                f"Invalid '{field}': images are not fetched from {parts.hostname!r}"
                " (server.image_url_hosts); send the image itself as a data: URL"
                " (data:image/png;base64,...).",
                field,
            )

    class Redirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            check(newurl)
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    check(item.url)
    limit = int(server.image_url_max_bytes)
    deadline = time.monotonic() + float(server.image_url_timeout)
    opener = urllib.request.build_opener(Redirects)
    request = urllib.request.Request(item.url, headers={"User-Agent": "hoshikage"})
    chunks, total = [], 0
    try:
        with opener.open(request, timeout=float(server.image_url_timeout)) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise invalid(
                    f"Invalid '{field}': the image at the URL is {declared} bytes, more than"
                    f" {limit} (server.image_url_max_bytes).",
                    field,
                )
            while chunk := response.read(64 * 1024):
                total += len(chunk)
                if total > limit:
                    raise invalid(
                        f"Invalid '{field}': the image at the URL is more than {limit} bytes"
                        " (server.image_url_max_bytes).",
                        field,
                    )
                if time.monotonic() > deadline:
                    raise TimeoutError
                chunks.append(chunk)
    except urllib.error.HTTPError as exc:
        raise invalid(
            f"Invalid '{field}': fetching the image failed: HTTP {exc.code}.", field
        ) from None
    except (TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            reason = (
                f"no answer within {float(server.image_url_timeout):g} s (server.image_url_timeout)"
            )
        raise invalid(f"Invalid '{field}': fetching the image failed: {reason}.", field) from None
    item.data = b"".join(chunks)


def audio(item: Pending, max_seconds: float) -> Media:
    return Media(
        kind="audio",
        data=item.data,
        id=hashlib.sha256(item.data).hexdigest(),
        field=item.field,
        max_seconds=max_seconds,
    )


def _rgb(image):
    """The image upright (its EXIF orientation applied) as RGB, transparency over white (as
    a page shows it; a plain conversion would leave the hidden colours, often black). An
    animated image gives its first frame."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


async def attach(runtime, job, collector: Collector):
    """``job`` with the collected images and audio on its requests (each request's markers
    are the collector's, in order) and its documents' text in place of their markers; ``job``
    itself when there are none."""
    markers: dict[str, str] = {}
    if any(item.marker for item in collector.items):
        markers.update(_tool_media(runtime, job.model, collector))
    if collector.documents:
        markers.update(await _read_documents(collector))
    if markers:
        job = _replace_markers(job, markers)
    if not collector.items:
        return job
    server = runtime.config.server
    images = [item for item in collector.items if item.kind == "image"]
    if len(images) > server.max_images:
        extra = images[server.max_images]
        raise invalid(
            f"Invalid '{extra.field}': a request may send at most {server.max_images} images"
            " (server.max_images).",
            extra.field,
        )
    from anyio import to_thread

    for item in images:
        if item.url is not None and not server.image_url_hosts:
            raise invalid(
                f"Invalid '{item.field}': images are not fetched from http(s) URLs here"
                " (server.image_url_hosts is empty); send the image itself as a data: URL"
                " (data:image/png;base64,...).",
                item.field,
            )

    def decode_all() -> tuple[Media, ...]:
        for item in images:
            if item.url is not None:
                fetch(item, server)
        return tuple(
            decode(item, server.max_image_pixels)
            if item.kind == "image"
            else audio(item, float(server.max_audio_seconds))
            for item in collector.items
        )

    media = await to_thread.run_sync(decode_all)
    return attrs.evolve(job, requests=tuple(attrs.evolve(r, media=media) for r in job.requests))


#: What a tool's image or audio reads as for a model that cannot take it.
LEFT_OUT = {
    "image": "[An image was here; it was left out, as this model takes no image input.]",
    "audio": "[Audio was here; it was left out, as this model takes no audio input.]",
}
#: The modality (``ModelEntry.modalities``) each kind of part needs.
NEEDS = {"image": "vision", "audio": "audio"}


def _tool_media(runtime, model: str, collector: Collector) -> dict[str, str]:
    """Each tool-output part's marker, and what stands for it: the media marker where the
    model takes its kind, else a note (and the part is dropped). A model that is not known
    keeps every part: its 404 comes after."""
    try:
        takes = runtime.registry.resolve(model).modalities()
    except ModelNotFound:
        takes = None
    markers, kept = {}, []
    for item in collector.items:
        if item.marker is not None and takes is not None and NEEDS[item.kind] not in takes:
            markers[item.marker] = LEFT_OUT[item.kind]
            continue
        if item.marker is not None:
            markers[item.marker] = MEDIA_MARKER
        kept.append(item)
    collector.items = kept
    return markers


async def _read_documents(collector: Collector) -> dict[str, str]:
    """Each document's marker, and its text (read in a worker)."""
    from anyio import to_thread

    from .documents import read

    def read_all() -> dict[str, str]:
        return {d.marker: read(d) for d in collector.documents}

    return await to_thread.run_sync(read_all)


def _replace_markers(job, markers: dict[str, str]):
    """``job`` with each of ``markers`` replaced in its requests' messages and prompt."""

    def fill(text: str) -> str:
        for marker, replacement in markers.items():
            if marker in text:
                text = text.replace(marker, replacement)
        return text

    def filled(value):
        if isinstance(value, str):
            return fill(value)
        if isinstance(value, Mapping):
            return {k: filled(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(filled(v) for v in value)
        return value

    requests = []
    for request in job.requests:
        changes = {}
        if request.messages is not None:
            changes["messages"] = tuple(filled(dict(m)) for m in request.messages)
        if request.prompt is not None:
            changes["prompt"] = fill(request.prompt)
        requests.append(attrs.evolve(request, **changes))
    return attrs.evolve(job, requests=tuple(requests))
