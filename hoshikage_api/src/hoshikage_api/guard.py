"""What keeps a web page from driving the server: a Litestar guard on every route.

A page on any site can make a browser send "simple" requests to ``127.0.0.1`` without a CORS
preflight (a form's ``text/plain`` or ``multipart/form-data`` body, or none), and through DNS
rebinding (its own name resolving to ``127.0.0.1``) even read the answers. So:

- **Content type** (415): a request with a body that carries an ``Origin`` (a browser: every
  browser sends one with a request that is not a GET or HEAD) must say ``application/json``
  or a ``+json`` type. Browsers cannot send those cross-origin without a preflight, which CORS
  refuses. A request without an ``Origin`` is no browser's: its body is read as JSON
  whatever type it declares, as Ollama and llama-server read it, so ``curl URL -d '{...}'``
  (``application/x-www-form-urlencoded``), the form of every example in Ollama's API
  documentation, works. A route whose wire format is a multipart upload
  (``/v1/audio/transcriptions``) says so with ``opt={"multipart": True}`` and also takes
  ``multipart/form-data``; any other route refuses that type (415) from any client. The
  Host and Origin checks below still keep pages of other sites (which send their ``Origin``
  with such a form) and rebound names off it.
- **Host** (403), only when no ``api_key`` is set: the ``Host`` header must name this server:
  an IP literal, ``localhost`` (or a ``*.localhost`` name), this machine's name, the bound
  ``host``, or one of ``[server] allowed_hosts`` (``"*"``: any). A rebound name is none of
  those. With a key, the key is the protection.
- **Origin** (403) on every state-changing method (anything but GET, HEAD and OPTIONS): a
  request that carries an ``Origin`` must come from the server's own origin (that of its
  ``Host``) or one of ``[server] cors_origins`` (``"*"``: any). Clients other than browsers
  send no ``Origin`` and are not affected; the web page at ``/ui/`` is the server's own origin.

The errors are :class:`~hoshikage_api.kernel.errors.ApiError`, which each surface renders in its
own error shape, like the API key's 401.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from urllib.parse import urlsplit

from .kernel.body import is_json
from .kernel.errors import ApiError

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def browser_guard(server):
    """The guard for ``server`` (the ``[server]`` config the app is built with)."""
    hosts = {h.lower() for h in (server.host, *server.allowed_hosts) if h}
    check_host = not server.api_key and "*" not in hosts
    origins = {o.rstrip("/").lower() for o in server.cors_origins}
    any_origin = "*" in origins

    async def guard(connection, handler) -> None:
        scope = connection.scope
        method = scope.get("method", "GET")
        headers = connection.headers
        host = headers.get("host", "")
        if check_host and not _host_allowed(_hostname(host), hosts):
            raise ApiError(
                403,
                f"The Host '{host[:100]}' is not this server's. Without an api_key only the bound "
                "address, localhost, IP addresses and [server] allowed_hosts are answered.",
                type="permission_error",
                code="forbidden_host",
            )
        if method in SAFE_METHODS:
            return
        origin = headers.get("origin")
        if origin is not None and not any_origin:
            own = origin.rstrip("/").lower() in {f"http://{host}", f"https://{host}"}
            if not own and origin.rstrip("/").lower() not in origins:
                raise ApiError(
                    403,
                    f"Requests from the web origin '{origin[:100]}' are not allowed; add it to "
                    "[server] cors_origins to allow it.",
                    type="permission_error",
                    code="forbidden_origin",
                )
        content_type = headers.get("content-type", "")
        multipart = bool(getattr(handler, "opt", {}).get("multipart")) and _is_multipart(
            content_type
        )
        if (
            _has_body(headers)
            and not multipart
            and not is_json(content_type)
            and (origin is not None or _is_multipart(content_type))
        ):
            raise ApiError(
                415,
                "The request body must be JSON, sent with 'Content-Type: application/json' "
                f"(got '{headers.get('content-type', '')[:100] or 'none'}').",
                code="unsupported_media_type",
            )

    return guard


def _has_body(headers) -> bool:
    length = headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in headers


def _is_multipart(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "multipart/form-data"


def _hostname(host: str) -> str:
    """The name in a ``Host`` header, without its port (``[::1]:8000`` → ``::1``)."""
    try:
        return (urlsplit(f"//{host}").hostname or "").lower()
    except ValueError:
        return ""


def _host_allowed(name: str, configured: set[str]) -> bool:
    if not name:
        return False
    if name in configured or name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
        return True  # an IP literal cannot be rebound
    except ValueError:
        pass
    return name in _machine_names()


@functools.cache
def _machine_names() -> frozenset[str]:
    name = socket.gethostname().lower()  # no DNS lookup: this runs on the event loop
    return frozenset({name, name.split(".", 1)[0]})
