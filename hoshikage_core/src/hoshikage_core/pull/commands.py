"""``hoshikage pull``, ``hoshikage rm`` and ``hoshikage ls``.

``pull`` fetches into the store in this process, with a progress bar per file (bytes,
speed, time left), then asks a running server to rescan (``POST /api/reload``) so the model
is served at once; with no server running, the next start serves it. ``--plan`` prints what
each quant of the reference would need, and whether it fits, without downloading.
"""

from __future__ import annotations

import argparse

from ..cli import Commands, Context, add_server_options


def register(cli: Commands) -> None:
    cli.add(
        "pull",
        help="download a model (hf.co/org/repo:Q4_K_M, org/repo/file.gguf, qwen3:8b) and serve it",
        setup=lambda p: (
            p.add_argument("reference", help="what to pull: hf.co/org/repo:QUANT, an Ollama name…"),
            p.add_argument(
                "--plan",
                action="store_true",
                help="print each quant's memory need and whether it fits; download nothing",
            ),
            p.add_argument(
                "--json", action="store_true", help="machine-readable: one JSON object a line"
            ),
            add_server_options(p),
        ),
        run=pull,
    )
    cli.add(
        "rm",
        help="delete a pulled model and its files",
        setup=lambda p: (
            p.add_argument("name", help="the pulled model's name or alias"),
            add_server_options(p),
        ),
        run=remove,
    )
    cli.add(
        "ls",
        help="list the pulled models (every served model: `hoshikage models`)",
        setup=lambda p: p.add_argument("--json", action="store_true", help="machine-readable"),
        run=listing,
    )


def _rescan(ctx: Context) -> str | None:
    """Ask a running server to pick the store up; its URL, or None when none answers."""
    from ..cli.client import ServerError, ServerUnreachable

    client = ctx.client()
    client.timeout = 5.0
    try:
        client.post("/api/reload", {})
    except (ServerUnreachable, ServerError):
        return None
    return client.base_url


def _line(data) -> None:
    import json
    import sys

    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def pull(args: argparse.Namespace, ctx: Context) -> int:
    from .fetch import Settings
    from .fetch import pull as fetch

    if args.plan:
        from .plan import print_plan

        return print_plan(args, ctx)
    settings = Settings.of(ctx.config)
    if args.json:  # one JSON object a line: the steps, then the result
        record = fetch(args.reference, settings, lambda step: _line(step.to_dict()))
    else:
        record = _with_bars(ctx, args.reference, settings, fetch)
    served = _rescan(ctx)
    if args.json:
        _line({"status": "pulled", "model": record, "server": served})
        return 0
    names = ", ".join([record["name"], *record.get("aliases", ())])
    ctx.console.print(f"[green]✓[/] pulled {record['name']} ({names})", highlight=False)
    ctx.console.print(f"  {record['path']}", highlight=False)
    if served:
        ctx.console.print(f"  served now by {served}", highlight=False)
    else:
        ctx.console.print("  no server is running: `hoshikage serve` will serve it")
    return 0


def _with_bars(ctx: Context, reference: str, settings, fetch):
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    tasks: dict[str, int] = {}
    with Progress(*columns, console=ctx.console, transient=False) as bars:

        def on_step(step) -> None:
            if step.digest is None:
                if step.status != "success":
                    bars.console.print(step.status, highlight=False)
                return
            task = tasks.get(step.digest)
            if task is None:
                task = bars.add_task(step.file or step.status, total=step.total)
                tasks[step.digest] = task
            bars.update(task, completed=step.completed or 0, total=step.total)

        return fetch(reference, settings, on_step)


def remove(args: argparse.Namespace, ctx: Context) -> int:
    from . import store

    record = store.remove(store.root_of(ctx.config), args.name)
    if record is None:
        names = [r["name"] for r in store.records(store.root_of(ctx.config))]
        ctx.err.print(
            f"[red]error:[/] no pulled model '{args.name}' (pulled: {', '.join(names) or 'none'})",
            highlight=False,
        )
        return 1
    served = _rescan(ctx)
    ctx.console.print(f"[green]✓[/] deleted {record['name']}", highlight=False)
    if served:
        ctx.console.print(f"  no longer served by {served}", highlight=False)
    return 0


def listing(args: argparse.Namespace, ctx: Context) -> int:
    from ..units import format_bytes
    from . import store

    root = store.root_of(ctx.config)
    records = store.records(root)
    if args.json:
        ctx.print_json({"store": str(root), "models": records})
        return 0
    if not records:
        ctx.console.print(
            f"No pulled models in {root}. Try `hoshikage pull hf.co/org/repo:Q4_K_M`."
        )
        return 0
    from rich.table import Table

    table = Table(title=f"Pulled models ({root})", title_justify="left")
    for col in ("name", "aliases", "reference", "size"):
        table.add_column(col, justify="right" if col == "size" else "left")
    for r in records:
        table.add_row(
            r["name"],
            ", ".join(r.get("aliases", ())) or "-",
            r.get("reference", "-"),
            format_bytes(r.get("size")),
        )
    ctx.console.print(table)
    return 0
