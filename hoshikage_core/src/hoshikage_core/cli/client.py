"""A small HTTP client for the CLI's server commands (stdlib only: no extra dependency).

Errors become one-line :class:`ServerUnreachable` / :class:`ServerError` messages.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from ..errors import HoshikageError


class ServerUnreachable(HoshikageError):
    code = "server_unreachable"


class ServerError(HoshikageError):
    code = "server_error"

    def __init__(
        self, status: int, message: str, code: str | None = None, problems: list[str] | None = None
    ):
        self.status = status
        self.error_code = code
        #: A refused reload's config errors, one ``key.path: message`` each.
        self.problems = problems or []
        super().__init__(message)


class ServerClient:
    def __init__(self, base_url: str, api_key: str = "", timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def _open(self, method: str, path: str, body: Any, accept: str, timeout: float | None):
        url = self.base_url + path
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", accept)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            return urllib.request.urlopen(req, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                err = json.loads(raw)["error"]
                message, code = err.get("message") or str(exc), err.get("code")
                problems = [str(p) for p in err.get("problems") or []]
            except (ValueError, KeyError, TypeError, AttributeError):
                message, code, problems = f"{url}: HTTP {exc.code} {exc.reason}", None, []
            raise ServerError(exc.code, message, code, problems) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServerUnreachable(
                f"Cannot reach the Hoshikage server at {self.base_url} ({reason}). "
                "Is `hoshikage serve` running? Use --url to point elsewhere."
            ) from None

    def request(
        self, method: str, path: str, body: Any = None, timeout: float | None = None
    ) -> Any:
        with self._open(method, path, body, "application/json", timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def get(self, path: str, timeout: float | None = None) -> Any:
        return self.request("GET", path, timeout=timeout)

    def post(self, path: str, body: Any = None, timeout: float | None = None) -> Any:
        return self.request("POST", path, body if body is not None else {}, timeout=timeout)

    def stream(self, path: str, body: Any, timeout: float = 600) -> Iterator[dict]:
        """POST ``body`` and yield the JSON of each server-sent event until ``[DONE]``."""
        with self._open("POST", path, body, "text/event-stream", timeout) as resp:
            for raw in resp:
                line = raw.decode("utf-8").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                event = json.loads(data)
                if "error" in event:
                    err = event["error"]
                    raise ServerError(500, err.get("message", "the stream failed"), err.get("code"))
                yield event
