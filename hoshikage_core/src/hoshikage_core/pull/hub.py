"""Hugging Face: which files a reference means, and their bytes, through ``huggingface_hub``.

- The repo's files, with each LFS file's SHA-256 and size, come from the hub API
  (``HfApi.list_repo_tree``, ``/api/models/{repo}/tree/{revision}``).
- Each file's download URL and ETag come from a ``HEAD`` of ``/{repo}/resolve/{rev}/{file}``
  (``get_hf_file_metadata``: redirects followed, ``X-Linked-Etag`` and ``X-Linked-Size``).
- Its bytes come through ``huggingface_hub``'s own ``http_get`` (``Range`` resume, retries
  on a dropped connection, a restart when ranges are ignored), written into our own
  ``.partial`` file (:mod:`.landing`): ``hf_hub_download`` writes to a temporary file it
  deletes on failure, so an interrupted download would start again from zero, and it does not
  check SHA-256 on plain HTTP.

``HF_TOKEN`` (or ``huggingface-cli login``'s token) is sent for gated repos; ``HF_ENDPOINT``
or ``[pull].hf_endpoint`` points at a mirror.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable

import attrs

from .landing import Cancelled, PullError
from .refs import HfRef

#: The quant chosen when a reference has no tag, as Ollama chooses.
DEFAULT_QUANT = "Q4_K_M"
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


class NotFound(PullError):
    code = "model_not_found"
    http_status = 404


class Denied(PullError):
    code = "access_denied"
    http_status = 403


@attrs.frozen(kw_only=True)
class RemoteFile:
    path: str
    size: int | None
    sha256: str | None


def endpoint(configured: str | None = None) -> str:
    """The hub to ask: ``[pull].hf_endpoint``, else ``HF_ENDPOINT``, else huggingface.co."""
    return (configured or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _explain(exc: Exception, ref: HfRef) -> PullError:
    """Hub errors in words that say what to do."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError):
        return Denied(
            f"{ref.repo} is a gated repository: accept its terms on its Hugging Face page, "
            "then set HF_TOKEN to a token of that account (or run `hf auth login`)."
        )
    if isinstance(exc, RepositoryNotFoundError):
        return NotFound(
            f"Hugging Face repository {ref.repo} not found (or private: set HF_TOKEN to a "
            "token that can read it)."
        )
    if isinstance(exc, RevisionNotFoundError):
        return NotFound(f"{ref.repo} has no revision {ref.revision!r}.")
    if isinstance(exc, EntryNotFoundError):
        return NotFound(f"{ref.repo} has no file {ref.file!r}.")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            return Denied(
                f"The hub refused access to {ref.repo} ({status}): set HF_TOKEN to a token "
                "that can read it (gated repos also need their terms accepted)."
            )
        return PullError(f"The hub answered {status} for {ref.repo}: {exc}")
    return PullError(f"Could not reach the hub for {ref.repo}: {exc}")


def files(ref: HfRef, hub: str, token: str | None) -> list[RemoteFile]:
    """Every GGUF file of the repo at the reference's revision."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    try:
        tree = HfApi(endpoint=hub, token=token).list_repo_tree(
            ref.repo, revision=ref.revision, recursive=True
        )
        out = []
        for entry in tree:
            if isinstance(entry, RepoFile) and entry.path.lower().endswith(".gguf"):
                parts = entry.path.split("/")
                if entry.path.startswith("/") or ".." in parts or "" in parts:
                    continue  # never a path out of the repo's folder
                lfs = entry.lfs
                out.append(
                    RemoteFile(
                        path=entry.path,
                        size=(lfs.size if lfs else entry.size),
                        sha256=(lfs.sha256 if lfs else None),
                    )
                )
    except Exception as exc:
        raise _explain(exc, ref) from exc
    return sorted(out, key=lambda f: f.path)


def _quant_pattern(quant: str) -> re.Pattern:
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(quant)}(?![A-Za-z0-9])", re.IGNORECASE)


def is_projector(path: str) -> bool:
    return os.path.basename(path).lower().startswith("mmproj")


def quants(found: list[RemoteFile]) -> dict[str, list[RemoteFile]]:
    """The repo's models by quant tag (``Q4_K_M`` → its file, or every shard of it)."""
    from ..gguf_info import FILE_TYPES

    names = sorted({*FILE_TYPES.values(), "Q3_K", "Q4_K", "Q5_K", "MXFP4"}, key=len)
    out: dict[str, list[RemoteFile]] = {}
    for f in found:
        if is_projector(f.path):
            continue
        shard = _SHARD.search(f.path)
        if shard and int(shard[1]) != 1:
            continue
        tag = None
        for name in reversed(names):  # longest first: Q4_K_M before Q4_K
            if _quant_pattern(name).search(f.path):
                tag = name
                break
        key = tag or os.path.basename(f.path)
        out.setdefault(key, []).append(f)
    return out


def shards(found: list[RemoteFile], first: RemoteFile) -> list[RemoteFile]:
    """``first`` and, for a split model, every other shard of it, in order."""
    shard = _SHARD.search(first.path)
    if not shard:
        return [first]
    prefix = first.path[: shard.start()]
    total = shard[2]
    parts = [
        f
        for f in found
        if f.path.startswith(prefix)
        and (m := _SHARD.search(f.path))
        and m.start() == len(prefix)
        and m[2] == total
    ]
    return sorted(parts, key=lambda f: f.path)


def choose(ref: HfRef, found: list[RemoteFile]) -> tuple[list[RemoteFile], RemoteFile | None]:
    """The model's files (every shard) and the projector beside it, if any."""
    models = [f for f in found if not is_projector(f.path)]
    projector = next(
        (f for f in found if is_projector(f.path) and "f16" in f.path.lower()),
        next((f for f in found if is_projector(f.path)), None),
    )
    if ref.file:
        match = [f for f in found if f.path == ref.file]
        if not match:
            listed = ", ".join(f.path for f in models) or "none"
            raise NotFound(f"{ref.repo} has no file {ref.file!r}. Its GGUF files: {listed}.")
        return shards(found, match[0]), None if is_projector(ref.file) else projector
    if not models:
        raise NotFound(f"{ref.repo} has no GGUF files.")
    by_quant = quants(found)
    wanted = ref.quant
    if wanted is None:
        if DEFAULT_QUANT in by_quant:
            wanted = DEFAULT_QUANT
        elif len(by_quant) == 1:
            wanted = next(iter(by_quant))
        else:
            raise NotFound(
                f"{ref.repo} has several quantizations and no {DEFAULT_QUANT}: name one, "
                f"e.g. hf.co/{ref.repo}:{sorted(by_quant)[0]} (it has {', '.join(sorted(by_quant))})."
            )
    for tag, picks in by_quant.items():
        if tag.lower() == wanted.lower():
            if len(picks) > 1:
                listed = ", ".join(f.path for f in picks)
                raise NotFound(f"{ref.repo}: {wanted} matches several files: {listed}.")
            return shards(found, picks[0]), projector
    raise NotFound(
        f"{ref.repo} has no {wanted} file. Its quantizations: {', '.join(sorted(by_quant))}."
    )


def resolve_url(ref: HfRef, path: str, hub: str, token: str | None) -> tuple[str, str | None]:
    """The URL to download ``path`` from (after redirects) and its ETag (for an LFS file,
    its SHA-256)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(ref.repo, path, revision=ref.revision, endpoint=hub)
    try:
        meta = get_hf_file_metadata(url, token=token, endpoint=hub)
    except Exception as exc:
        raise _explain(exc, attrs.evolve(ref, file=path)) from exc
    return meta.location or url, meta.etag


def transfer(token: str | None, cancel: threading.Event, hub: str) -> Callable[..., None]:
    """A transfer (see :mod:`.landing`) through ``huggingface_hub``'s ``http_get``. The
    token goes only to the hub itself, never to the CDN a file redirects to (as
    ``hf_hub_download`` does)."""
    from urllib.parse import urlsplit

    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    def run(url: str, f, offset: int, on_bytes: Callable[[int], None]) -> None:
        class Progress:
            """What ``http_get`` reports its bytes to (its ``tqdm_class``)."""

            def __init__(self, **_kw):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def update(self, n: int) -> None:
                if cancel.is_set():
                    raise Cancelled("The pull was cancelled.")
                on_bytes(n)

        headers = build_hf_headers(token=token)
        if urlsplit(url).netloc != urlsplit(hub).netloc:
            headers.pop("authorization", None)
        try:
            http_get(url, f, resume_size=offset, headers=headers, tqdm_class=Progress)
        except (Cancelled, OSError):
            raise
        except Exception as exc:
            raise PullError(f"Downloading {url} failed: {exc}") from exc

    return run
