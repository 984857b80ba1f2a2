"""The backend's layout rules, read from the imports of every module (deferred ones too):

* ``llama`` (next to llama.cpp) and ``grammar`` (GBNF) import nothing else of the package;
* ``dialects`` (what a model's text means) imports ``grammar``;
* ``engine`` imports ``llama`` and ``grammar``, never ``dialects``, ``frontend`` or
  ``options``: it calls a choice's output and its speculation through ``engine.protocols``;
  within it, ``core`` knows speculation (the ``engine.spec`` room: the proposers, the draft
  lengths, the speculator) only by that protocol, and ``scoring`` and ``spec`` use the
  slot pool and the batch, never ``core``;
* ``frontend`` imports ``dialects``, ``grammar`` and ``engine.protocols``;
* ``lifecycle`` (the model, its process, its load) imports any of them, ``options`` and
  ``demo`` (the embedded model the doctor's self-test loads);
  the plugin, ``options``, ``demo`` and the ``moved`` shim sit at the top;

and, for the whole package: no import cycle, and no private name taken from another
module, except llama-cpp-python's own internals where the backend must reach them
(:data:`FOREIGN_PRIVATES`)."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tests.support.imports import borrowed_privates, cycles, graph, modules, outside, unresolved

PACKAGE = "hoshikage_llamacpp"
ROOT = Path(__file__).resolve().parents[2] / "hoshikage_llamacpp" / "src" / PACKAGE

#: Room -> what of the package it may import besides itself.
ALLOWED = {
    "llama": (),
    "grammar": (),
    "dialects": ("grammar",),
    "engine": ("llama", "grammar"),
    "frontend": ("dialects", "grammar", "engine.protocols"),
    "lifecycle": ("llama", "grammar", "dialects", "engine", "frontend", "options", "demo"),
}
#: Module (or package: everything in it) -> what of its own room it may not import: the
#: step loop knows speculation only through ``engine.protocols.Speculator``; scoring,
#: speculation, the slots and the batch never know the step loop.
FORBIDDEN = {
    "engine.core": ("engine.spec",),
    **{
        module: ("engine.core",)
        for module in ("engine.scoring", "engine.spec", "engine.slots", "engine.batch")
    },
}


def forbidden(inner: str) -> tuple[str, ...]:
    """What ``inner`` (a module's name under the package) may not import of its room."""
    return tuple(
        name
        for key, names in FORBIDDEN.items()
        if inner == key or inner.startswith(key + ".")
        for name in names
    )


#: Private names of llama-cpp-python (and the standard library) the backend uses, where it
#: uses them: ``Llama``'s context, model and batch for the embedding and rerank paths and
#: the load, the shared library's name for the GIL-holding binding, the grammar converter's
#: rules and resolved refs, ``os._exit`` in the model process.
FOREIGN_PRIVATES = {
    "llama.native": {"raw._lib._name", "raw._lib"},
    "grammar.build": {"self.converter._rules", "b.converter._refs"},
    "lifecycle.loader": {"loaded.llama._ctx", "llama._model"},
    "lifecycle.rerank": {"llama._ctx", "llama._batch", "llama._model"},
    "lifecycle.child": {"os._exit"},
}


def room(module: str) -> str | None:
    inner = module[len(PACKAGE) + 1 :]
    part = inner.split(".")[0]
    return part if part in ALLOWED else None


def violations(source: str, module: str) -> list[str]:
    """The imports of ``module`` that break the rules."""
    part = room(module)
    if part is None:
        return []
    bad = outside(source, module, PACKAGE, (part, *ALLOWED[part]))
    banned = forbidden(module[len(PACKAGE) + 1 :])
    if banned:
        everything = outside(source, module, PACKAGE, ())
        elsewhere = set(outside(source, module, PACKAGE, banned))
        bad += [name for name in everything if name not in elsewhere]
    return sorted(bad)


MODULES = list(modules(ROOT, PACKAGE))


def test_every_room_exists():
    for part in ALLOWED:
        assert (ROOT / part / "__init__.py").is_file(), part


@pytest.mark.parametrize("module, path", MODULES, ids=lambda v: str(v))
def test_imports_keep_the_layout(module, path):
    assert violations(path.read_text(), module) == []


def test_every_import_of_the_package_points_at_a_module_of_it():
    """Deferred imports too, which fail only when they run; an old path does not count."""
    assert unresolved(ROOT, PACKAGE) == []


def test_the_import_graph_has_no_cycle():
    assert cycles(graph(ROOT, PACKAGE)) == []


@pytest.mark.parametrize("module, path", MODULES, ids=lambda v: str(v))
def test_no_private_name_of_another_module(module, path):
    found = borrowed_privates(path.read_text(), module, PACKAGE)
    allowed = FOREIGN_PRIVATES.get(module[len(PACKAGE) + 1 :], set())
    assert [f for f in found if f.split(": ", 1)[1] not in allowed] == []


def test_the_rules_see_relative_and_deferred_imports():
    """The checker itself: an engine module importing a parser, at the top or inside a
    function, is caught; scoring may use the slots but not the core."""
    core = f"{PACKAGE}.engine.core"
    assert violations("from ..dialects.tools import calls\n", core) == [
        f"{PACKAGE}.dialects.tools.calls"
    ]
    assert violations("def f():\n    from .. import options\n", core) == [f"{PACKAGE}.options"]
    assert violations("from ..llama.native import lib\n", core) == []
    scoring = f"{PACKAGE}.engine.scoring"
    assert violations("from .slots import SlotPool\n", scoring) == []
    assert violations("from .core import Engine\n", scoring) == [f"{PACKAGE}.engine.core.Engine"]
    assert violations("from .protocols import Speculator\n", core) == []
    assert violations("from .spec.ngram import NgramDrafter\n", core) == [
        f"{PACKAGE}.engine.spec.ngram.NgramDrafter"
    ]
    proposer = f"{PACKAGE}.engine.spec.ngram"
    assert violations("from ..slots import SlotPool\n", proposer) == []
    assert violations("from ..core import Engine\n", proposer) == [f"{PACKAGE}.engine.core.Engine"]
    planning = f"{PACKAGE}.frontend.planning"
    assert violations("from ..engine.protocols import Output\n", planning) == []
    assert violations("from ..engine.sampling import X\n", planning) == [
        f"{PACKAGE}.engine.sampling.X"
    ]


def test_the_checks_see_unresolved_imports(tmp_path):
    package = tmp_path / "pkg"
    (package / "room").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "room" / "__init__.py").write_text("")
    (package / "room" / "a.py").write_text("def f():\n    from .gone import g\n")
    (package / "b.py").write_text("from .room.a import f\nfrom .room import a\n")
    assert unresolved(package, "pkg") == ["pkg.room.a -> pkg.room.gone.g"]


def test_the_checks_see_cycles_and_borrowed_privates():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    source = (
        "from .cache import _Entry\ndef f(cache, self):\n    return cache._entries, self._own\n"
    )
    assert borrowed_privates(source, f"{PACKAGE}.engine.core", PACKAGE) == [
        f"1: import {PACKAGE}.engine.cache._Entry",
        "3: cache._entries",
    ]
    # A private attribute of a class of the same module is the module's own.
    source = "class A:\n    __slots__ = ('_n',)\ndef f(a):\n    return a._n\n"
    assert borrowed_privates(source, f"{PACKAGE}.engine.x", PACKAGE) == []


def test_old_paths_still_import_with_a_warning():
    """One release of the old module paths: the same module, and a DeprecationWarning."""
    import importlib

    from hoshikage_llamacpp.dialects.tools import calls
    from hoshikage_llamacpp.engine import core

    sys.modules.pop(f"{PACKAGE}.tool_calls", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module(f"{PACKAGE}.tool_calls")
        from hoshikage_llamacpp.engine import Engine
    assert old is calls and Engine is core.Engine
    assert calls.__spec__.name == f"{PACKAGE}.dialects.tools.calls"
    messages = [str(w.message) for w in caught if w.category is DeprecationWarning]
    assert any("tool_calls moved to" in m for m in messages), messages
    assert any("engine.Engine moved to" in m for m in messages), messages


def test_the_model_process_still_runs_from_its_old_path():
    """``python -m hoshikage_llamacpp.child`` runs the model process's main (here it stops
    at its missing arguments), with a DeprecationWarning naming the new path."""
    done = subprocess.run(
        [sys.executable, "-W", "always::DeprecationWarning", "-m", f"{PACKAGE}.child"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert f"{PACKAGE}.child moved to {PACKAGE}.lifecycle.child" in done.stderr
    assert "lifecycle/child.py" in done.stderr and "in main" in done.stderr, done.stderr


def test_the_model_is_what_planning_reads(tiny_model_path):
    """planning.plan states what it reads of a model (PlanningModel); the loaded model
    gives all of it."""
    from hoshikage_llamacpp.frontend.planning import PlanningModel
    from hoshikage_llamacpp.lifecycle.model import LlamaCppModel
    from hoshikage_llamacpp.options import LlamaOptions

    model = LlamaCppModel.load("tiny", str(tiny_model_path), LlamaOptions(n_ctx=256))
    try:
        assert isinstance(model, PlanningModel)
        assert not isinstance(object(), PlanningModel)
    finally:
        model.close()
