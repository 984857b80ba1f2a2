"""Ollama's registry: a model's manifest and its layers, over HTTP with ``httpx``.

``GET {registry}/v2/{namespace}/{model}/manifests/{tag}`` answers a Docker-style manifest
whose layers are blobs, each named by its SHA-256 digest, fetched from
``GET {registry}/v2/{namespace}/{model}/blobs/sha256:<hex>`` (usually a redirect to a CDN).
The layer of media type ``application/vnd.ollama.image.model`` is the GGUF file;
``.projector`` is a vision projector; ``.template``, ``.params``, ``.system`` and
``.license`` are small texts kept as the model's defaults.

No library speaks this registry (it is not an OCI registry that ``oras`` could read without
Ollama's media types), so this is plain HTTP: ``Range`` resume, retries on a dropped
connection, and a clean restart when the server ignores ranges.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .hub import Denied, NotFound
from .landing import Cancelled, PullError
from .refs import OllamaRef

DEFAULT_REGISTRY = "https://registry.ollama.ai"
ACCEPT = "application/vnd.docker.distribution.manifest.v2+json"
MODEL = "application/vnd.ollama.image.model"
PROJECTOR = "application/vnd.ollama.image.projector"
TEXTS = {
    "application/vnd.ollama.image.template": "template",
    "application/vnd.ollama.image.params": "params",
    "application/vnd.ollama.image.system": "system",
    "application/vnd.ollama.image.license": "license",
}
_RETRIES = 5


def base(configured: str | None = None) -> str:
    return (configured or DEFAULT_REGISTRY).rstrip("/")


def _client(timeout: float = 30.0):
    import httpx

    return httpx.Client(
        follow_redirects=True, timeout=httpx.Timeout(timeout, connect=10.0), trust_env=True
    )


def manifest(ref: OllamaRef, registry: str) -> dict:
    """The model's manifest, or NotFound in Ollama's words."""
    import httpx

    url = f"{registry}/v2/{ref.namespace}/{ref.model}/manifests/{ref.tag}"
    try:
        with _client() as client:
            r = client.get(url, headers={"Accept": ACCEPT})
    except httpx.HTTPError as exc:
        raise PullError(f"Could not reach the registry {registry}: {exc}") from exc
    if r.status_code == 404:
        raise NotFound(
            f"pull model manifest: file does not exist ({ref.name} is not in {registry})"
        )
    if r.status_code in (401, 403):
        raise Denied(f"The registry {registry} refused {ref.name} ({r.status_code}).")
    if r.status_code != 200:
        raise PullError(f"The registry {registry} answered {r.status_code} for {ref.name}.")
    try:
        data = r.json()
        layers = data["layers"]
        assert isinstance(layers, list)
    except Exception as exc:
        raise PullError(f"The registry's manifest for {ref.name} is not readable: {exc}") from exc
    return data


def blob_url(ref: OllamaRef, registry: str, digest: str) -> str:
    return f"{registry}/v2/{ref.namespace}/{ref.model}/blobs/{digest}"


def transfer(cancel: threading.Event) -> Callable[..., None]:
    """A transfer (see :mod:`.landing`) over ``httpx``, resuming by ``Range``."""
    import httpx

    def run(url: str, f, offset: int, on_bytes: Callable[[int], None]) -> None:
        retries = _RETRIES
        with _client(timeout=60.0) as client:
            while True:
                headers = {"Range": f"bytes={offset}-"} if offset else {}
                try:
                    with client.stream("GET", url, headers=headers) as r:
                        if r.status_code == 416 and offset:
                            return  # nothing past what we have: landing checks the size
                        if r.status_code not in (200, 206):
                            raise PullError(f"The registry answered {r.status_code} for {url}.")
                        if offset and r.status_code == 200:  # ranges ignored: start again
                            f.seek(0)
                            f.truncate()
                            on_bytes(-offset)
                            offset = 0
                        for chunk in r.iter_bytes():  # as they come: a cut loses nothing
                            if cancel.is_set():
                                raise Cancelled("The pull was cancelled.")
                            f.write(chunk)
                            offset += len(chunk)
                            on_bytes(len(chunk))
                            retries = _RETRIES
                    return
                except httpx.TransportError as exc:
                    retries -= 1
                    if retries < 0:
                        raise PullError(f"Downloading {url} failed: {exc}") from exc
                    f.flush()
                    time.sleep(0.5)

    return run
