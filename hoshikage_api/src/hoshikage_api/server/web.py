"""``GET /`` and the built-in web page under ``/ui/``.

``/`` answers a liveness probe in plain text (Ollama clients probe it), or redirects a
browser (``Accept: text/html``) to the page. The page is static files shipped in the package
(``hoshikage_api/web/``): HTML, CSS and JavaScript modules, no build step, nothing from the
internet. The files carry no data, so they are public even with an API key; the page asks
for the key and sends it with its API calls. Every response under ``/ui/`` carries a strict
Content-Security-Policy: scripts only from this origin, no inline script, no ``eval``, no
HTML sinks (Trusted Types), connections only to this origin.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

from litestar import HttpMethod, Request, Response, route
from litestar.params import FromPath
from litestar.response import Redirect

from ..kernel.errors import ApiError

#: What ``GET /`` says to anything but a browser (Ollama answers "Ollama is running").
LIVENESS = "Hoshikage is running"

UI_PATH = "/ui/"

#: The page's Content-Security-Policy. ``require-trusted-types-for 'script'`` with no policy
#: makes every HTML sink (``innerHTML``, ``outerHTML``, ``insertAdjacentHTML``…) throw in
#: browsers that support Trusted Types: model and user text can only become DOM as text.
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ]
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}

#: Litestar adds ``; charset=utf-8`` to the ``text/`` types.
MEDIA_TYPES = {
    ".html": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
    ".txt": "text/plain",
}


@cache
def page_files() -> dict[str, tuple[bytes, str, str]]:
    """Every file of the page: name -> (content, media type, ETag). Only these names are
    served (a flat folder, read once), so no URL can reach another file."""
    folder = resources.files("hoshikage_api") / "web"
    files = {}
    for item in folder.iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        if item.is_file() and suffix in MEDIA_TYPES:
            content = item.read_bytes()
            etag = '"' + hashlib.sha256(content).hexdigest()[:16] + '"'
            files[item.name] = (content, MEDIA_TYPES[suffix], etag)
    return files


@route(
    "/",
    http_method=[HttpMethod.GET, HttpMethod.HEAD],
    opt={"public": True},
    include_in_schema=False,
)
async def root(request: Request) -> Response:
    """A browser goes to the page; anything else (a liveness probe) gets one line of text."""
    if "text/html" in request.headers.get("accept", ""):
        return Redirect(UI_PATH, status_code=302)
    return Response(LIVENESS, media_type="text/plain")


@route(
    "/ui",
    http_method=[HttpMethod.GET, HttpMethod.HEAD],
    opt={"public": True},
    include_in_schema=False,
)
async def page(request: Request) -> Response:
    """``/ui/`` is ``index.html``; ``/ui`` redirects there so the page's relative links
    resolve (Litestar routes both paths here)."""
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    if raw_path.split(b"?", 1)[0] == b"/ui":
        return Redirect(UI_PATH, status_code=301)
    return _file(request, "index.html")


@route(
    "/ui/{file_path:path}",
    http_method=[HttpMethod.GET, HttpMethod.HEAD],
    opt={"public": True},
    include_in_schema=False,
)
async def page_file(request: Request, file_path: FromPath[str]) -> Response:
    """One of the page's files (a flat folder: the name is looked up, never joined to a path)."""
    return _file(request, file_path.lstrip("/"))


def _file(request: Request, name: str) -> Response:
    found = page_files().get(name)
    if found is None:
        raise ApiError(404, "No such file in the web page.", code="not_found")
    content, media_type, etag = found
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache", "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(b"", status_code=304, headers=headers)
    return Response(content, media_type=media_type, headers=headers)
