"""The old import paths of modules that moved into the package's rooms, kept for one release:
``import hoshikage_llamacpp.sampling`` gives ``hoshikage_llamacpp.engine.sampling`` itself
(the same module object), with a :class:`DeprecationWarning` naming the new path, and
``python -m hoshikage_llamacpp.child`` runs the model process. No file stands at an old
path: the core's finder (:mod:`hoshikage_core.moved`) answers for them, installed by the
package's ``__init__``. ``hoshikage_llamacpp.engine``, now the engine's package, gives the
old module's names from ``engine.core`` (see ``engine/__init__.py``).
"""

from __future__ import annotations

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
    "speculative": "engine.spec",
    "engine.speculative": "engine.spec",
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


def install() -> None:
    from hoshikage_core.moved import install

    install(PACKAGE, MOVED)
