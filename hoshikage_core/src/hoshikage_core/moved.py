"""Old import paths of modules that moved, kept for one release: the old name gives the
module at its new one (the same module object), with a :class:`DeprecationWarning` naming
the new path. No file stands at an old path (so git's rename detection follows the move):
an :class:`OldPaths` finder on ``sys.meta_path`` answers for them, and ``python -m`` an old
path runs the module at the new one. The core's own moves are in :data:`MOVED`; a plugin
package installs a finder of its own (``hoshikage_llamacpp.moved``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: The core's old modules -> where they are now.
MOVED: dict[str, str] = {
    "commands": "cli.commands",
    "server_commands": "cli.server_commands",
    "doctor_command": "cli.doctor_command",
    "client": "cli.client",
}


def warn(old: str, new: str) -> None:
    warnings.warn(
        f"{old} moved to {new}; the old path goes in the next release",
        DeprecationWarning,
        stacklevel=3,
    )


class OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds a moved module of ``package`` by its old name (``moved``: old -> new, both
    under the package) and loads it as the module at its new one."""

    def __init__(self, package: str, moved: dict[str, str]):
        self.package = package
        self.moved = moved

    def find_spec(self, fullname, path=None, target=None):
        new = self.new_name(fullname)
        return None if new is None else importlib.util.spec_from_loader(fullname, self)

    def new_name(self, fullname: str) -> str | None:
        if not fullname.startswith(self.package + "."):
            return None
        moved = self.moved.get(fullname[len(self.package) + 1 :])
        return None if moved is None else f"{self.package}.{moved}"

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
        """For ``python -m`` an old path: code that runs the module at its new path as
        ``__main__``."""
        new = self.new_name(fullname)
        warn(fullname, new)
        source = f"import runpy\nrunpy.run_module({new!r}, run_name='__main__', alter_sys=True)\n"
        return compile(source, f"<{fullname}: moved to {new}>", "exec")


def install(package: str, moved: dict[str, str]) -> None:
    """Answer for ``package``'s old module paths (once per package)."""
    for finder in sys.meta_path:
        if isinstance(finder, OldPaths) and finder.package == package:
            return
    sys.meta_path.append(OldPaths(package, moved))
