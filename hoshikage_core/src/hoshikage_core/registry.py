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
        computation the pull plan uses); the file's size when the header cannot tell. Its
        ``mmproj`` projector's file counts too."""
        from .fit import need_bytes

        size = need_bytes(self.path, self.options) or self.file_size()
        projector = self.option("mmproj")
        if size is None or not projector:
            return size
        try:  # its projector loads with it
            return size + os.path.getsize(os.path.expanduser(str(projector)))
        except OSError:
            return size

    def modalities(self) -> tuple[str, ...]:
        """What the model takes besides text (``"vision"``, ``"audio"``): its ``mmproj``
        projector's encoders, read from the projector's metadata without loading it."""
        projector = self.option("mmproj")
        if not projector:
            return ()
        from .gguf_info import projector_modalities

        return projector_modalities(os.path.expanduser(str(projector)))

    def context_window(self) -> int | None:
        """The context one request will get once the model is loaded, before it is: its
        ``n_ctx``, or where ``kv_unified`` pools the KV cache of its ``parallel`` slots the
        whole pool, ``n_ctx × parallel`` (what llama.cpp's ``llama_n_ctx_seq`` says after the
        load; an embedding model has one sequence). None when ``n_ctx`` is not set."""
        from .fit import option

        n_ctx = self.option("n_ctx")
        if not isinstance(n_ctx, int | float) or isinstance(n_ctx, bool) or n_ctx <= 0:
            return None
        if self.option("kv_unified") and not self.option("embedding"):
            return int(n_ctx) * max(1, int(option(self.options, "parallel", 4)))
        return int(n_ctx)

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
