"""The config file: one TOML file, loaded with attrs and cattrs.

Resolution: ``--config PATH``, else ``$HOSHIKAGE_CONFIG``, else
``$XDG_CONFIG_HOME/hoshikage/config.toml`` (``~/.config/hoshikage/config.toml``). An explicit
path that does not exist is an error; a missing default file means "all defaults, no models".

Every error names its key path, e.g. ``models[1].n_ctx: must be > 0``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from .errors import ConfigError
from .units import parse_duration, parse_size


class FieldError(ValueError):
    """A validator's complaint about one field, so the message can name it."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def _positive(_inst, attr, value):
    if value <= 0:
        raise FieldError(attr.name, "must be > 0")


def _non_negative(_inst, attr, value):
    if value < 0:
        raise FieldError(attr.name, "must be >= 0")


def _port(_inst, attr, value):
    if not 0 <= value <= 65535:
        raise FieldError(attr.name, "must be between 0 and 65535")


def _non_empty(_inst, attr, value):
    if not value.strip():
        raise FieldError(attr.name, "must not be empty")


class Duration(float):
    """Seconds; written as a number or a string like "90s" or "5m"."""


class DurationOrNever(float):
    """Like :class:`Duration`, and -1 (or "never") means never."""


class Size(int):
    """Bytes; written as a number or a string like "512MB" or "8GiB"."""


@attrs.frozen(kw_only=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = attrs.field(default=8000, validator=_port)
    #: Bearer token required on every route but /health. Empty: no auth.
    api_key: str = ""
    #: Sequences generating at once over all models (a request with ``n`` choices counts
    #: ``n``); each model is further held to its own capacity (``parallel``). 1: strictly
    #: one generation at a time, as the seed's VRAM semaphore.
    concurrency: int = attrs.field(default=4, validator=_positive)
    #: Requests allowed to wait for a slot; one more is refused with 503.
    max_queue: int = attrs.field(default=32, validator=_non_negative)
    #: How long a request may be passed over for requests to the loaded model.
    affinity_wait: Duration = Duration(10.0)
    #: Largest request body accepted, in bytes (or "8MB").
    max_body_size: Size = Size(8 * 1024 * 1024)
    #: Origins allowed by CORS; empty: CORS off.
    cors_origins: list[str] = attrs.Factory(list)
    #: Where the CLI reaches the server; default http://host:port.
    url: str = ""
    #: Tokens generated for a request that gives no ``max_tokens``, unless the model sets its
    #: own; 0: no default, up to the context. It bounds a model that never stops (a base
    #: model repeats itself until the context is full); 2048 is far above any ordinary
    #: answer yet ends a runaway within a minute or so at CPU speeds.
    max_tokens: int = attrs.field(default=2048, validator=_non_negative)
    #: How long SIGTERM waits for in-flight requests before cancelling them.
    shutdown_grace: Duration = Duration(3.0)

    @property
    def base_url(self) -> str:
        if self.url:
            return self.url.rstrip("/")
        host = self.host
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


@attrs.frozen(kw_only=True)
class UnloadConfig:
    #: Unload a model this long after the end of its last request; -1: never.
    idle_ttl: DurationOrNever = DurationOrNever(300.0)
    #: Models loaded at once; loading one more evicts the least recently used idle one.
    max_loaded: int = attrs.field(default=1, validator=_positive)
    #: Optional memory budget in bytes (or "8GB") over all loaded models.
    max_memory: Size | None = None


@attrs.frozen(kw_only=True)
class ModelConfig:
    name: str = attrs.field(validator=_non_empty)
    path: str = attrs.field(validator=_non_empty)
    aliases: list[str] = attrs.Factory(list)
    backend: str = "llamacpp"
    #: Load at server start instead of on first request.
    preload: bool = False
    #: Overrides [unload].idle_ttl for this model.
    idle_ttl: DurationOrNever | None = None
    #: Backend options: every other key of the [[models]] table.
    options: Any = attrs.Factory(dict)


@attrs.frozen(kw_only=True)
class Config:
    server: ServerConfig = attrs.Factory(ServerConfig)
    unload: UnloadConfig = attrs.Factory(UnloadConfig)
    models: list[ModelConfig] = attrs.Factory(list)
    #: The file this came from, or None for built-in defaults.
    source: Path | None = None


_MODEL_KEYS = {f.name for f in attrs.fields(ModelConfig)} - {"options"}


def _converter():
    from cattrs.preconf.tomllib import make_converter

    conv = make_converter(forbid_extra_keys=True)
    _strict_scalars(conv)
    conv.register_structure_hook(Duration, lambda v, _t: Duration(parse_duration(v)))
    conv.register_structure_hook(
        DurationOrNever, lambda v, _t: DurationOrNever(parse_duration(v, allow_never=True))
    )
    conv.register_structure_hook(Size, lambda v, _t: Size(parse_size(v)))

    base = conv.get_structure_hook(ModelConfig)

    def structure_model(data, _type):
        if not isinstance(data, Mapping):
            raise ValueError("must be a table")
        known = {k: val for k, val in data.items() if k in _MODEL_KEYS}
        known["options"] = {k: val for k, val in data.items() if k not in _MODEL_KEYS}
        return base(known, _type)

    conv.register_structure_hook(ModelConfig, structure_model)
    return conv


def _strict_scalars(conv) -> None:
    """TOML has real types: refuse "5" for an int and "false" for a bool instead of coercing."""

    def check(kind, names):
        def hook(value, _type):
            if isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)):
                return value
            raise ValueError(f"expected {names}, got {type(value).__name__} {value!r}")

        return hook

    conv.register_structure_hook(str, check(str, "a string"))
    conv.register_structure_hook(bool, check(bool, "true or false"))
    conv.register_structure_hook(int, check(int, "an integer"))
    conv.register_structure_hook(float, lambda v, t: float(check((int, float), "a number")(v, t)))

    def strict_list(type_):
        from cattrs.cols import list_structure_factory

        inner = list_structure_factory(type_, conv)

        def hook(value, _type):
            if not isinstance(value, list):
                raise ValueError(f"expected an array, got {type(value).__name__} {value!r}")
            return inner(value, _type)

        return hook

    conv.register_structure_hook_factory(
        lambda t: getattr(t, "__origin__", None) is list, strict_list
    )


def _format_errors(exc: BaseException, prefix: str = "") -> list[str]:
    """Flatten a cattrs error tree into ``key.path: message`` lines."""
    from cattrs.errors import (
        AttributeValidationNote,
        ClassValidationError,
        ForbiddenExtraKeysError,
        IterableValidationError,
        IterableValidationNote,
    )

    lines: list[str] = []

    def join(path: str, part: str) -> str:
        if part.startswith("["):
            return path + part
        return f"{path}.{part}" if path else part

    def walk(e: BaseException, path: str) -> None:
        if isinstance(e, ForbiddenExtraKeysError):
            for key in sorted(e.extra_fields):
                lines.append(f"{join(path, key)}: unknown key")
            return
        if isinstance(e, (ClassValidationError, IterableValidationError)):
            for sub in e.exceptions:
                notes = getattr(sub, "__notes__", [])
                note = next(
                    (n for n in notes if isinstance(n, (AttributeValidationNote, IterableValidationNote))),
                    None,
                )
                if isinstance(note, IterableValidationNote):
                    walk(sub, f"{path}[{note.index}]")
                elif isinstance(note, AttributeValidationNote):
                    walk(sub, join(path, note.name))
                else:
                    walk(sub, path)
            return
        if isinstance(e, BaseExceptionGroup):
            for sub in e.exceptions:
                walk(sub, path)
            return
        if isinstance(e, FieldError):
            lines.append(f"{join(path, e.field)}: {e.message}")
            return
        if isinstance(e, KeyError):
            lines.append(f"{path}: is required")
            return
        if isinstance(e, (ValueError, TypeError)):
            msg = str(e)
            if "required positional argument" in msg or "missing" in msg and "argument" in msg:
                name = msg.rsplit("'", 2)[-2] if "'" in msg else "?"
                lines.append(f"{join(path, name)}: is required")
                return
            lines.append(f"{path or '(top)'}: {msg}")
            return
        lines.append(f"{path or '(top)'}: {e}")

    walk(exc, prefix)
    return lines


def structure(data: Mapping[str, Any], *, pm=None, source: Path | None = None) -> Config:
    """Build a :class:`Config` from parsed TOML, validating backend options through ``pm``."""
    from cattrs.errors import BaseValidationError

    if not isinstance(data, Mapping):
        raise ConfigError("the config must be a TOML table")
    conv = _converter()
    try:
        config = conv.structure({**data}, Config)
    except BaseValidationError as exc:
        raise ConfigError(_describe(source, _format_errors(exc))) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(_describe(source, [str(exc)])) from None

    problems: list[str] = []
    seen: dict[str, str] = {}
    models = []
    for i, model in enumerate(config.models):
        for label in [model.name, *model.aliases]:
            if label in seen:
                problems.append(f"models[{i}]: the name '{label}' is already used by '{seen[label]}'")
            seen[label] = model.name
        options = model.options
        cls = pm.hook.backend_options(backend=model.backend) if pm is not None else None
        if cls is not None:
            try:
                options = conv.structure(dict(model.options), cls)
            except BaseValidationError as exc:
                problems.extend(_format_errors(exc, f"models[{i}]"))
            except (ValueError, TypeError) as exc:
                problems.append(f"models[{i}]: {exc}")
        models.append(attrs.evolve(model, options=options))
    if problems:
        raise ConfigError(_describe(source, problems))
    return attrs.evolve(config, models=models, source=source)


def structure_options(pm, backend: str, options: Mapping[str, Any], where: str) -> Any:
    """Options for a model registered by a plugin, validated like the config file's."""
    from cattrs.errors import BaseValidationError

    cls = pm.hook.backend_options(backend=backend) if pm is not None else None
    if cls is None:
        return dict(options)
    try:
        return _converter().structure(dict(options), cls)
    except BaseValidationError as exc:
        raise ConfigError(_describe(None, _format_errors(exc, where))) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(_describe(None, [f"{where}: {exc}"])) from None


def _describe(source: Path | None, lines: list[str]) -> str:
    where = f"in {source}" if source else "in the config"
    if len(lines) == 1:
        return f"Bad config {where}: {lines[0]}"
    return f"Bad config {where}:\n" + "\n".join(f"  {line}" for line in lines)


def default_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "hoshikage" / "config.toml"


def resolve_path(path: str | os.PathLike | None) -> tuple[Path, bool]:
    """The config path to use, and whether it was asked for explicitly."""
    if path:
        return Path(path).expanduser(), True
    env = os.environ.get("HOSHIKAGE_CONFIG")
    if env:
        return Path(env).expanduser(), True
    return default_path(), False


def load(path: str | os.PathLike | None = None, *, pm=None) -> Config:
    """Load and validate the config; see the module docstring for where it is looked for."""
    resolved, explicit = resolve_path(path)
    if not resolved.exists():
        if explicit:
            raise ConfigError(f"Config file not found: {resolved}")
        return structure({}, pm=pm, source=None)
    try:
        data = tomllib.loads(resolved.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Bad config in {resolved}: not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read config {resolved}: {exc}") from None
    return structure(data, pm=pm, source=resolved)
