"""From a :class:`GenerationRequest` to what the engine runs: the prompt's tokens, the stop
strings, the grammar, the token budget and one sampler chain per choice.

Everything a request can be refused for is found here, before anything reaches the engine,
so the caller gets the error instead of a chunk.
"""

from __future__ import annotations

import attrs
from hoshikage_core.errors import ContextLengthExceeded, InvalidRequest
from hoshikage_core.protocol import GenerationRequest

from .chat import forced_tool_schema, tool_names
from .sampling import SamplerChain, grammar_for


@attrs.define(kw_only=True)
class Plan:
    request: GenerationRequest
    tokens: list[int]
    stops: tuple[str, ...]
    grammar: str | None
    #: Most tokens any choice may generate: ``max_tokens``, and what the context leaves.
    budget: int
    tool_names: tuple[str, ...] | list[str]
    #: Choice ``j`` samples with ``seed + j``; None: a fresh random seed per choice.
    seed: int | None

    def sampler(self, vocab, n_vocab: int, index: int) -> SamplerChain:
        seed = None if self.seed is None else self.seed + index
        return SamplerChain(vocab, n_vocab, self.request, seed, self.grammar)


def plan(model, request: GenerationRequest) -> Plan:
    """Render, tokenize and check ``request`` for ``model`` (a :class:`LlamaCppModel`)."""
    tools = request.tools if request.tool_choice != "none" else None
    names = tool_names(tools)
    forced = None
    if tools and (request.tool_choice == "required" or isinstance(request.tool_choice, dict)):
        forced = forced_tool_schema(tools, request.tool_choice)
    if request.is_chat:
        prompt = model.chat.render(request.messages, tools)
        stops = (*request.stop, *model.chat.stops)
    elif request.prompt is not None:
        prompt = request.prompt
        stops = tuple(request.stop)
    else:
        raise InvalidRequest("A request needs messages or a prompt", "messages")
    # The field that holds the prompt, in the core's names; each API surface renames it to
    # its own field where that differs (Responses' ``input``).
    field = "messages" if request.is_chat else "prompt"
    if request.suffix is not None and not request.is_chat:
        from .fim import fim_tokens

        tokens = fim_tokens(model, prompt, request.suffix, request.fim_files)
    else:
        tokens = model.prompt_tokens(prompt)
    if not tokens:
        raise InvalidRequest("The prompt is empty", field)
    if len(tokens) >= model.n_ctx:
        raise ContextLengthExceeded(len(tokens), model.n_ctx, param=field)
    grammar = grammar_for(request.response_format, forced, request.max_grammar_bytes)
    budget = model.n_ctx - len(tokens)
    # Every surface comes through here, so the model's default (or the server's) bounds a
    # request without max_tokens on all of them; a request may ask for more, up to the context.
    limit = request.max_tokens if request.max_tokens is not None else model.default_max_tokens
    if limit is not None:
        budget = min(budget, max(limit, 0))
    seed = request.seed if request.seed is not None else model.options.seed
    return Plan(
        request=request,
        tokens=tokens,
        stops=stops,
        grammar=grammar,
        budget=budget,
        tool_names=names,
        seed=seed,
    )
