"""The old import paths of modules that moved into the package's rooms, kept for one release:
``import hoshikage_llamacpp.sampling`` gives ``hoshikage_llamacpp.engine.sampling`` itself
(the same module object), with a :class:`DeprecationWarning` naming the new path. No file
stands at an old path: a finder on ``sys.meta_path`` (:func:`install`, called by the
package's ``__init__``) answers for them. ``hoshikage_llamacpp.engine``, now the engine's
package, gives the old module's names from ``engine.core`` (see ``engine/__init__.py``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

PACKAGE = "hoshikage_llamacpp"

#: Old module (under the package) -> where it is now.
MOVED = {
    "native": "llama.native",
    "rpc": "llama.rpc",
    "logging_bridge": "llama.logging_bridge",
    "pieces": "llama.pieces",
    "logits": "llama.logits",
    "gbnf_check": "grammar.gbnf_check",
    "templating": "dialects.templating",
    "chat": "dialects.chat",
    "chat_formats": "dialects.chat_formats",
    "reasoning": "dialects.reasoning",
    "text_stream": "dialects.text_stream",
    "fim": "dialects.fim",
    "tool_format": "dialects.tools.base",
    "tool_calls": "dialects.tools.calls",
    "tool_stream": "dialects.tools.stream",
    "tool_grammar": "dialects.tools.grammar",
    "tool_families": "dialects.tools.families",
    "batch": "engine.batch",
    "slots": "engine.slots",
    "prefix": "engine.prefix",
    "decoding": "engine.decoding",
    "engine_protocols": "engine.protocols",
    "sampling": "engine.sampling",
    "scoring": "engine.scoring",
    "speculative": "engine.speculative",
    "prompt_cache": "engine.cache.prompt",
    "disk_cache": "engine.cache.disk",
    "planning": "frontend.planning",
    "output": "frontend.output",
    "model": "lifecycle.model",
    "loader": "lifecycle.loader",
    "memory": "lifecycle.memory",
    "isolation": "lifecycle.isolation",
    "child": "lifecycle.child",
    "doctor": "lifecycle.doctor",
    "rerank": "lifecycle.rerank",
    "safe_mode": "lifecycle.safe_mode",
}


def warn(old: str, new: str) -> None:
    warnings.warn(
        f"{old} moved to {new}; the old path goes in the next release",
        DeprecationWarning,
        stacklevel=3,
    )


class OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds a moved module by its old name and loads it as the module at its new one."""

    def find_spec(self, fullname, path=None, target=None):
        new = self.new_name(fullname)
        return None if new is None else importlib.util.spec_from_loader(fullname, self)

    @staticmethod
    def new_name(fullname: str) -> str | None:
        if not fullname.startswith(PACKAGE + "."):
            return None
        moved = MOVED.get(fullname[len(PACKAGE) + 1 :])
        return None if moved is None else f"{PACKAGE}.{moved}"

    def create_module(self, spec):
        new = self.new_name(spec.name)
        warn(spec.name, new)
        module = importlib.import_module(new)
        # importlib sets the alias's spec on the module it is given: keep its own to put back.
        self.real_spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self.real_spec

    def get_code(self, fullname: str):
        """For ``python -m`` an old path (``hoshikage_llamacpp.child``): code that runs the
        module at its new path as ``__main__``."""
        new = self.new_name(fullname)
        warn(fullname, new)
        source = f"import runpy\nrunpy.run_module({new!r}, run_name='__main__', alter_sys=True)\n"
        return compile(source, f"<{fullname}: moved to {new}>", "exec")


def install() -> None:
    if not any(isinstance(finder, OldPaths) for finder in sys.meta_path):
        sys.meta_path.append(OldPaths())
