"""The server's pulls (:class:`hoshikage_core.pull.jobs.Pulls`), made on first use and
shared by every surface that pulls (Ollama's ``/api/pull``, Hoshikage's
``/api/models/pull``, the web page). A finished pull refreshes the registry before its
``success``, so the model is served at once."""

from __future__ import annotations

from litestar import Request

from .deps import runtime_of
from .errors import invalid


def pulls_of(request: Request):
    state = request.app.state
    pulls = getattr(state, "pulls", None)
    if pulls is None:
        from hoshikage_core.pull.fetch import Settings
        from hoshikage_core.pull.jobs import Pulls
        from hoshikage_core.reload import refresh

        runtime = runtime_of(request)

        async def on_done(_record) -> None:
            await refresh(runtime)

        pulls = Pulls(
            lambda: Settings.of(runtime.config),
            on_done,
            concurrency=runtime.config.pull.concurrency,
        )
        state.pulls = pulls
    return pulls


def checked(pulls, reference: str, param: str = "model") -> str:
    """``reference`` when it names something to pull; a 400 saying why not otherwise."""
    from hoshikage_core.pull.refs import BadReference

    try:
        pulls.key(reference)
    except BadReference as exc:
        raise invalid(str(exc), param) from exc
    return reference
