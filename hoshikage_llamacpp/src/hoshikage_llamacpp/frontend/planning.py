"""From a :class:`GenerationRequest` to what the engine runs: the prompt's tokens, the stop
strings, the grammar, the token budget and one sampler chain per choice.

Everything a request can be refused for is found here, before anything reaches the engine,
so the caller gets the error instead of a chunk.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import attrs
from hoshikage_core.errors import ContextLengthExceeded, InvalidRequest
from hoshikage_core.protocol import GenerationRequest

from ..dialects.chat import ChatRenderer, forced_tools, tool_names
from ..dialects.reasoning import ReasoningForm, opens_in_prompt
from ..dialects.tools.base import ToolFormat
from ..dialects.tools.families import FORMATS
from ..dialects.tools.grammar import Think, call_grammar
from ..grammar.schema import check_grammar_size, grammar_for
from .truncation import truncated


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
    #: With a grammar: the text that starts it (a lazy grammar); None: from the first token.
    grammar_trigger: str | None = None
    #: The family's tool-call form, whose parser reads calls out of the answer.
    tool_format: ToolFormat = FORMATS["hermes"]
    #: The model's reasoning form, when its answers are split into reasoning and answer.
    reasoning: ReasoningForm | None = None
    #: The prompt leaves the think block open: the answer starts inside the reasoning.
    reasoning_open: bool = False
    #: False: thinking was turned off, reasoning text is never shown.
    show_reasoning: bool = True
    #: Most reasoning tokens before :attr:`reasoning_end` is inserted; None: no limit.
    reasoning_budget: int | None = None
    #: The tokens that close the think block (the form's end marker, then a blank line).
    reasoning_end: tuple[int, ...] = ()
    #: The prompt's images and audio (:class:`.multimodal.MediaSpan`), in order: their
    #: tokens in :attr:`tokens` are placeholders.
    media: list = attrs.Factory(list)

    def span_at(self, index: int):
        """The media span that holds prompt token ``index``."""
        for span in self.media:
            if span.start <= index < span.end:
                return span
        raise LookupError(index)

    @property
    def shifted(self) -> bool:
        """Whether some media span takes fewer positions than tokens (M-RoPE)."""
        return any(span.n_pos != span.end - span.start for span in self.media)

    def position(self, index: int) -> int:
        """The position of prompt (or answer) token ``index``: the index, less what the
        M-RoPE spans before it save (never called inside a span)."""
        return index - sum(
            span.end - span.start - span.n_pos for span in self.media if span.end <= index
        )

    def media_start(self, common: int) -> int:
        """``common`` moved back to the start of the media span it would cut in two."""
        for span in self.media:
            if span.start < common < span.end:
                return span.start
        return common

    def output(self, job, piece, logprobs):
        """One choice's :class:`~.output.Output` (the engine's
        :class:`~..engine.protocols.Planned` protocol)."""
        from .output import Output

        return Output(job, self, piece, logprobs)


@runtime_checkable
class PlanningModel(Protocol):
    """What :func:`plan` reads of a model (:class:`~..lifecycle.model.LlamaCppModel` is
    one): its name and context, its chat template and the forms it writes, its options'
    ``seed`` and ``reasoning_budget``, and its tokenizer."""

    name: str
    n_ctx: int
    #: Token budget of a request that gives none; None: up to the context.
    default_max_tokens: int | None
    #: The chat renderer (None: loaded for embeddings).
    chat: ChatRenderer | None
    reasoning: ReasoningForm | None
    tool_format: ToolFormat
    options: Any
    #: The ``llama_vocab`` pointer (fill-in-the-middle reads its FIM tokens).
    vocab: Any

    def prompt_tokens(self, text: str) -> list[int]: ...

    def tokenize(self, text: str) -> list[int]: ...

    def special_tokens(self, text: str) -> list[int]: ...

    def bos_tokens(self) -> list[int]: ...


def plan(model: PlanningModel, request: GenerationRequest) -> Plan:
    """Render, tokenize and check ``request`` for ``model``."""
    tools = request.tools if request.tool_choice != "none" else None
    names = tool_names(tools)
    forced = None  # the tools one of which must be called
    lazy = False
    if tools and (request.tool_choice == "required" or isinstance(request.tool_choice, dict)):
        forced = forced_tools(tools, request.tool_choice)
    elif tools and request.grammar is None and (strict := strict_tools(tools)):
        # Calls of strict tools follow their schema from the call marker on (a lazy grammar):
        # the free text before a call costs nothing.
        forced, lazy = strict, True
    form = model.reasoning if request.is_chat else None
    if request.is_chat:
        kwargs = (
            thinking_kwargs(model.chat.template.source, request, model.chat.kwargs) if form else {}
        )
        kwargs = {**kwargs, **(request.template_kwargs or {})}
        prompt = model.chat.render(request.messages, tools, kwargs)
        stops = (*request.stop, *model.chat.stops)
    elif request.prompt is not None:
        prompt = request.prompt
        stops = tuple(request.stop)
    elif request.prompt_token_ids is not None:
        prompt = ""  # read only for a chat's reasoning, which a completion has not
        stops = tuple(request.stop)
    else:
        raise InvalidRequest("A request needs messages or a prompt", "messages")
    # The field that holds the prompt, in the core's names; each API surface renames it to
    # its own field where that differs (Responses' ``input``).
    field = "messages" if request.is_chat else "prompt"
    spans: list = []
    if request.prefix_token_ids is not None and (
        request.media or request.suffix is not None or request.prompt_token_ids is not None
    ):
        raise InvalidRequest(
            "Token ids before the prompt (context) take no images, audio, suffix or token-id"
            " prompt",
            "context",
        )
    if request.prompt_token_ids is not None:
        if request.suffix is not None or request.media:
            raise InvalidRequest(
                "A prompt of token ids takes no suffix, images or audio: send the text", field
            )
        tokens = _vocabulary_ids(model, request.prompt_token_ids, field)
    elif request.media:
        if request.suffix is not None:
            raise InvalidRequest("Fill-in-the-middle takes no images or audio", "suffix")
        tokens, spans = model.media_prompt_tokens(prompt, request.media, field)
    elif request.suffix is not None and not request.is_chat:
        from ..dialects.fim import fim_tokens

        tokens = fim_tokens(model, prompt, request.suffix, request.fim_files)
    else:
        tokens = model.prompt_tokens(prompt)
        if request.truncate and request.is_chat and len(tokens) >= model.n_ctx:
            prompt, tokens = _fitted(model, request, tools, kwargs, prompt, tokens)
    if request.prefix_token_ids is not None:
        prefix = _vocabulary_ids(model, request.prefix_token_ids, "context", " of the context")
        bos = model.bos_tokens()
        if prefix and bos and tokens[: len(bos)] == bos:
            tokens = tokens[len(bos) :]  # the BOS that began the prefix is the prompt's
        tokens = [*prefix, *tokens]
    try:
        return _planned(
            model, request, prompt, stops, tokens, spans, field, names, forced, lazy, form
        )
    except BaseException:
        if spans:
            model.projector.free(spans)
        raise


def _fitted(model, request, tools, kwargs, prompt: str, tokens: list[int]):
    """The prompt of a chat over the context with its oldest turns dropped (see
    :mod:`.truncation`); as it was when nothing shorter fits (the caller refuses it)."""
    limit = request.max_tokens if request.max_tokens is not None else model.default_max_tokens

    def tokens_of(messages):
        text = model.chat.render(messages, tools, kwargs)
        return text, model.prompt_tokens(text)

    fitted = truncated(request.messages, tokens, model.n_ctx, limit, tokens_of)
    return fitted if fitted is not None else (prompt, tokens)


def _planned(
    model, request, prompt, stops, tokens, spans, field, names, forced, lazy, form
) -> Plan:
    _check_prompt(model, tokens, spans, request.media, field)
    tool_format = (
        model.tool_format if model.chat and model.chat.supports_tools else FORMATS["hermes"]
    )
    if lazy and request.response_format is not None and request.response_format.type != "text":
        forced, lazy = None, False  # the answer's own format wins over strict tools
    grammar_trigger = None
    if forced is not None and request.grammar is None:
        # The request's own grammar wins: it constrains the raw output, calls included.
        grammar, trigger = call_grammar(
            tool_format,
            forced,
            template=model.chat.template.source if model.chat else "",
            lazy=lazy,
            think=_think(form, prompt, request) if request.is_chat and not lazy else None,
            # A template without tool support was taught the hermes form; where its marker
            # is not one token of this vocabulary, spelling it out costs tokens and wanders:
            # the bare object, which every parser reads, instead.
            bare=not lazy
            and tool_format is FORMATS["hermes"]
            and len(model.special_tokens("<tool_call>")) != 1,
            param="tools" if lazy else "tool_choice",
            ceiling=model.n_ctx,
        )
        check_grammar_size(grammar, "tools" if lazy else "tool_choice", request.max_grammar_bytes)
        grammar_trigger = trigger if lazy else None
    else:
        grammar = grammar_for(
            request.response_format, None, request.grammar, request.max_grammar_bytes, model.n_ctx
        )
    budget = model.n_ctx - len(tokens)
    # Every surface comes through here, so the model's default (or the server's) bounds a
    # request without max_tokens on all of them; a request may ask for more, up to the context.
    limit = request.max_tokens if request.max_tokens is not None else model.default_max_tokens
    if limit is not None:
        budget = min(budget, max(limit, 0))
    seed = request.seed if request.seed is not None else model.options.seed
    reasoning = {}
    if form is not None:
        budgets = [
            b for b in (request.reasoning_budget, model.options.reasoning_budget) if b is not None
        ]
        end = (
            form.end if not form.harmony else "<|end|><|start|>assistant<|channel|>final<|message|>"
        )
        reasoning = {
            "reasoning": form,
            "reasoning_open": opens_in_prompt(form, prompt),
            "show_reasoning": request.reasoning is not False,
            # A grammar's state would not follow inserted tokens: no budget under one.
            "reasoning_budget": min(budgets) if budgets and grammar is None else None,
            "reasoning_end": tuple(
                model.special_tokens(end + ("\n\n" if not form.harmony else ""))
            ),
        }
    return Plan(
        media=spans,
        request=request,
        tokens=tokens,
        stops=stops,
        grammar=grammar,
        budget=budget,
        tool_names=names,
        seed=seed,
        # A template without tool support was taught the hermes form in its system text.
        tool_format=tool_format,
        grammar_trigger=grammar_trigger,
        **reasoning,
    )


def _think(form: ReasoningForm | None, prompt: str, request: GenerationRequest) -> Think | None:
    """The think block a forced call's grammar lets the model write first: none when the
    model has no reasoning form, or thinking was turned off and the prompt left no block
    open (one it opened anyway must still be closed first)."""
    if form is None:
        return None
    opened = opens_in_prompt(form, prompt)
    if request.reasoning is False and not opened:
        return None
    return Think(form.start, form.end, opened, after="<|start|>assistant" if form.harmony else "")


def strict_tools(tools) -> list:
    """The function tools marked ``strict: true``."""
    return [
        tool
        for tool in tools
        if isinstance(tool.get("function"), dict) and tool["function"].get("strict") is True
    ]


#: Effort levels a request may ask for (OpenAI's ``reasoning_effort``, Ollama's ``think``).
EFFORTS = ("low", "medium", "high")


def thinking_kwargs(template: str, request: GenerationRequest, defaults=None) -> dict:
    """The template's own switches for the request's ``reasoning``: ``enable_thinking``
    (Qwen3, GLM, DeepSeek V3.1, Gemma 4, ...) and ``reasoning_effort`` (gpt-oss).

    A request that says nothing gets ``enable_thinking = true``, as llama-server passes it
    (unless its reasoning budget is 0): left undefined, it means "on" to templates that test
    ``enable_thinking is false`` (Qwen3) but "off" to those that test ``not enable_thinking``
    (DeepSeek-R1-Distill's closes the think block, and the reasoning comes back as answer
    text). The model's own ``chat_template_kwargs`` (``defaults``) still set it."""
    wanted = request.reasoning
    kwargs: dict = {}
    if wanted is None:
        if "enable_thinking" in template and "enable_thinking" not in (defaults or {}):
            kwargs["enable_thinking"] = True
        return kwargs
    if "enable_thinking" in template:
        kwargs["enable_thinking"] = wanted is not False
    if isinstance(wanted, str) and wanted in EFFORTS and "reasoning_effort" in template:
        kwargs["reasoning_effort"] = wanted
    return kwargs


def _vocabulary_ids(model, ids, field: str, where: str = "") -> list[int]:
    """``ids`` as a prompt, each checked against the vocabulary (llama.cpp would read out of
    its tables for any other); ``where`` names them in the error."""
    n_vocab = getattr(model, "n_vocab", None)
    for token in ids:
        if n_vocab is not None and not 0 <= token < n_vocab:
            raise InvalidRequest(
                f"Token {token}{where} is not in the vocabulary of '{model.name}'"
                f" (0..{n_vocab - 1})",
                field,
            )
    return list(ids)


def _check_prompt(model, tokens: list[int], spans: list, media, field: str) -> None:
    if not tokens:
        raise InvalidRequest("The prompt is empty", field)
    if len(tokens) >= model.n_ctx:
        if spans:
            held = sum(span.end - span.start for span in spans)
            # the first image or clip that does not fit (one chunk per item)
            over = next((i for i, s in enumerate(spans) if s.end >= model.n_ctx), len(spans) - 1)
            raise InvalidRequest(
                f"The prompt's {len(spans)} images or audio clips take {held} tokens and the"
                f" whole prompt {len(tokens)}: more than the context of {model.n_ctx} tokens"
                " holds",
                media[min(over, len(media) - 1)].field,
            )
        raise ContextLengthExceeded(len(tokens), model.n_ctx, param=field)
    if spans and spans[-1].end == len(tokens):
        raise InvalidRequest("The prompt must end with text after its last image", field)
    for index, span in enumerate(spans):
        # attention inside such an image goes both ways: it must be decoded in one ubatch
        if span.non_causal and span.end - span.start > model.n_ubatch:
            raise InvalidRequest(
                f"An image takes {span.end - span.start} tokens, more than the model's n_ubatch"
                f" ({model.n_ubatch}) that its projector needs it decoded in at once; raise"
                " n_ubatch (and n_batch)",
                media[min(index, len(media) - 1)].field,
            )
