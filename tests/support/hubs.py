"""Hugging Face and the Ollama registry on loopback, serving real GGUF files, for the pull
tests (no internet here). They answer what ``huggingface_hub`` and Hoshikage's registry
client really request:

Hugging Face (point ``HF_ENDPOINT`` at :attr:`Hubs.hf`):

- ``GET /api/models/{org}/{repo}`` and ``/api/models/{org}/{repo}/revision/{rev}``: the
  model's info with ``siblings``;
- ``GET /api/models/{org}/{repo}/tree/{rev}?recursive=...``: the files with ``oid``,
  ``size`` and ``lfs: {oid, size, pointerSize}`` (the SHA-256), paged with a ``Link`` header
  when :attr:`Hubs.page_size` is set;
- ``HEAD|GET /{org}/{repo}/resolve/{rev}/{file}``: a 302 to the CDN (another origin) with
  ``X-Linked-Etag``, ``X-Linked-Size``, ``X-Repo-Commit`` and ``ETag``, as the hub answers
  for an LFS file.

Ollama's registry (:attr:`Hubs.registry`):

- ``GET /v2/{namespace}/{model}/manifests/{tag}``: a manifest whose layers are the GGUF
  (``application/vnd.ollama.image.model``), a template and a params layer;
- ``GET /v2/{namespace}/{model}/blobs/sha256:{hex}``: a 307 to the CDN.

The CDN (:attr:`Hubs.cdn`, its own port) serves the bytes with ``Range`` (206), and the
faults a test asks for: a connection cut after N bytes (:attr:`Hubs.cut_after`, once per
blob), a flipped byte (:attr:`Hubs.flip`), ranges ignored (:attr:`Hubs.ignore_range`), a
pause before each chunk (:attr:`Hubs.delay`). Every request is logged (:attr:`Hubs.log`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class Hubs:
    """Both hubs and their CDN; ``with Hubs() as hubs: hubs.add_hf(...)``."""

    def __init__(self):
        self.repos: dict[str, dict[str, Path]] = {}
        self.ollama: dict[str, dict] = {}
        self.blobs: dict[str, Path] = {}
        self.log: list[tuple[str, str, dict]] = []
        self.cut_after: int | None = None
        self.flip: bool = False
        self.ignore_range: bool = False
        self.delay: float = 0.0
        self.page_size: int | None = None
        #: Bytes of files sent so far.
        self.served = 0
        #: Gated repos and the token that may read them (else 401/403 ``GatedRepo``).
        self.gated: dict[str, str] = {}
        self._cut: set[str] = set()
        self._servers: list[ThreadingHTTPServer] = []

    # ---- content --------------------------------------------------------------------

    def add_hf(self, repo: str, files: dict[str, Path]) -> None:
        """``repo`` ("org/name") with ``files`` (path in repo → file on disk)."""
        self.repos[repo] = dict(files)
        for path in files.values():
            self.blobs[sha256_file(path)] = path

    def add_ollama(self, name: str, gguf: Path, template: str = "", params: dict | None = None):
        """``name`` ("namespace/model:tag") with its GGUF, a template and params layer."""
        folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"hubs-{os.getpid()}-{id(self)}"
        folder.mkdir(exist_ok=True)
        layers = [("application/vnd.ollama.image.model", gguf)]
        for kind, text in (
            ("application/vnd.ollama.image.template", template or "{{ .Prompt }}"),
            ("application/vnd.ollama.image.params", json.dumps(params or {"temperature": 0.5})),
        ):
            path = folder / hashlib.sha256(text.encode()).hexdigest()
            path.write_text(text)
            layers.append((kind, path))
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        }
        manifest["config"] = {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": "sha256:" + "0" * 64,
            "size": 2,
        }
        manifest["layers"] = []
        for kind, path in layers:
            digest = sha256_file(path)
            self.blobs[digest] = path
            manifest["layers"].append(
                {"mediaType": kind, "digest": "sha256:" + digest, "size": path.stat().st_size}
            )
        self.ollama[name] = manifest

    def requests(self, what: str) -> list[tuple[str, str, dict]]:
        return [entry for entry in self.log if what in entry[1]]

    # ---- serving --------------------------------------------------------------------

    def __enter__(self) -> Hubs:
        self.hf = self._serve()
        self.registry = self.hf  # one origin for the hub API and the registry
        self.cdn = self._serve()
        return self

    def __exit__(self, *exc) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def _serve(self) -> str:
        hubs = self

        class Handler(_Handler):
            owner = hubs

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    owner: Hubs
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _json(self, data, status: int = 200, headers: dict | None = None) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _empty(self, status: int, headers: dict) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        hubs = self.owner
        hubs.log.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
        path = self.path.split("?", 1)[0]
        query = self.path.split("?", 1)[1] if "?" in self.path else ""
        m = re.match(r"^/cdn/([0-9a-f]{64})$", path)
        if m:
            return self._blob(m[1])
        m = re.match(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)/?$", path)
        if m:
            return self._tree(m[1], query)
        m = re.match(r"^/api/models/([^/]+/[^/]+)(?:/revision/[^/]+)?$", path)
        if m:
            return self._info(m[1])
        m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if m:
            return self._resolve(m[1], m[3])
        m = re.match(r"^/v2/([^/]+)/([^/]+)/manifests/([^/]+)$", path)
        if m:
            manifest = hubs.ollama.get(f"{m[1]}/{m[2]}:{m[3]}")
            if manifest is None:
                return self._json({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, 404)
            return self._json(manifest)
        m = re.match(r"^/v2/([^/]+)/([^/]+)/blobs/sha256:([0-9a-f]{64})$", path)
        if m and m[3] in hubs.blobs:
            return self._empty(307, {"Location": f"{self._cdn()}/cdn/{m[3]}"})
        self._json({"error": "not found"}, 404)

    def _cdn(self) -> str:
        return self.owner.cdn

    def _files(self, repo: str) -> list[dict]:
        out = []
        for name, path in sorted(self.owner.repos[repo].items()):
            sha = sha256_file(path)
            size = path.stat().st_size
            oid = hashlib.sha1(sha.encode()).hexdigest()
            out.append(
                {
                    "type": "file",
                    "oid": oid,
                    "size": size,
                    "path": name,
                    "lfs": {"oid": sha, "size": size, "pointerSize": 134},
                }
            )
        return out

    def _refused(self, repo: str) -> bool:
        """A gated repo asked for without its token: 401 (no token) or 403, as the hub."""
        token = self.owner.gated.get(repo)
        if token is None or self.headers.get("Authorization") == f"Bearer {token}":
            return False
        status = 403 if self.headers.get("Authorization") else 401
        message = f"Access to model {repo} is restricted. You must have access to it."
        self._json(
            {"error": message}, status, {"X-Error-Code": "GatedRepo", "X-Error-Message": message}
        )
        return True

    def _tree(self, repo: str, query: str) -> None:
        if self._refused(repo):
            return
        if repo not in self.owner.repos:
            return self._json(
                {"error": "Repository not found"}, 404, {"X-Error-Code": "RepoNotFound"}
            )
        files = self._files(repo)
        size = self.owner.page_size
        start = int(re.search(r"cursor=(\d+)", query)[1]) if "cursor=" in query else 0
        if size:
            page = files[start : start + size]
            headers = {}
            if start + size < len(files):
                url = f"{self.owner.hf}{self.path.split('?')[0]}?{query.split('&cursor=')[0]}&cursor={start + size}"
                headers["Link"] = f'<{url}>; rel="next"'
            return self._json(page, headers=headers)
        self._json(files)

    def _info(self, repo: str) -> None:
        if repo not in self.owner.repos:
            return self._json(
                {"error": "Repository not found"}, 404, {"X-Error-Code": "RepoNotFound"}
            )
        siblings = [
            {"rfilename": f["path"], "size": f["size"], "lfs": f["lfs"]} for f in self._files(repo)
        ]
        self._json(
            {"id": repo, "modelId": repo, "sha": COMMIT, "siblings": siblings, "tags": ["gguf"]}
        )

    def _resolve(self, repo: str, file: str) -> None:
        if self._refused(repo):
            return
        files = self.owner.repos.get(repo)
        if files is None:
            return self._json(
                {"error": "Repository not found"}, 404, {"X-Error-Code": "RepoNotFound"}
            )
        if file not in files:
            return self._json({"error": "Entry not found"}, 404, {"X-Error-Code": "EntryNotFound"})
        path = files[file]
        sha = sha256_file(path)
        self._empty(
            302,
            {
                "Location": f"{self._cdn()}/cdn/{sha}",
                "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(path.stat().st_size),
                "X-Repo-Commit": COMMIT,
                "ETag": f'"{hashlib.sha1(sha.encode()).hexdigest()}"',
            },
        )

    def _blob(self, sha: str) -> None:
        hubs = self.owner
        path = hubs.blobs.get(sha)
        if path is None:
            return self._json({"error": "no such blob"}, 404)
        size = path.stat().st_size
        start, end = 0, size - 1
        rng = self.headers.get("Range")
        ranged = bool(rng) and not hubs.ignore_range
        if ranged:
            m = re.match(r"bytes=(\d+)-(\d*)$", rng)
            start = int(m[1])
            end = min(end, int(m[2])) if m[2] else end
            if start >= size:
                return self._empty(416, {"Content-Range": f"bytes */{size}"})
        self.send_response(206 if ranged else 200)
        self.send_header("Content-Length", str(end + 1 - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{sha}"')
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        cut = hubs.cut_after if sha not in hubs._cut else None
        sent = start
        with open(path, "rb") as f:
            f.seek(start)
            while sent <= end and (chunk := f.read(min(64 * 1024, end + 1 - sent))):
                if hubs.delay:
                    time.sleep(hubs.delay)
                if hubs.flip and sent <= size // 2 < sent + len(chunk):
                    i = size // 2 - sent
                    chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
                if cut is not None and sent + len(chunk) > cut:
                    self.wfile.write(chunk[: max(0, cut - sent)])
                    self.wfile.flush()
                    hubs._cut.add(sha)
                    self.close_connection = True
                    import socket

                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(chunk)
                sent += len(chunk)
                hubs.served += len(chunk)
