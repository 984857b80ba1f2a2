"""CLI commands that talk to a running server: ``status``, ``load``, ``unload``, ``reload``,
``chat``.

They use the admin and OpenAI routes over HTTP (stdlib only), so ``pip install
hoshikage-core`` alone can drive a server running elsewhere.
"""

from __future__ import annotations

import argparse
import os
import time
import urllib.parse

from ..units import format_bytes, format_duration
from . import Commands, Context, add_server_options

STATE_STYLE = {
    "unloaded": "dim",
    "loading": "yellow",
    "loaded": "green",
    "busy": "bold cyan",
    "unloading": "magenta",
}


def register(cli: Commands) -> None:
    def status_setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("--watch", "-w", action="store_true", help="refresh live, like top")
        p.add_argument(
            "--interval", type=float, default=1.0, help="refresh interval for --watch (s)"
        )
        add_server_options(p)

    cli.add(
        "status",
        help="show the running server's models, queue and uptime",
        setup=status_setup,
        run=status,
    )

    def name_setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("name", help="model name or alias")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        add_server_options(p)

    cli.add("load", help="load a model on the running server", setup=name_setup, run=load)
    cli.add("unload", help="unload a model on the running server", setup=name_setup, run=unload)

    def reload_setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="machine-readable output")
        add_server_options(p)

    cli.add(
        "reload",
        help="make the running server re-read its config file and models_dir",
        description=(
            "Make the running server re-read its config file and rescan models_dir, without a\n"
            "restart and without dropping a request (as POST /api/reload and SIGHUP do). A config\n"
            "with errors is refused as a whole: every error is printed, the exit code is 1 and the\n"
            "server keeps its running config."
        ),
        setup=reload_setup,
        run=reload,
    )

    def chat_setup(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "model", nargs="?", default="default", help="model name or alias (default: 'default')"
        )
        p.add_argument("--system", help="system prompt")
        p.add_argument("--temperature", type=float, default=None)
        p.add_argument("--max-tokens", type=int, default=None)
        p.add_argument(
            "--image",
            action="append",
            metavar="PATH",
            help="an image file sent with the first message (repeat for several); in the chat, "
            "/image PATH attaches one to the next message",
        )
        add_server_options(p)

    cli.add(
        "chat", help="chat with a model in the terminal (streaming)", setup=chat_setup, run=chat
    )


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


# ---- status ---------------------------------------------------------------------------


def render_status(data: dict):
    """The status view as a rich renderable (a table with a caption)."""
    from rich.table import Table

    table = Table(
        title=f"Hoshikage {data.get('version', '')}  ·  up {format_duration(data['uptime_seconds'])}",
        title_justify="left",
        caption=(
            f"running {data['running']} requests, "
            f"{data.get('sequences', data['running'])}/{data['concurrency']} sequences"
            f"  ·  queued {data['queued']}/{data['max_queue']}"
            f"  ·  max loaded {data['max_loaded']}"
        ),
        caption_justify="left",
    )
    for col, justify in (
        ("model", "left"),
        ("state", "left"),
        ("memory", "right"),
        ("idle", "right"),
        ("unload in", "right"),
        ("in use", "right"),
        ("slots", "right"),
        ("queued", "right"),
        ("cached", "right"),
        ("on disk", "right"),
        ("drafts", "right"),
        ("reqs", "right"),
        ("tok/s", "right"),
    ):
        table.add_column(col, justify=justify, no_wrap=True)
    for m in data["models"]:
        state = m["state"]
        label = m["name"] + (f" [dim]({', '.join(m['aliases'])})[/]" if m["aliases"] else "")
        unload_in = m.get("unload_in_seconds")
        if state == "failed":
            at = (m.get("failed_at") or "")[11:19]
            state_text = f"[red]failed[/] [dim]{at}[/]" if at else "[red]failed[/]"
        else:
            state_text = f"[{STATE_STYLE.get(state, '')}]{state}[/]"
        if state == "loading" and m.get("load_progress") is not None:
            state_text += f" {m['load_progress']:.0%}"
        if m.get("reload_pending"):  # a reload changed its options: it loads again when idle
            state_text += " [yellow](reload pending)[/]"
        tps = m.get("last_tokens_per_second")
        slots = m.get("slots")
        prompt, cached = m.get("prompt_tokens") or 0, m.get("cached_prompt_tokens") or 0
        drafted, accepted = m.get("draft_tokens") or 0, m.get("draft_accepted") or 0
        table.add_row(
            label,
            state_text,
            _memory_text(m),
            format_duration(m["idle_seconds"]) if m["idle_seconds"] is not None else "-",
            format_duration(unload_in) if unload_in is not None else "-",
            str(m["in_use"]),
            f"{m.get('running_sequences', 0)}/{slots}" if slots else "-",
            str(m["queued"]),
            f"{cached / prompt:.0%}" if prompt else "-",
            # prompt prefixes on disk that the next load restores
            str(m["cached_prompts"]) if m.get("cached_prompts") else "-",
            f"{accepted / drafted:.0%} of {drafted}" if drafted else "-",
            str(m["requests"]),
            f"{tps:.1f}" if tps else "-",
        )
    return table


def _memory_text(m: dict) -> str:
    """The model's bytes, and how many of them are on RPC servers (``placement`` buffers
    named ``RPC<n>[host:port]``)."""
    if not m["memory_bytes"]:
        return "-"
    placement = m.get("placement") or {}
    remote = sum(sum(kinds.values()) for name, kinds in placement.items() if name.startswith("RPC"))
    text = format_bytes(m["memory_bytes"])
    return f"{text} ({format_bytes(remote)} on RPC)" if remote else text


def status(args: argparse.Namespace, ctx: Context) -> int:
    client = ctx.client()
    if args.json:
        ctx.print_json(client.get("/api/status"))
        return 0
    if not args.watch:
        ctx.console.print(render_status(client.get("/api/status")))
        return 0
    from rich.live import Live
    from rich.text import Text

    from .client import ServerUnreachable

    with Live(console=ctx.console, auto_refresh=False, screen=False) as live:
        try:
            while True:
                try:
                    view = render_status(client.get("/api/status", timeout=2.0))
                except ServerUnreachable as exc:
                    view = Text(f"{exc}  (retrying)", style="red")
                live.update(view, refresh=True)
                time.sleep(max(0.1, args.interval))
        except KeyboardInterrupt:
            pass
    return 0


# ---- load / unload --------------------------------------------------------------------


def load(args: argparse.Namespace, ctx: Context) -> int:
    client = ctx.client()
    started = time.monotonic()
    if args.json:
        result = client.post(f"/api/models/{_quote(args.name)}/load", timeout=600)
        ctx.print_json(result)
        return 0
    result = _load_with_progress(ctx, client, args.name)
    took = time.monotonic() - started
    if result.get("load_seconds"):
        ctx.console.print(
            f"[green]✓[/] loaded [bold]{result['name']}[/] in {result['load_seconds']:.2f}s"
        )
    else:
        ctx.console.print(f"[green]✓[/] [bold]{result['name']}[/] was already loaded ({took:.2f}s)")
    return 0


def _load_with_progress(ctx: Context, client, name: str) -> dict:
    """POST the load in a thread; meanwhile a progress bar follows the model's
    ``load_progress`` in ``/api/status`` (a spinner until the backend reports one)."""
    import threading

    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    outcome: dict = {}

    def post() -> None:
        try:
            outcome["result"] = client.post(f"/api/models/{_quote(name)}/load", timeout=600)
        except BaseException as exc:  # raised again on the main thread
            outcome["error"] = exc

    worker = threading.Thread(target=post, name="hoshikage-load", daemon=True)
    worker.start()
    columns = (
        SpinnerColumn(),
        TextColumn("Loading [bold]{task.description}[/]"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=ctx.console, transient=True) as progress:
        task = progress.add_task(name, total=None)
        while worker.is_alive():
            worker.join(0.1)
            if not worker.is_alive():
                break
            fraction = _load_progress(client, name)
            if fraction is not None:
                progress.update(task, total=1.0, completed=fraction)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _load_progress(client, name: str) -> float | None:
    from .client import ServerError, ServerUnreachable

    try:
        data = client.get("/api/status", timeout=2.0)
    except (ServerError, ServerUnreachable):
        return None
    for m in data.get("models", ()):
        if m["name"] == name or name in m.get("aliases", ()):
            return m.get("load_progress")
    return None


def unload(args: argparse.Namespace, ctx: Context) -> int:
    client = ctx.client()
    started = time.monotonic()
    with ctx.console.status(f"Unloading [bold]{args.name}[/]…", spinner="dots"):
        result = client.post(f"/api/models/{_quote(args.name)}/unload", timeout=120)
    if args.json:
        ctx.print_json(result)
        return 0
    took = time.monotonic() - started
    messages = {
        "unloaded": f"[green]✓[/] unloaded [bold]{result['name']}[/] in {took:.2f}s",
        "scheduled": f"[yellow]…[/] [bold]{result['name']}[/] is busy; it unloads when its requests end",
        "not_loaded": f"[dim]{result['name']} was not loaded[/]",
    }
    ctx.console.print(messages.get(result.get("result"), str(result)))
    return 0


# ---- reload ---------------------------------------------------------------------------


def reload(args: argparse.Namespace, ctx: Context) -> int:
    import os

    from rich.markup import escape

    from ..errors import ConfigError
    from .client import ServerClient, ServerError

    try:
        client = ctx.client()
        result = client.post("/api/reload", timeout=120)
    except ConfigError as exc:
        if not args.url:  # the server's URL comes from this very file: report its errors here
            return _refused(
                args,
                ctx,
                exc.problems,
                "(the server was not asked: its URL is in this config; --url asks it)",
            )
        key = args.api_key if args.api_key is not None else os.environ.get("HOSHIKAGE_API_KEY", "")
        try:  # the server reads the file itself and reports every error
            result = ServerClient(args.url, key).post("/api/reload", timeout=120)
        except ServerError as err:
            if err.error_code != "config_error":
                raise
            return _refused(args, ctx, err.problems or [str(err)])
    except ServerError as exc:
        if exc.error_code != "config_error":
            raise
        return _refused(args, ctx, exc.problems or [str(exc)])
    if args.json:
        ctx.print_json(result)
        return 0
    where = result.get("source") or "built-in defaults"
    ctx.console.print(f"[green]✓[/] reloaded {escape(where)}: {len(result['models'])} model(s)")
    for key, label in (
        ("added", "added"),
        ("removed", "removed"),
        ("changed", "changed (load again when idle)"),
    ):
        if result.get(key):
            ctx.console.print(f"  {label}: {escape(', '.join(result[key]))}", highlight=False)
    if not (result.get("added") or result.get("removed") or result.get("changed")):
        ctx.console.print("  no model added, removed or changed")
    if result.get("needs_restart"):
        ctx.console.print(
            f"  [yellow]needs a restart:[/] {escape(', '.join(result['needs_restart']))}"
        )
    for note in result.get("notes") or []:
        ctx.console.print(f"  [dim]note:[/] {escape(note)}", highlight=False)
    return 0


def _refused(args: argparse.Namespace, ctx: Context, problems: list[str], note: str = "") -> int:
    from rich.markup import escape

    if args.json:
        ctx.print_json({"ok": False, "problems": problems})
        return 1
    ctx.err.print(
        "[bold red]reload refused:[/] the config has errors; the server keeps its running config."
    )
    for problem in problems:
        ctx.err.print(f"  {escape(problem)}", highlight=False)
    if note:
        ctx.err.print(f"[dim]{escape(note)}[/]")
    return 1


# ---- chat -----------------------------------------------------------------------------


def _image_part(path: str) -> dict:
    """An OpenAI ``image_url`` part holding the file at ``path`` as a data: URL."""
    import base64
    import mimetypes

    with open(os.path.expanduser(path), "rb") as f:
        data = f.read()
    mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
    url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
    return {"type": "image_url", "image_url": {"url": url}}


def chat(args: argparse.Namespace, ctx: Context) -> int:
    from .client import ServerError

    client = ctx.client()
    messages: list[dict] = []
    images: list[dict] = []
    for path in args.image or ():
        try:
            images.append(_image_part(path))
        except OSError as exc:
            ctx.err.print(f"[bold red]error:[/] cannot read {path}: {exc.strerror or exc}")
            return 1
    if args.system:
        messages.append({"role": "system", "content": args.system})
    ctx.console.print(
        f"[dim]Chatting with [bold]{args.model}[/] at {client.base_url}. "
        "Ctrl-D or /exit to quit, /reset to start over.[/]"
    )
    while True:
        try:
            line = ctx.console.input("[bold green]you ›[/] ")
        except EOFError:
            ctx.console.print()
            return 0
        if line.strip() in ("/exit", "/quit"):
            return 0
        if line.strip() == "/reset":
            messages = messages[:1] if args.system else []
            continue
        if line.strip().startswith("/image "):
            path = line.strip()[len("/image ") :].strip()
            try:
                images.append(_image_part(path))
                ctx.console.print(f"[dim]{path} goes with your next message[/]", highlight=False)
            except OSError as exc:
                ctx.console.print(f"[red]cannot read {path}: {exc.strerror or exc}[/]")
            continue
        if not line.strip():
            continue
        content: str | list = line
        if images:
            content = [{"type": "text", "text": line}, *images]
            images = []
        messages.append({"role": "user", "content": content})
        body = {
            "model": args.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            # A chat longer than the context goes on without its oldest turns.
            "truncate": True,
        }
        if args.temperature is not None:
            body["temperature"] = args.temperature
        if args.max_tokens is not None:
            body["max_tokens"] = args.max_tokens
        ctx.console.print("[bold magenta]ai ›[/] ", end="")
        reply = []
        started = time.monotonic()
        usage = None
        thinking = False
        try:
            for event in client.stream("/v1/chat/completions", body):
                for choice in event.get("choices", []):
                    delta = choice.get("delta", {})
                    # A model that reasons: its reasoning dimmed, the answer on its own line.
                    thought = delta.get("reasoning_content") or ""
                    if thought:
                        thinking = True
                        ctx.console.out(thought, style="dim", end="", highlight=False)
                    piece = delta.get("content") or ""
                    if piece and thinking:
                        thinking = False
                        ctx.console.out("")
                    reply.append(piece)
                    ctx.console.out(piece, end="", highlight=False)
                usage = event.get("usage") or usage
        except KeyboardInterrupt:
            ctx.console.print("[dim] (interrupted)[/]")
        except ServerError as exc:  # a refused message (a bad image): say why, keep chatting
            ctx.console.print()
            ctx.console.print(f"[red]{exc}[/]", highlight=False)
            messages.pop()
            continue
        ctx.console.print()
        if usage:
            took = time.monotonic() - started
            ctx.console.print(
                f"[dim]{usage['completion_tokens']} tokens in {took:.1f}s"
                f" (prompt {usage['prompt_tokens']})[/]"
            )
        messages.append({"role": "assistant", "content": "".join(reply)})
