"""The model registry: every model the server can serve, by name and alias.

Models come from the config file's ``[[models]]`` first, then from its ``models_dir``
folders (:mod:`.discovery`), then from ``register_models`` hook implementations.
Asking for an unknown name raises :class:`~hoshikage_core.errors.ModelNotFound`, which lists
the known names: there is never a silent fallback to another model.
"""

from __future__ import annotations

import os
from typing import Any

import attrs

from .errors import ConfigError, ModelNotFound


@attrs.frozen(kw_only=True)
class ModelEntry:
    name: str
    path: str
    aliases: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    #: Which backend plugin loads it (``create_backend`` implementations check this).
    backend: str = "llamacpp"
    #: Backend options: an instance of the class from ``backend_options``, or a dict.
    options: Any = attrs.Factory(dict)
    #: Load at server start instead of on first request.
    preload: bool = False
    #: Overrides the config's idle_ttl (seconds, -1 never).
    idle_ttl: float | None = None
    #: "config", or the name of the plugin that registered it.
    source: str = "config"
    #: For a file its backend writes when the model is first loaded (the embedded demo
    #: model is assembled then, not at registration, so listing models writes nothing):
    #: what happens, e.g. "assembled on first load". While the file is missing, ``config
    #: check``, ``models`` and ``doctor`` say this instead of "file not found".
    on_first_load: str = ""

    def awaiting_first_load(self) -> bool:
        """The file is missing only because its first load has not made it yet."""
        return bool(self.on_first_load) and not os.path.exists(self.path)

    def file_size(self) -> int | None:
        try:
            return os.path.getsize(self.path)
        except OSError:
            return None

    def expected_bytes(self) -> int | None:
        """What it will take once loaded, before it is: the weights plus the KV cache at its
        ``n_ctx`` and ``parallel`` from the GGUF header (:mod:`hoshikage_core.fit`, the
        computation the pull plan uses); the file's size when the header cannot tell."""
        from .fit import need_bytes

        return need_bytes(self.path, self.options) or self.file_size()

    def option(self, key: str, default: Any = None) -> Any:
        if isinstance(self.options, dict):
            return self.options.get(key, default)
        return getattr(self.options, key, default)


class ModelRegistry:
    def __init__(self) -> None:
        self._entries: dict[str, ModelEntry] = {}
        self._lookup: dict[str, str] = {}
        #: What discovery did that the user should know (renamed or overridden files).
        self.notes: list[str] = []

    def register(self, entry: ModelEntry) -> None:
        if not isinstance(entry, ModelEntry):
            raise TypeError(f"register() takes a ModelEntry, not {type(entry).__name__}")
        for label in (entry.name, *entry.aliases):
            if label in self._lookup:
                owner = self._lookup[label]
                raise ConfigError(
                    f"Model name '{label}' from {entry.source} is already used by '{owner}'"
                    f" from {self._entries[owner].source}"
                )
        self._entries[entry.name] = entry
        for label in (entry.name, *entry.aliases):
            self._lookup[label] = entry.name

    def resolve(self, name: str) -> ModelEntry:
        """The entry for a name or alias; ModelNotFound (listing known names) otherwise."""
        canonical = self._lookup.get(name)
        if canonical is None:
            raise ModelNotFound(name, list(self._lookup))
        return self._entries[canonical]

    def __contains__(self, name: str) -> bool:
        return name in self._lookup

    def __iter__(self):
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        """Every name and alias."""
        return list(self._lookup)
