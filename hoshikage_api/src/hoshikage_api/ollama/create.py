"""Ollama's ``POST /api/create`` and its blobs (``HEAD``/``POST /api/blobs/{digest}``): a
model of the user's own, kept in the pull store (:mod:`hoshikage_core.pull.store`) and
served at once, as ``ollama create NAME -f Modelfile`` makes one.

A model is made either

- **from a GGUF file**: ``ollama create`` (and the clients' ``create_blob``) first uploads
  the file as a blob, ``POST /api/blobs/sha256:<hex>`` (``HEAD`` tells whether it is
  there already), then sends ``files: {"name.gguf": "sha256:<hex>"}``; a second file whose
  name holds ``mmproj`` is its vision projector; or
- **from a model served here** (``from``: a name or alias from the config, ``models_dir``
  or the store): the same weights under another name, with their options.

and given, over those, its ``system`` message (the model's ``system`` option: the chats that
bring none begin with it, as Ollama reads SYSTEM), ``parameters`` (``temperature``,
``top_p``, ``top_k``, ``min_p``, ``repeat_penalty``, ``seed``, ``num_ctx``, ``num_predict``
become its options; other keys are kept in its record), a ``template`` in Jinja (the model's
``chat_template``; Ollama's Go templates cannot be read here, a 400 says so) and its
``license``. What Hoshikage cannot do is a 400 that says so: ``quantize``, ``adapters``,
``messages``, and the older ``modelfile`` text.

A blob upload is written beside its place (``.partial``), hashed as it comes, fsynced and
renamed only when its SHA-256 is the digest it was sent under; a mismatch deletes it, and
the next upload deletes the partial files of uploads abandoned for an hour. The
body of an upload is not bounded by ``max_body_size`` (a GGUF file is gigabytes); it
must fit the disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import attrs
import msgspec
from litestar import Request, Response, head, post
from litestar.params import Body, Parameter
from msgspec import Meta, Struct

from ..kernel.answer import stream_response
from ..kernel.deps import runtime_of
from ..kernel.errors import ApiError, invalid
from . import models
from .pull import NDJSON, PullStatus, each_step, ndjson_lines

#: A blob's digest in its route.
Digest = Annotated[str, Parameter(description="`sha256:<64 hex digits>`", max_length=100)]
#: Seconds without a write after which a partial upload is abandoned (:func:`_forget_abandoned`).
_ABANDONED = 3600
#: Bytes gathered before each write of an upload (one thread hop each).
_CHUNK = 4 * 1024 * 1024
#: Signs of Ollama's Go template syntax (``{{ .Prompt }}``, ``{{ range .Messages }}``).
_GO_TEMPLATE = ("{{ .", "{{- .", "{{.", ".Prompt", ".Messages", ".System }}")


class CreateRequest(Struct, kw_only=True):
    """``POST /api/create`` (Ollama 0.5 and later)."""

    model: Annotated[str, Meta(max_length=1024)] | None = None
    #: The older name of ``model``.
    name: Annotated[str, Meta(max_length=1024)] | None = None
    from_: Annotated[str, Meta(max_length=1024)] | None = msgspec.field(default=None, name="from")
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    template: str | None = None
    license: str | list[str] | None = None
    system: str | None = None
    parameters: dict[str, Any] | None = None
    messages: list[Any] | None = None
    quantize: str | None = None
    stream: bool | None = None
    #: The older API's Modelfile text and path: refused, with what to send instead.
    modelfile: str | None = None
    path: str | None = None


class CopyRequest(Struct, kw_only=True):
    """``POST /api/copy``."""

    source: Annotated[str, Meta(min_length=1, max_length=1024)]
    destination: Annotated[str, Meta(min_length=1, max_length=1024)]


@attrs.frozen
class _Base:
    """What a created model starts from."""

    path: str
    files: tuple[str, ...]
    projector: str | None
    options: dict[str, Any]
    record: dict[str, Any]
    digest: str


def _refuse_unsupported(data: CreateRequest) -> None:
    if data.modelfile is not None or data.path is not None:
        raise invalid(
            "A Modelfile's text is not read here: send its parts as Ollama 0.5's create does "
            "('from' or 'files', 'system', 'parameters', 'template'); the ollama command and "
            "clients of Ollama 0.5 and later do.",
            "modelfile",
        )
    if data.quantize:
        raise invalid(
            "Hoshikage does not quantize models: create from a GGUF file already quantized "
            "(pull one with the quantization in its tag, e.g. hf.co/org/repo:Q4_K_M).",
            "quantize",
        )
    if data.adapters:
        raise invalid("LoRA adapters are not applied here: leave 'adapters' out.", "adapters")
    if data.messages:
        raise invalid(
            "A model's preset messages are not kept here: send them with each chat, or give "
            "the model a 'system' message.",
            "messages",
        )
    if data.template and any(sign in data.template for sign in _GO_TEMPLATE):
        raise invalid(
            "This TEMPLATE is in Ollama's Go template syntax, which Hoshikage cannot read: it "
            "renders chats with the model's own Jinja chat template (the GGUF's). Leave "
            "TEMPLATE out, or give a Jinja template.",
            "template",
        )


def _from_blobs(root: Path, files: dict[str, str]) -> _Base:
    """The model of uploaded ``files`` (name -> digest): one GGUF model, and a projector."""
    from hoshikage_core.pull import store

    model = projector = None
    paths = []
    for name, digest in files.items():
        try:
            path = store.blob_path(root, digest)
        except ValueError as exc:
            raise invalid(str(exc), "files") from None
        if not path.is_file():
            raise invalid(
                f"No blob {digest} here (for '{name}'): upload it first with POST "
                f"/api/blobs/{digest}.",
                "files",
            )
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise invalid(
                    f"'{name}' is not a GGUF file: only GGUF models are served here.", "files"
                )
        paths.append(str(path))
        if "mmproj" in name.lower():
            if projector is not None:
                raise invalid("More than one projector (mmproj) file.", "files")
            projector = (str(path), digest)
        else:
            if model is not None:
                raise invalid(
                    "More than one model file: give one GGUF file (and its mmproj projector).",
                    "files",
                )
            model = (str(path), digest)
    if model is None:
        raise invalid("No model file among 'files' (only a projector).", "files")
    return _Base(
        path=model[0],
        files=tuple(paths),
        projector=projector[0] if projector else None,
        options={},
        record={},
        digest=model[1],
    )


def _from_model(runtime, root: Path, label: str) -> _Base:
    """The model served here as ``label``: its weights and its options."""
    from hoshikage_core.pull import store

    entry = runtime.resolve(models.resolve(runtime, label))
    if entry.awaiting_first_load():
        raise invalid(
            f"'{label}' is {entry.on_first_load}: load it once (a chat), then create from it.",
            "from",
        )
    if entry.source == store.SOURCE:
        record = store.find(root, entry.name) or {}
        return _Base(
            path=record.get("path", entry.path),
            files=tuple(record.get("files") or ()),
            projector=record.get("projector"),
            options=dict(record.get("options") or {}),
            record=record,
            digest=record.get("digest") or "",
        )
    options = entry.options
    if not isinstance(options, dict):  # the backend's options: those the config set
        options = {
            field.name: value
            for field in attrs.fields(type(options))
            if (value := getattr(options, field.name)) != field.default and _plain(value)
        }
    return _Base(
        path=os.path.abspath(os.path.expanduser(entry.path)),
        files=(),
        projector=None,
        options=dict(options),
        record={},
        digest="",
    )


def _plain(value: Any) -> bool:
    """Whether ``value`` is kept in a record (JSON)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _created(runtime, data: CreateRequest, name: str) -> dict[str, Any]:
    """The record of the model ``data`` makes (written by the caller)."""
    from hoshikage_core.pull import store

    root = store.root_of(runtime.config)
    if data.files and data.from_:
        raise invalid("Give 'from' or 'files', not both.", "from")
    if data.files:
        base = _from_blobs(root, data.files)
    elif data.from_:
        base = _from_model(runtime, root, data.from_)
    else:
        raise invalid(
            "'from' (a model served here) or 'files' (uploaded blobs) is required.", "from"
        )
    options = dict(base.options)
    try:
        params = json.loads(base.record.get("params") or "{}")
    except (TypeError, ValueError):
        params = {}
    params = params if isinstance(params, dict) else {}
    if data.parameters:
        params.update(data.parameters)
        options.update(store.options_of(data.parameters))
    system = base.record.get("system") or options.pop("system", None) or ""
    if data.system is not None:
        system = data.system
    options.pop("system", None)
    if data.template:
        options["chat_template"] = data.template
    license = data.license if data.license is not None else base.record.get("license", "")
    if isinstance(license, list):
        license = "\n".join(str(part) for part in license)
    try:
        size = os.path.getsize(base.path)
    except OSError:
        size = 0
    return {
        "name": name,
        "aliases": [],
        "reference": f"created from {data.from_}" if data.from_ else "created from files",
        "path": base.path,
        "files": list(base.files),
        "projector": base.projector,
        "size": size,
        "digest": base.digest,
        "options": options,
        "system": system,
        "license": license,
        "params": json.dumps(params) if params else "",
        "created_from": data.from_ or "",
    }


@post(
    "/create",
    status_code=200,
    summary="Create a model (Ollama)",
    name="ollama_create",
    operation_id="ollama_create",
    description="A model from uploaded GGUF `files` or `from` a model served here, with its "
    "`system` message, `parameters`, Jinja `template` and `license`; served at once. NDJSON "
    'status lines unless `stream` is false, then one `{"status": "success"}`.',
)
async def create(request: Request, data: Annotated[CreateRequest, Body()]) -> PullStatus:
    from hoshikage_core.pull import store
    from hoshikage_core.reload import refresh

    runtime = runtime_of(request)
    name = (data.model or data.name or "").strip()
    if not name:
        raise invalid("'model' is required.", "model")
    _refuse_unsupported(data)
    bare = _free_name(runtime, name, "model")
    record = _created(runtime, data, bare)
    await asyncio.to_thread(store.replace, store.root_of(runtime.config), record)
    await refresh(runtime)
    if bare not in runtime.registry:  # left out: the registry's note says why
        notes = [n for n in runtime.registry.notes if f"'{bare}'" in n]
        raise ApiError(500, f"'{bare}' was created but is not served: {'; '.join(notes)}")
    if data.stream is False:
        return PullStatus(status="success")
    steps = [
        *({"status": f"using existing layer {f}"} for f in _digests(record)),
        {"status": "writing manifest"},
        {"status": "success"},
    ]
    return await stream_response(request, ndjson_lines(each_step(steps)), NDJSON)


def _free_name(runtime, name: str, param: str) -> str:
    """``name`` without ``:latest``, when no model of the config or ``models_dir`` has it (a
    created or pulled model of that name is replaced)."""
    from hoshikage_core.pull import store

    bare = name[: -len(":latest")] if name.endswith(":latest") else name
    for label in (name, bare):
        if label in runtime.registry:
            entry = runtime.resolve(label)
            if entry.source != store.SOURCE or label in entry.aliases:
                raise invalid(
                    f"'{name}' is already a name of the model '{entry.name}' "
                    f"({entry.source}): choose another name.",
                    param,
                )
    return bare


@post(
    "/copy",
    status_code=200,
    summary="Copy a model (Ollama)",
    name="ollama_copy",
    operation_id="ollama_copy",
)
async def copy(request: Request, data: Annotated[CopyRequest, Body()]) -> None:
    """``destination`` becomes a model of its own with ``source``'s weights, options and
    system message, as Ollama copies a manifest: the files are shared, not copied, and
    removing either model leaves the other."""
    from hoshikage_core.pull import store
    from hoshikage_core.reload import refresh

    runtime = runtime_of(request)
    models.resolve(runtime, data.source)  # an unknown source is the 404
    bare = _free_name(runtime, data.destination.strip(), "destination")
    record = _created(runtime, CreateRequest(model=bare, from_=data.source), bare)
    await asyncio.to_thread(store.replace, store.root_of(runtime.config), record)
    await refresh(runtime)


def _digests(record: dict[str, Any]) -> list[str]:
    return [
        "sha256:" + Path(f).name[len("sha256-") :] if Path(f).name.startswith("sha256-") else f
        for f in (record["files"] or [record["path"]])
    ]


# ---- blobs ----------------------------------------------------------------------------------


def _blob(request: Request, digest: str) -> Path:
    from hoshikage_core.pull import store

    try:
        return store.blob_path(store.root_of(runtime_of(request).config), digest)
    except ValueError as exc:
        raise invalid(str(exc), "digest") from None


def _forget_abandoned(folder: Path) -> None:
    """Delete the partial uploads nothing has written to for :data:`_ABANDONED` seconds (an
    upload cut off, a server killed while one ran): an upload under way writes all along."""
    now = time.time()
    for partial in folder.glob("sha256-*.upload-*.partial"):
        try:
            if now - partial.stat().st_mtime > _ABANDONED:
                partial.unlink()
        except OSError:
            pass


@head(
    "/blobs/{digest:str}",
    status_code=200,
    summary="Whether a blob is here (Ollama)",
    name="ollama_blob_head",
    operation_id="ollama_blob_head",
)
async def blob_head(request: Request, digest: Digest) -> None:
    if not _blob(request, digest).is_file():
        raise ApiError(404, f"No blob {digest} here.", param="digest")


@post(
    "/blobs/{digest:str}",
    status_code=201,
    summary="Upload a blob (Ollama)",
    name="ollama_blob_post",
    operation_id="ollama_blob_post",
    request_max_body_size=None,
    description="The body (a GGUF file, for `/api/create`'s `files`) is kept under its "
    "digest once its SHA-256 is that digest; a mismatch is a 400 and nothing is kept.",
)
async def blob_post(request: Request, digest: Digest) -> Response:
    target = _blob(request, digest)
    if target.is_file():
        return Response(content=b"", status_code=201)
    target.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(_forget_abandoned, target.parent)
    length = request.headers.get("content-length")
    if length and length.isdigit():
        free = shutil.disk_usage(target.parent).free
        if int(length) > free:
            raise invalid(
                f"The blob is {int(length):,} bytes and the disk of {target.parent} has "
                f"{free:,} free.",
                "digest",
            )
    partial = target.with_name(f"{target.name}.upload-{os.getpid()}-{id(request)}.partial")
    sha = hashlib.sha256()
    try:
        with open(partial, "wb") as out:
            pending = bytearray()
            async for chunk in request.stream():
                sha.update(chunk)
                pending += chunk
                if len(pending) >= _CHUNK:
                    await asyncio.to_thread(out.write, bytes(pending))
                    pending.clear()
            if pending:
                await asyncio.to_thread(out.write, bytes(pending))
            await asyncio.to_thread(out.flush)
            await asyncio.to_thread(os.fsync, out.fileno())
        got = "sha256:" + sha.hexdigest()
        if got != digest:
            raise invalid(f"The body's digest is {got}, not {digest}: nothing was kept.", "digest")
        os.replace(partial, target)
    finally:
        try:
            os.unlink(partial)
        except OSError:
            pass
    return Response(content=b"", status_code=201)
