"""``hoshikage doctor``: versions, plugins, the config, each model file, and every plugin's
own checks (the llama.cpp backend reports GPU offload and the CUDA libraries it finds).
Exits 1 when any check fails."""

from __future__ import annotations

import argparse
import platform
import sys
from importlib import metadata

from ..doctor import Check
from . import Commands, Context

PACKAGES = (
    "hoshikage-core",
    "hoshikage-llamacpp",
    "hoshikage-api",
    "llama-cpp-python",
    "litestar",
    "uvicorn",
    "pluggy",
    "attrs",
    "cattrs",
    "rich",
)


def register(cli: Commands) -> None:
    cli.add(
        "doctor",
        help="check the installation, plugins, GPU libraries, config and model files",
        setup=lambda p: p.add_argument(
            "--json", action="store_true", help="machine-readable output"
        ),
        run=doctor,
    )


def gather(ctx: Context) -> list[Check]:
    from ..catalog import build_registry
    from ..errors import ConfigError
    from ..gguf_info import GGUFError, read_info
    from ..plugins import plugin_names

    checks = [
        Check(
            name="python",
            ok=None,
            detail=f"{platform.python_version()} ({sys.executable})",
            source="core",
        )
    ]
    for dist in PACKAGES:
        try:
            checks.append(Check(name=dist, ok=None, detail=metadata.version(dist), source="core"))
        except metadata.PackageNotFoundError:
            checks.append(Check(name=dist, ok=None, detail="not installed", source="core"))
    plugins = [f"{name} ({version})" for name, version in plugin_names(ctx.pm)]
    checks.append(Check(name="plugins", ok=None, detail=", ".join(plugins), source="core"))
    for name, error in getattr(ctx.pm, "load_errors", []):
        checks.append(
            Check(
                name=f"plugin {name}",
                ok=False,
                detail=f"failed to load: {error}",
                hint="reinstall it, or leave it out with HOSHIKAGE_LOAD_PLUGINS",
                source="core",
            )
        )
    try:
        cfg = ctx.config
        registry = build_registry(cfg, ctx.pm)
    except ConfigError as exc:
        checks.append(
            Check(
                name="config", ok=False, detail=str(exc), hint="fix the key it names", source="core"
            )
        )
        return checks
    checks.append(
        Check(
            name="config",
            ok=True,
            detail=str(cfg.source or "built-in defaults (no file)"),
            source="core",
        )
    )
    for note in registry.notes:
        checks.append(Check(name="models_dir", ok=None, detail=note, source="core"))
    for entry in registry:
        if ctx.pm.hook.backend_options(backend=entry.backend) is None:
            checks.append(
                Check(
                    name=f"model {entry.name}",
                    ok=False,
                    detail=f"backend '{entry.backend}' is not installed",
                    hint=f"pip install hoshikage-{entry.backend}",
                    source="core",
                )
            )
            continue
        if entry.awaiting_first_load():
            checks.append(
                Check(
                    name=f"model {entry.name}",
                    ok=None,
                    source="core",
                    detail=f"{entry.path}: not created yet ({entry.on_first_load})",
                )
            )
            continue
        try:
            info = read_info(entry.path)
            detail = (
                f"{entry.path}: {info.architecture}, {info.quantization}, ctx {info.context_length}"
            )
            checks.append(Check(name=f"model {entry.name}", ok=True, detail=detail, source="core"))
        except GGUFError as exc:
            checks.append(
                Check(
                    name=f"model {entry.name}",
                    ok=False,
                    detail=f"{entry.path}: {exc}",
                    hint="fix the path in the config or replace the file",
                    source="core",
                )
            )
    for found in ctx.pm.hook.doctor_checks(config=cfg):
        checks.extend(found or [])
    return checks


def doctor(args: argparse.Namespace, ctx: Context) -> int:
    checks = gather(ctx)
    failed = [c for c in checks if c.ok is False]
    if args.json:
        ctx.print_json(
            {
                "ok": not failed,
                "checks": [
                    {
                        "name": c.name,
                        "ok": c.ok,
                        "detail": c.detail,
                        "hint": c.hint,
                        "source": c.source,
                    }
                    for c in checks
                ],
            }
        )
        return 1 if failed else 0
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="hoshikage doctor", title_justify="left", show_lines=False)
    table.add_column("", width=1)
    table.add_column("check")
    table.add_column("found")
    for c in checks:
        mark = {True: "[green]✓[/]", False: "[red]✗[/]", None: "[dim]·[/]"}[c.ok]
        detail = escape(c.detail)
        if c.hint and c.ok is not True:
            detail += f"\n[yellow]→ {escape(c.hint)}[/]"
        table.add_row(mark, c.name, detail)
    ctx.console.print(table)
    if failed:
        ctx.console.print(f"[red]{len(failed)} problem(s) found.[/]")
        return 1
    ctx.console.print("[green]No problems found.[/]")
    return 0
