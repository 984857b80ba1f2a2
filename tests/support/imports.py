"""A package's import graph, read with :mod:`ast` from its source (deferred imports inside
functions too): for the layout tests of the API and the backend."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path


def imports(source: str, module: str) -> set[str]:
    """Every name imported by ``source`` (the module ``module``), absolute, as
    ``package.module.name`` (``from .x import y`` in ``a.b`` is ``a.x.y``). A package's
    ``__init__`` is passed as ``a.b.__init__``."""
    package = module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def outside(source: str, module: str, package: str, allowed: tuple[str, ...]) -> list[str]:
    """The names of ``package`` that ``module`` imports from outside ``allowed`` (dotted
    paths under the package: a part and everything in it), sorted."""
    bad = []
    for name in sorted(imports(source, module)):
        if not name.startswith(package + "."):
            continue
        inner = name[len(package) + 1 :]
        if not any(inner == ok or inner.startswith(ok + ".") for ok in allowed):
            bad.append(name)
    return bad


def modules(root: Path, package: str) -> Iterator[tuple[str, Path]]:
    """``(module, path)`` for every module under ``root`` (the folder of ``package``); a
    package's ``__init__`` as ``a.b.__init__``."""
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        yield ".".join((package, *parts)), path


def graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (a name imported from a module counts
    as that module; a package as its ``__init__``)."""
    found = dict(modules(root, package))
    names = set(found)
    edges = {}
    for module, path in found.items():
        targets = set()
        for name in imports(path.read_text(), module):
            if not name.startswith(package + "."):
                continue
            target = _module_of(name, names)
            if target is not None and target != module:
                targets.add(target)
        edges[module] = targets
    return edges


def unresolved(root: Path, package: str) -> list[str]:
    """Imports of ``package``'s own names that point at no module of it (an old path, a
    typo), each as ``module -> name``: a deferred one fails only when it runs."""
    found = dict(modules(root, package))
    names = set(found) | {m.removesuffix(".__init__") for m in found}
    bad = []
    for module, path in found.items():
        for name in sorted(imports(path.read_text(), module)):
            if name.startswith(package + ".") and name not in names:
                if name.rsplit(".", 1)[0] not in names:
                    bad.append(f"{module} -> {name}")
    return bad


def _module_of(name: str, names: set[str]) -> str | None:
    """The module ``name`` (``pkg.mod`` or ``pkg.mod.attr``) lives in."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in names:
            return candidate
        if f"{candidate}.__init__" in names:
            return f"{candidate}.__init__"
    return None


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: each strongly connected set of more than one module (or a module
    importing itself), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in edges.get(v, ()):
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def borrowed_privates(source: str, module: str, package: str) -> list[str]:
    """Private names ``module`` takes from another module: ``from x import _name`` of a
    module of ``package``, and ``obj._name`` where ``obj`` is not ``self`` or ``cls`` and
    ``_name`` is not the module's own (defined, assigned to ``self`` or listed in a
    ``__slots__`` of it); a dunder is not private. Each as ``line: text``, in order."""
    tree = ast.parse(source)
    own = _own_privates(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for name in imports_of(node, module):
                leaf = name.rsplit(".", 1)[-1]
                if name.startswith(package + ".") and _private(leaf):
                    found.append((node.lineno, f"import {name}"))
        elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            found.append((node.lineno, ast.unparse(node)))
    return [f"{line}: {text}" for line, text in sorted(found)]


def _own_privates(tree: ast.AST) -> set[str]:
    """The private names a module defines for its own objects."""
    own = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            own.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                own.add(node.attr)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    own.add(target.id)
                    if target.id == "__slots__" and isinstance(node.value, ast.Tuple | ast.List):
                        own.update(e.value for e in node.value.elts if isinstance(e, ast.Constant))
    return {name for name in own if _private(name)}


def imports_of(node: ast.ImportFrom, module: str) -> list[str]:
    """The absolute names one ``from … import …`` statement of ``module`` imports."""
    return sorted(imports(ast.unparse(node), module))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))
