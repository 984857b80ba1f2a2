"""The config file: one TOML file, loaded with attrs and cattrs.

Resolution: ``--config PATH``, else ``$HOSHIKAGE_CONFIG``, else
``$XDG_CONFIG_HOME/hoshikage/config.toml`` (``~/.config/hoshikage/config.toml``). An explicit
path that does not exist is an error; a missing default file means "all defaults, no models".

Every error of a file is reported at once, each with its key path, e.g.
``models[1].n_ctx: must be > 0``: cattrs collects them and ``transform_error`` names the paths.
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
    #: Requests allowed to wait for their turn; one more is refused with 503.
    max_queue: int = attrs.field(default=32, validator=_non_negative)
    #: How long a request may be passed over for requests to the loaded model.
    affinity_wait: Duration = Duration(10.0)
    #: Largest request body accepted, in bytes (or "8MB").
    max_body_size: Size = Size(8 * 1024 * 1024)
    #: Origins allowed by CORS, and to make state-changing requests; empty: CORS off.
    cors_origins: list[str] = attrs.Factory(list)
    #: Host names answered when no ``api_key`` is set, besides the bound address,
    #: ``localhost``, this machine's name and IP literals; ``["*"]``: any.
    allowed_hosts: list[str] = attrs.Factory(list)
    #: Where the CLI reaches the server; default http://host:port.
    url: str = ""
    #: Tokens generated for a request that gives no ``max_tokens``, unless the model sets its
    #: own; 0: no default, up to the context. It bounds a model that never stops (a base
    #: model repeats itself until the context is full); 2048 is far above any ordinary
    #: answer yet ends a runaway within a minute or so at CPU speeds.
    max_tokens: int = attrs.field(default=2048, validator=_non_negative)
    #: How long SIGTERM waits for in-flight requests before cancelling them.
    shutdown_grace: Duration = Duration(3.0)
    #: Finished responses of the OpenAI Responses API kept (in SQLite under the user's data
    #: directory) for ``previous_response_id`` and ``GET /v1/responses/{id}``; the least
    #: recently used is evicted beyond it. 0: keep none.
    responses_store: int = attrs.field(default=256, validator=_non_negative)
    #: Bytes the stored responses may take in all (their JSON); the oldest are evicted
    #: beyond it, as beyond ``responses_store`` entries.
    responses_store_bytes: Size = attrs.field(default=Size(64 * 1024 * 1024), validator=_positive)
    #: Largest JSON schema a request may constrain its output with (``response_format``,
    #: ``text.format``, ``output_config``, ``format``, a forced tool's parameters), in bytes.
    max_schema_bytes: Size = attrs.field(default=Size(128 * 1024), validator=_positive)
    #: Most ``enum`` values over a whole schema (OpenAI's own limit is 1000).
    max_schema_enum: int = attrs.field(default=1000, validator=_positive)
    #: Largest grammar (GBNF, as the backend compiles it) a request may lead to, in bytes.
    max_grammar_bytes: Size = attrs.field(default=Size(256 * 1024), validator=_positive)
    #: Most choices one request may ask for: prompts × ``n`` (OpenAI's ``n`` goes to 128).
    max_choices: int = attrs.field(default=128, validator=_positive)
    #: How long one write to a client may wait for it to read before the connection is
    #: closed; the request's slot is released when generation ends regardless.
    send_timeout: Duration = attrs.field(default=Duration(60.0), validator=_positive)
    #: Output held for a slow client beyond what its socket takes, per response.
    send_buffer: Size = attrs.field(default=Size(4 * 1024 * 1024), validator=_positive)
    #: How long a client may take to send a request's headers.
    header_timeout: Duration = attrs.field(default=Duration(10.0), validator=_positive)
    #: How long a client may take to send a request's body, from the end of its headers.
    body_timeout: Duration = attrs.field(default=Duration(60.0), validator=_positive)
    #: Connections (and requests in flight) at once; one more request gets 503.
    max_connections: int = attrs.field(default=512, validator=_positive)

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
class ModelsDir:
    """A folder whose ``*.gguf`` files are served as models (see :mod:`.discovery`).

    Written ``models_dir = "~/models"``, as a list of folders, or as ``[[models_dir]]``
    tables whose other keys are defaults for the models found there."""

    path: str = attrs.field(validator=_non_empty)
    backend: str = "llamacpp"
    #: Overrides [unload].idle_ttl for the models found here.
    idle_ttl: DurationOrNever | None = None
    #: Backend options for the models found here: every other key of the table.
    options: Any = attrs.Factory(dict)


@attrs.frozen(kw_only=True)
class PullConfig:
    """``[pull]``: where ``hoshikage pull`` and the pull routes keep models, and the hubs
    they ask (see :mod:`hoshikage_core.pull`)."""

    #: The store folder; default ``$XDG_DATA_HOME/hoshikage/models``.
    dir: str = ""
    #: The Hugging Face hub or a mirror; default ``HF_ENDPOINT``, else https://huggingface.co.
    hf_endpoint: str = ""
    #: Ollama's registry or a mirror; default https://registry.ollama.ai.
    registry: str = ""
    #: Pulls downloading at once in a server; more wait their turn.
    concurrency: int = attrs.field(default=2, validator=_positive)


@attrs.frozen(kw_only=True)
class Config:
    server: ServerConfig = attrs.Factory(ServerConfig)
    unload: UnloadConfig = attrs.Factory(UnloadConfig)
    pull: PullConfig = attrs.Factory(PullConfig)
    models: list[ModelConfig] = attrs.Factory(list)
    #: Folders whose GGUF files are discovered as models.
    models_dir: list[ModelsDir] = attrs.Factory(list)
    #: The file this came from, or None for built-in defaults.
    source: Path | None = None


_MODEL_KEYS = {f.name for f in attrs.fields(ModelConfig)} - {"options"}
_MODELS_DIR_KEYS = {f.name for f in attrs.fields(ModelsDir)} - {"options"}


class UnknownKey(ValueError):
    """One misspelled or unsupported key; cattrs reports them together, we report each."""


def _converter(pm=None):
    """The config's converter: strict TOML types, unknown keys forbidden, and every error of
    a file collected (see :func:`_validated`). With ``pm``, each model's backend options are
    structured by its backend's class in the same pass, so their errors come with the rest."""
    from cattrs.preconf.tomllib import make_converter

    conv = make_converter(forbid_extra_keys=True, detailed_validation=True)
    _strict_scalars(conv)
    conv.register_structure_hook(Duration, lambda v, _t: Duration(parse_duration(v)))
    conv.register_structure_hook(
        DurationOrNever, lambda v, _t: DurationOrNever(parse_duration(v, allow_never=True))
    )
    conv.register_structure_hook(Size, lambda v, _t: Size(parse_size(v)))
    conv.register_structure_hook_factory(attrs.has, lambda cls: _validated(conv, cls))

    conv.register_structure_hook(ModelConfig, _with_options(conv, pm, ModelConfig, _MODEL_KEYS))
    table_hook = _with_options(conv, pm, ModelsDir, _MODELS_DIR_KEYS)

    def structure_dir(data, _type):
        if isinstance(data, str):  # a bare folder: no defaults
            data = {"path": data}
        elif not isinstance(data, Mapping):
            raise ValueError(
                f"expected a folder path or a table, got {type(data).__name__} {data!r}"
            )
        return table_hook(data, _type)

    conv.register_structure_hook(ModelsDir, structure_dir)
    dirs = conv.get_structure_hook(list[ModelsDir])

    def structure_dirs(data, _type):
        if isinstance(data, str):  # ``models_dir = "path"``: the one-folder form of the list
            data = [data]
        elif not isinstance(data, list):
            raise ValueError(
                f"expected a folder path, an array of them or tables, got {type(data).__name__} {data!r}"
            )
        return dirs(data, _type)

    conv.register_structure_hook_func(lambda t: t == list[ModelsDir], structure_dirs)
    return conv


def _with_options(conv, pm, cls, keys):
    """The structure hook of a table whose keys beyond ``keys`` are backend options: those
    are structured by the backend's class (through ``pm``) in the same pass, so their
    errors come with the rest."""
    from cattrs.errors import ClassValidationError

    base = conv.get_structure_hook(cls)

    def structure(data, _type):
        _expect_table(data)
        known = {k: val for k, val in data.items() if k in keys}
        extra = {k: val for k, val in data.items() if k not in keys}
        errors: list[Exception] = []
        item = options = None
        try:
            item = base(known, _type)
        except ClassValidationError as exc:
            errors.extend(exc.exceptions)
        backend = known.get("backend", "llamacpp")
        options_cls = (
            pm.hook.backend_options(backend=backend)
            if pm is not None and isinstance(backend, str)
            else None
        )
        if options_cls is None:
            options = extra
        else:
            try:
                options = conv.structure(extra, options_cls)
            except ClassValidationError as exc:  # the option keys sit in the same table
                errors.extend(exc.exceptions)
        if errors:
            raise ClassValidationError(f"While structuring {cls.__name__}", errors, cls)
        return attrs.evolve(item, options=options)

    return structure


def _expect_table(data) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a table, got {type(data).__name__} {data!r}")


def _validated(conv, cls):
    """cattrs' structure hook for an attrs class, changed to report every error at once.

    cattrs collects the fields that do not structure and the unknown keys, but then attrs
    runs the validators in ``__init__`` and stops at the first failure (and only when every
    field structured). Here each field's validator also runs on its own structured value,
    so ``n_ctx = -5`` and a misspelled key are reported together. Field validators must
    therefore not look at the instance (they get None); a check across fields belongs in
    ``__attrs_post_init__``, which runs when the fields themselves are fine.
    """
    from cattrs.errors import AttributeValidationNote, ClassValidationError, ForbiddenExtraKeysError
    from cattrs.gen import make_dict_structure_fn

    base = make_dict_structure_fn(
        cls, conv, _cattrs_forbid_extra_keys=True, _cattrs_detailed_validation=True
    )
    fields = attrs.fields(cls)

    def noted(exc: Exception, name: str, type_) -> Exception:
        exc.__notes__ = [
            *getattr(exc, "__notes__", []),
            AttributeValidationNote(f"@ {name}", name, type_),
        ]
        return exc

    def hook(data, _type):
        _expect_table(data)
        try:
            return base(data, _type)
        except ClassValidationError as exc:
            raised = exc
        errors: list[Exception] = []
        bad = set()
        for sub in raised.exceptions:
            note = next(
                (
                    n
                    for n in getattr(sub, "__notes__", [])
                    if isinstance(n, AttributeValidationNote)
                ),
                None,
            )
            if note is not None:
                bad.add(note.name)
                errors.append(sub)
            elif isinstance(sub, ForbiddenExtraKeysError):
                errors.extend(
                    noted(UnknownKey("unknown key"), key, None) for key in sorted(sub.extra_fields)
                )
        for field in fields:
            if field.validator is None or field.alias in bad or field.alias not in data:
                continue
            try:
                field.validator(None, field, conv.structure(data[field.alias], field.type))
            except (ValueError, TypeError) as exc:
                errors.append(noted(exc, field.alias, field.type))
        if not errors:  # only __init__ or __attrs_post_init__ complained
            for sub in raised.exceptions:
                name = getattr(sub, "field", None)
                errors.append(noted(sub, name, None) if isinstance(name, str) else sub)
        raise ClassValidationError(f"While structuring {cls.__name__}", errors, cls)

    return hook


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


def _message(exc: BaseException, _type) -> str:
    """One error's text for ``cattrs.transform_error``: the messages our hooks and validators
    write are already meant for the user; only cattrs' missing-key error needs words."""
    if isinstance(exc, FieldError):
        return exc.message
    if isinstance(exc, KeyError):
        return "is required"
    return str(exc)


def error_lines(exc: BaseException, prefix: str = "") -> list[str]:
    """``key.path: message`` for every error under a cattrs exception, through cattrs' own
    ``transform_error`` (which writes ``message @ $.key.path``)."""
    from cattrs import transform_error

    lines = []
    for line in transform_error(exc, "$", _message):
        message, _, path = line.rpartition(" @ $")
        lines.append(f"{(prefix + path).lstrip('.') or '(top)'}: {message}")
    return lines


def _duplicate_names(data: Mapping[str, Any]) -> list[str]:
    """Names and aliases used twice, read from the raw tables so they are reported with
    every other error (a model that does not structure still has its names checked)."""
    problems: list[str] = []
    models = data.get("models")
    if not isinstance(models, list):
        return problems
    seen: dict[str, str] = {}
    for i, model in enumerate(models):
        if not isinstance(model, Mapping) or not isinstance(model.get("name"), str):
            continue
        aliases = model.get("aliases", [])
        labels = (
            [model["name"], *(a for a in aliases if isinstance(a, str))]
            if isinstance(aliases, list)
            else [model["name"]]
        )
        for label in labels:
            if label in seen:
                problems.append(
                    f"models[{i}]: the name '{label}' is already used by '{seen[label]}'"
                )
            seen[label] = model["name"]
    return problems


def structure(data: Mapping[str, Any], *, pm=None, source: Path | None = None) -> Config:
    """Build a :class:`Config` from parsed TOML, validating backend options through ``pm``.
    Every error of the file is reported at once, each with its key path."""
    from cattrs.errors import BaseValidationError

    if not isinstance(data, Mapping):
        raise ConfigError("the config must be a TOML table")
    problems: list[str] = []
    config = None
    try:
        config = _converter(pm).structure({**data}, Config)
    except BaseValidationError as exc:
        problems.extend(error_lines(exc))
    except (ValueError, TypeError) as exc:
        problems.append(str(exc))
    problems.extend(_duplicate_names(data))
    if problems:
        raise ConfigError(describe(source, problems), problems)
    return attrs.evolve(config, source=source)


def structure_options(pm, backend: str, options: Mapping[str, Any], where: str) -> Any:
    """Options for a model registered by a plugin, validated like the config file's."""
    from cattrs.errors import BaseValidationError

    cls = pm.hook.backend_options(backend=backend) if pm is not None else None
    if cls is None:
        return dict(options)
    try:
        return _converter(pm).structure(dict(options), cls)
    except BaseValidationError as exc:
        problems = error_lines(exc, where)
    except (ValueError, TypeError) as exc:
        problems = [f"{where}: {exc}"]
    raise ConfigError(describe(None, problems), problems)


def describe(source: Path | None, lines: list[str]) -> str:
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
