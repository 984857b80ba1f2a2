"""The core's own CLI commands: ``config check`` and ``models``."""

from __future__ import annotations

import argparse

from . import Commands, Context, add_server_options


def register(cli: Commands) -> None:
    config = cli.group("config", help="inspect the config file")
    config.add(
        "check",
        help="validate a config file and summarise it",
        setup=lambda p: (
            p.add_argument("path", nargs="?", help="config file (default: the one in use)"),
            p.add_argument("--json", action="store_true", help="machine-readable output"),
        ),
        run=config_check,
    )
    cli.add(
        "models",
        help="list registered models with their GGUF facts (and state, if a server runs)",
        setup=lambda p: (
            p.add_argument("--json", action="store_true", help="machine-readable output"),
            add_server_options(p),
        ),
        run=models,
    )


def config_check(args: argparse.Namespace, ctx: Context) -> int:
    from .. import config as config_mod
    from ..catalog import build_registry

    cfg = config_mod.load(args.path or getattr(args, "config", None), pm=ctx.pm)
    registry = build_registry(cfg, ctx.pm)
    warnings = []
    for entry in registry:
        if ctx.pm.hook.backend_options(backend=entry.backend) is None:
            warnings.append(f"model '{entry.name}': backend '{entry.backend}' is not installed")
        if entry.file_size() is None and not entry.awaiting_first_load():
            warnings.append(f"model '{entry.name}': file not found: {entry.path}")
    summary = {
        "ok": True,
        "source": str(cfg.source) if cfg.source else None,
        "server": f"{cfg.server.host}:{cfg.server.port}",
        "models": [e.name for e in registry],
        "warnings": warnings,
        "notes": registry.notes,
    }
    if args.json:
        ctx.print_json(summary)
        return 0
    where = cfg.source or "built-in defaults (no config file)"
    ctx.console.print(f"[green]✓[/] config OK: {where}")
    ctx.console.print(
        f"  server {summary['server']}, concurrency {cfg.server.concurrency}, "
        f"max_queue {cfg.server.max_queue}, max_tokens {cfg.server.max_tokens or 'up to the context'}, "
        f"idle_ttl {cfg.unload.idle_ttl:g}s, max_loaded {cfg.unload.max_loaded}"
    )
    ctx.console.print(f"  {len(registry)} model(s): {', '.join(summary['models']) or '-'}")
    if cfg.models_dir:
        discovered = sum(1 for e in registry if e.source == "models_dir")
        ctx.console.print(
            f"  {discovered} found in models_dir: {', '.join(d.path for d in cfg.models_dir)}"
        )
    for w in warnings:
        ctx.console.print(f"  [yellow]warning:[/] {w}")
    for note in registry.notes:
        ctx.console.print(f"  [dim]note:[/] {note}", highlight=False)
    return 0


def models(args: argparse.Namespace, ctx: Context) -> int:
    from ..catalog import build_registry
    from ..gguf_info import GGUFError, read_info
    from ..units import format_bytes
    from .client import ServerClient, ServerError, ServerUnreachable

    registry = build_registry(ctx.config, ctx.pm)
    states: dict[str, str] = {}
    client: ServerClient = ctx.client()
    client.timeout = 0.5
    try:
        for m in client.get("/api/status")["models"]:
            states[m["name"]] = m["state"]
        server = client.base_url
    except (ServerUnreachable, ServerError, KeyError, TypeError):
        server = None
    rows = []
    for entry in registry:
        row = {
            "name": entry.name,
            "aliases": list(entry.aliases),
            "backend": entry.backend,
            "path": entry.path,
            "source": entry.source,
            "file_bytes": entry.file_size(),
            "architecture": None,
            "quantization": None,
            "context_length": None,
            "n_ctx": entry.option("n_ctx"),
            "context_window": entry.context_window(),
            "input": ["text", *entry.modalities()],
            "error": None,
            "note": None,
            "state": states.get(entry.name),
        }
        if entry.awaiting_first_load():
            row["note"] = f"not created yet: {entry.on_first_load}"
            rows.append(row)
            continue
        try:
            info = read_info(entry.path)
            row.update(
                architecture=info.architecture,
                quantization=info.quantization,
                context_length=info.context_length,
            )
        except GGUFError as exc:
            row["error"] = str(exc)
        rows.append(row)
    if args.json:
        ctx.print_json({"server": server, "models": rows})
        return 0
    from rich.table import Table

    table = Table(title="Registered models", title_justify="left")
    for col in ("name", "aliases", "arch", "quant", "ctx", "size", "input", "state"):
        table.add_column(
            col,
            justify="right" if col in ("ctx", "size") else "left",
            no_wrap=col in ("name", "ctx", "size"),
        )
    for r in rows:
        # The context a request gets here / the one the model was trained for.
        ctx_text = str(r["context_window"] or r["context_length"] or "-")
        if r["context_window"] and r["context_length"]:
            ctx_text = f"{r['context_window']} / {r['context_length']}"
        state = r["state"] or ("[dim]no server[/]" if server is None else "-")
        if r["error"]:
            state = f"[red]{r['error']}[/]"
        elif r["note"] and not r["state"]:
            state = f"[dim]{r['note']}[/]"
        table.add_row(
            r["name"],
            ", ".join(r["aliases"]) or "-",
            r["architecture"] or "-",
            r["quantization"] or "-",
            ctx_text,
            format_bytes(r["file_bytes"]),
            ", ".join(r["input"]),
            state,
        )
    if not rows:
        ctx.console.print(
            "No models registered. Add \\[\\[models]] to the config (see `hoshikage config check`)."
        )
    else:
        ctx.console.print(table)
    return 0
