"""The API's layout rules, read from the imports of every module (deferred ones too):

* ``kernel`` imports no surface and no server route: only itself;
* a surface (``openai``, ``responses``, ``anthropic``, ``ollama``, ``decisions``, ``rerank``,
  ``llamaserver``) imports the kernel and
  itself, and no other surface, except Responses -> OpenAI's schemas, where the wire types
  really are shared;
* ``server`` (Hoshikage's own routes) imports the kernel only.

``app.py`` composes the surfaces and may import them all."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.imports import modules, outside

PACKAGE = "hoshikage_api"
ROOT = Path(__file__).resolve().parents[2] / "hoshikage_api" / "src" / PACKAGE
SURFACES = ("openai", "responses", "anthropic", "ollama", "decisions", "rerank", "llamaserver")

#: Part of the package -> the modules of the package it may import, besides its own.
ALLOWED = {
    "kernel": (),
    "server": ("kernel",),
    **{surface: ("kernel",) for surface in SURFACES},
}
ALLOWED["responses"] += ("openai.schemas",)


def violations(source: str, module: str) -> list[str]:
    """The imports of ``module`` that break the rules."""
    part = module.split(".")[1]
    if part not in ALLOWED:
        return []
    return outside(source, module, PACKAGE, (part, *ALLOWED[part]))


def test_every_part_of_the_layout_exists_and_surfaces_have_a_router():
    from importlib import import_module

    from litestar import Router

    for part in ALLOWED:
        assert (ROOT / part / "__init__.py").is_file(), part
    for part in (*SURFACES, "server"):
        router = import_module(f"{PACKAGE}.{part}").router()
        assert isinstance(router, Router) and Exception in router.exception_handlers, part


def test_the_app_keeps_a_surfaces_error_shape_under_its_prefix():
    """The unmatched-URL table comes from the routers: Anthropic's and Ollama's prefixes,
    each with its own handler."""
    from hoshikage_api.anthropic import errors as anthropic_errors
    from hoshikage_api.app import unmatched
    from hoshikage_api.ollama import errors as ollama_errors

    from hoshikage_api import anthropic, ollama, openai, responses, server

    routers = [part.router() for part in (anthropic, ollama, responses, openai, server)]
    assert unmatched(routers) == [
        ("/v1/messages", anthropic_errors.handle),
        ("/api", ollama_errors.handle),
    ]


@pytest.mark.parametrize("module, path", list(modules(ROOT, PACKAGE)), ids=lambda v: str(v))
def test_imports_keep_the_layout(module, path):
    assert violations(path.read_text(), module) == []


def test_the_rules_see_relative_and_deferred_imports():
    """The checker itself: a kernel module importing a surface, at the top or inside a
    function, is caught; Responses may import OpenAI's schemas but not its format."""
    kernel = f"{PACKAGE}.kernel.answer"
    assert violations("from ..openai.format import ChatFormat\n", kernel) == [
        f"{PACKAGE}.openai.format.ChatFormat"
    ]
    assert violations("def f():\n    from .. import ollama\n", kernel) == [f"{PACKAGE}.ollama"]
    assert violations("from .generation import run\n", kernel) == []
    responses = f"{PACKAGE}.responses.schemas"
    assert violations("from ..openai.schemas import Seed\n", responses) == []
    assert violations("from ..openai import format\n", responses) == [f"{PACKAGE}.openai.format"]
    server = f"{PACKAGE}.server.admin"
    assert violations("import hoshikage_api.anthropic.errors\n", server) == [
        f"{PACKAGE}.anthropic.errors"
    ]
