"""The Decisions API's wire types, as the ``openai`` SDK (3.51+) defines them
(``openai/types/decision_create_params.py`` and ``openai/types/decision.py``).

Input items are checked in :mod:`.translate` (a message's ``type`` may be left out, so they
are not a tagged union); questions are a tagged union on ``type``. A choice's ``value`` is
a string or a boolean and stays typed: ``true`` and ``"true"`` are different choices.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

MAX_QUESTIONS = 400


class CacheBreakpoint(Struct, kw_only=True):
    mode: Literal["explicit"]


class QuestionText(Struct, tag_field="type", tag="input_text", kw_only=True):
    text: str
    prompt_cache_breakpoint: CacheBreakpoint | None = None


class QuestionImage(Struct, tag_field="type", tag="input_image", kw_only=True):
    image_url: str
    detail: Literal["low", "high", "auto", "original"] | None = None
    prompt_cache_breakpoint: CacheBreakpoint | None = None


class InputJson(Struct, tag_field="type", tag="input_json", kw_only=True):
    data: dict[str, Any] | list[dict[str, Any]]


QuestionPart = QuestionText | QuestionImage | InputJson
Instructions = (
    Annotated[str, Meta(min_length=1)] | Annotated[list[QuestionPart], Meta(min_length=1)]
)
Name = Annotated[str, Meta(max_length=256)]


class Predicate(Struct, tag_field="type", tag="predicate", kw_only=True):
    """The probability that a statement about the input is true."""

    instructions: Instructions
    name: Name | None = None


class Choice(Struct, kw_only=True):
    value: str | bool
    description: str | None = None


class ChoiceQuestion(Struct, tag_field="type", tag="choice", kw_only=True):
    """One of the given choices."""

    instructions: Instructions
    choices: Annotated[list[Choice], Meta(min_length=2, max_length=255)]
    name: Name | None = None


class Level(Struct, kw_only=True):
    label: Annotated[str, Meta(min_length=1)]
    description: str | None = None


class ScoreQuestion(Struct, tag_field="type", tag="score", kw_only=True):
    """A rating on ordered levels (value 0 for the first)."""

    instructions: Instructions
    levels: Annotated[list[Level], Meta(min_length=2, max_length=10)]
    name: Name | None = None


Question = Predicate | ChoiceQuestion | ScoreQuestion


class PromptCacheOptions(Struct, kw_only=True):
    mode: Literal["implicit", "explicit"] | None = None
    ttl: Literal["30m"] | None = None


class DecisionRequest(Struct, kw_only=True):
    model: Annotated[str, Meta(min_length=1, max_length=512)]
    input: Annotated[str, Meta(min_length=1)] | Annotated[list[dict[str, Any]], Meta(min_length=1)]
    questions: Annotated[list[Question], Meta(min_length=1, max_length=MAX_QUESTIONS)]
    # Accepted for compatibility; Hoshikage's prompt cache is the slots' own.
    prompt_cache_key: str | None = None
    prompt_cache_options: PromptCacheOptions | None = None
    safety_identifier: Annotated[str, Meta(max_length=512)] | None = None


# ---- the answer ----------------------------------------------------------------------------
# Tagged by ``type`` (written first, as before), so the union of answers has an OpenAPI schema.


class PredicateAnswer(Struct, tag_field="type", tag="predicate", kw_only=True, omit_defaults=False):
    name: str | None = None
    probability: float = 0.0


class ChoiceProbability(Struct, kw_only=True):
    value: str | bool
    probability: float


class ChoiceAnswer(Struct, tag_field="type", tag="choice", kw_only=True):
    name: str | None = None
    choice: str | bool
    confidence: float
    probabilities: list[ChoiceProbability]


class LevelProbability(Struct, kw_only=True):
    label: str
    value: int
    probability: float


class ScoreAnswer(Struct, tag_field="type", tag="score", kw_only=True):
    name: str | None = None
    score: float
    confidence: float
    probabilities: list[LevelProbability]


class InputTokensDetails(Struct, kw_only=True):
    cached_tokens: int
    cache_write_tokens: int


class OutputTokensDetails(Struct, kw_only=True):
    reasoning_tokens: int = 0


class Usage(Struct, kw_only=True):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class Decision(Struct, kw_only=True):
    answers: list[PredicateAnswer | ChoiceAnswer | ScoreAnswer]
    model: str
    usage: Usage
