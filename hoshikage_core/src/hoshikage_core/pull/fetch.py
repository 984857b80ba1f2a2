"""One pull, start to end, in the calling thread: read the reference, ask the hub or the
registry what it means, check the disk, land every file (:mod:`.landing`), write the record
(:mod:`.store`). Progress goes to ``on_step`` as Ollama's steps::

    Step("pulling manifest")
    Step("pulling 3f1c2a9b8d7e", digest="sha256:3f1c…", total=98178720, completed=1048576, file="…")
    Step("verifying sha256 digest")
    Step("writing manifest")
    Step("success")

It blocks (network and disk): callers run it in a worker thread (:mod:`.jobs`), never on an
event loop.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from ..discovery import model_name
from . import hub, landing, refs, registry, store
from .landing import Blob, PullError


@attrs.frozen(kw_only=True)
class Step:
    """One progress report, in Ollama's terms (``file`` is Hoshikage's addition)."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None
    file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in attrs.asdict(self).items() if v is not None}


@attrs.frozen(kw_only=True)
class Settings:
    root: Path
    hf_endpoint: str | None = None
    registry: str | None = None
    token: str | None = None

    @classmethod
    def of(cls, config) -> Settings:
        pull = getattr(config, "pull", None)
        return cls(
            root=store.root_of(config),
            hf_endpoint=getattr(pull, "hf_endpoint", None),
            registry=getattr(pull, "registry", None),
            token=os.environ.get("HF_TOKEN") or None,
        )


def _token(settings: Settings) -> str | None:
    if settings.token:
        return settings.token
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:
        return None


class _Meter:
    """Counts one file's bytes and reports them at most every 0.1 s (and at the end)."""

    def __init__(self, step: Step, on_step: Callable[[Step], None]):
        self.step = step
        self.on_step = on_step
        self.completed = 0
        self.last = 0.0

    def __call__(self, n: int) -> None:
        self.completed = max(0, self.completed + n)
        now = time.monotonic()
        if now - self.last >= 0.1 or self.completed == self.step.total:
            self.last = now
            self.report()

    def report(self) -> None:
        self.on_step(attrs.evolve(self.step, completed=self.completed))


def _land_all(
    blobs: list[tuple[Blob, Callable[..., None]]],
    settings: Settings,
    on_step: Callable[[Step], None],
    cancel: threading.Event,
) -> None:
    landing.check_space(settings.root, sum(landing.remaining(b) for b, _ in blobs))
    for blob, transfer in blobs:
        digest = "sha256:" + (blob.sha256 or hashlib.sha256(blob.url.encode()).hexdigest())
        step = Step(
            status=f"pulling {digest[7:19]}",
            digest=digest,
            total=blob.size,
            completed=0,
            file=blob.target.name,
        )
        meter = _Meter(step, on_step)
        on_step(step)
        landing.land(blob, transfer, on_bytes=meter, cancel=cancel)
        if blob.size is not None and meter.completed != blob.size:  # it was there already
            meter.completed = blob.size
            meter.report()
    on_step(Step(status="verifying sha256 digest"))


def _hf(ref: refs.HfRef, settings: Settings, on_step, cancel) -> dict[str, Any]:
    token = _token(settings)
    base = hub.endpoint(settings.hf_endpoint)
    on_step(Step(status="pulling manifest"))
    found = hub.files(ref, base, token)
    model_files, projector = hub.choose(ref, found)
    folder = settings.root / "hf.co" / ref.repo
    move = hub.transfer(token, cancel, base)
    blobs = []
    for remote in [*model_files, *([projector] if projector else [])]:
        url, etag = hub.resolve_url(ref, remote.path, base, token)
        sha = remote.sha256 or (etag if etag and len(etag) == 64 else None)
        if remote.sha256 and etag and len(etag) == 64 and etag != remote.sha256:
            raise landing.Corrupt(
                f"{remote.path}: the hub's tree says SHA-256 {remote.sha256} but its download "
                f"says {etag}; refusing a file that cannot be verified."
            )
        blobs.append(
            (Blob(url=url, target=folder / remote.path, sha256=sha, size=remote.size), move)
        )
    _land_all(blobs, settings, on_step, cancel)
    on_step(Step(status="writing manifest"))
    first = model_files[0]
    path = folder / first.path
    name = model_name(Path(first.path).name) or Path(first.path).stem.lower()
    aliases = sorted({ref.canonical, ref.text.strip()} - {name, ""})
    quant = next((q for q, f in hub.quants(found).items() if f[0].path == first.path), None)
    if not ref.file and quant:  # the repo's own spelling of the tag, besides the typed one
        aliases.append(f"hf.co/{ref.repo}:{quant}")
    return {
        "name": name,
        "aliases": sorted(set(aliases)),
        "reference": ref.canonical,
        "path": str(path),
        "files": [str(folder / f.path) for f in model_files],
        "projector": str(folder / projector.path) if projector else None,
        "size": sum(f.size or 0 for f in model_files),
        "digest": "sha256:" + (first.sha256 or ""),
        "options": {},
    }


def _ollama(ref: refs.OllamaRef, settings: Settings, on_step, cancel) -> dict[str, Any]:
    base = registry.base(settings.registry)
    on_step(Step(status="pulling manifest"))
    manifest = registry.manifest(ref, base)
    blobs_dir = settings.root / "blobs"
    move = registry.transfer(cancel)
    blobs, model, projector, texts = [], None, None, {}
    for layer in manifest["layers"]:
        digest = str(layer.get("digest", ""))
        kind = layer.get("mediaType", "")
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise PullError(f"The registry's manifest for {ref.name} has a bad digest {digest!r}.")
        target = blobs_dir / ("sha256-" + digest[7:])
        blob = Blob(
            url=registry.blob_url(ref, base, digest),
            target=target,
            sha256=digest[7:],
            size=layer.get("size"),
        )
        if kind == registry.MODEL:
            model = target
        elif kind == registry.PROJECTOR:
            projector = target
        elif kind in registry.TEXTS:
            texts[registry.TEXTS[kind]] = target
        else:
            continue  # an adapter or a layer type this server has no use for
        blobs.append((blob, move))
    if model is None:
        raise PullError(f"{ref.name} has no GGUF model layer: nothing to serve.")
    _land_all(blobs, settings, on_step, cancel)
    on_step(Step(status="writing manifest"))
    record: dict[str, Any] = {
        "name": ref.name,
        "aliases": sorted({ref.text.strip(), f"{ref.name}"} - {ref.name, ""}),
        "reference": ref.name,
        "path": str(model),
        "files": [str(b.target) for b, _ in blobs],
        "projector": str(projector) if projector else None,
        "size": sum(b.size or 0 for b, _ in blobs if b.target == model),
        "digest": "sha256:" + model.name[len("sha256-") :],
        "options": {},
    }
    for key, path in texts.items():
        text = path.read_text(encoding="utf-8", errors="replace")
        record[key] = text
    if record.get("params"):
        record["options"] = ollama_options(record["params"])
    return record


def ollama_options(params_text: str) -> dict[str, Any]:
    """The backend options an Ollama ``params`` layer sets (its other keys are kept in the
    record but not applied: ``stop`` and the like have no option here)."""
    try:
        params = json.loads(params_text)
    except ValueError:
        return {}
    return store.options_of(params) if isinstance(params, dict) else {}


def pull(
    text: str,
    settings: Settings,
    on_step: Callable[[Step], None] = lambda s: None,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Fetch, verify and record the model ``text`` names; its record. Raises PullError (or
    refs.BadReference) with what to do."""
    cancel = cancel or threading.Event()
    ref = refs.parse(text)
    if isinstance(ref, refs.HfRef):
        record = _hf(ref, settings, on_step, cancel)
    else:
        record = _ollama(ref, settings, on_step, cancel)
    old = store.find(settings.root, record["name"])
    if old is not None:  # a second reference to the same model: keep its other names
        record["aliases"] = sorted(set(old.get("aliases", ())) | set(record["aliases"]))
    store.write(settings.root, record)
    on_step(Step(status="success"))
    return record
