"""From a Decisions request to the core's :class:`~hoshikage_core.protocol.ScoreRequest`, and
from its scores to the answers.

The prompt of a question (the exact text is in ``docs/api-spec.md``):

1. the input as chat messages: a string is one user message; message items keep their
   role (``developer`` as ``system``, text parts joined by the core's one rule, JSON parts
   as compact JSON), a function call is an assistant message with that tool call and its
   output a ``tool`` message;
2. the question, appended to the last message after a blank line when that is the user's,
   else as a new user message: its answer space, then its instructions (:func:`question_text`);
3. rendered with the model's chat template, the assistant's turn opened.

Every question's prompt starts with the same rendered input, so the engine reads it once.
The answers' probabilities are the softmax of the labels' total log-probabilities, over the
question's answer space only.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hoshikage_core.protocol import ScorePrompt, ScoreRequest, Scores, join_text

from ..kernel.errors import invalid
from . import schemas as s

#: Labels of a predicate's answer space, in this order.
TRUE_FALSE = ("true", "false")
#: Between the input's last user text and the question.
QUESTION_SEPARATOR = "\n\n"

_IMAGES = (
    "Images are not supported: Hoshikage serves no vision model yet. Send text or input_json parts."
)


# ---- the input ---------------------------------------------------------------------------


def _text_parts(parts: Any, where: str, allowed: tuple[str, ...]) -> str:
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, list) or not parts:
        raise invalid(f"Invalid '{where}': expected a string or a non-empty array of parts.", where)
    texts = []
    for j, part in enumerate(parts):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "input_image":
            raise invalid(_IMAGES, at, code="unsupported_content")
        if kind not in allowed:
            raise invalid(
                f"Invalid '{at}.type': expected one of {', '.join(allowed)}.", f"{at}.type"
            )
        if kind == "input_json":
            data = part.get("data")
            if not isinstance(data, (dict, list)):
                raise invalid(
                    f"Invalid '{at}.data': expected an object or an array of objects.", f"{at}.data"
                )
            texts.append(_json(data))
            continue
        key = "refusal" if kind == "refusal" else "text"
        value = part.get(key)
        if not isinstance(value, str):
            raise invalid(f"Invalid '{at}.{key}': expected a string.", f"{at}.{key}")
        texts.append(value)
    return join_text(texts)


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _string(item: dict, key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise invalid(f"Invalid '{where}.{key}': expected a string.", f"{where}.{key}")
    return value


_MESSAGE_PARTS = {
    "user": ("input_text", "input_image", "input_json"),
    "system": ("input_text",),
    "developer": ("input_text",),
    "assistant": ("output_text", "refusal"),
}


def input_messages(value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The input as chat messages (see the module docstring)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    messages: list[dict[str, Any]] = []
    calls: set[str] = set()
    for i, item in enumerate(value):
        where = f"input[{i}]"
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in _MESSAGE_PARTS:
                raise invalid(
                    f"Invalid '{where}.role': expected one of user, system, developer, assistant.",
                    f"{where}.role",
                )
            content = _text_parts(item.get("content"), f"{where}.content", _MESSAGE_PARTS[role])
            messages.append({"role": "system" if role == "developer" else role, "content": content})
        elif kind in ("function_call", "custom_tool_call"):
            call_id = _string(item, "call_id", where)
            name = _string(item, "name", where)
            if kind == "function_call":
                arguments = _string(item, "arguments", where)
            else:
                arguments = _json({"input": _string(item, "input", where)})
            calls.add(call_id)
            call = {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            if messages and messages[-1]["role"] == "assistant" and messages[-1].get("tool_calls"):
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind in ("function_call_output", "custom_tool_call_output"):
            call_id = _string(item, "call_id", where)
            if call_id not in calls:
                raise invalid(
                    f"Invalid '{where}.call_id': no earlier call has the call_id '{call_id}'.",
                    f"{where}.call_id",
                )
            output = _text_parts(
                item.get("output"), f"{where}.output", ("input_text", "input_image")
            )
            messages.append({"role": "tool", "tool_call_id": call_id, "content": output})
        else:
            raise invalid(
                f"Invalid '{where}.type': expected message, function_call, function_call_output, "
                "custom_tool_call or custom_tool_call_output.",
                f"{where}.type",
            )
    return messages


# ---- the questions -------------------------------------------------------------------------


def _instructions(question: s.Question, where: str) -> str:
    if isinstance(question.instructions, str):
        return question.instructions
    texts = []
    for j, part in enumerate(question.instructions):
        if isinstance(part, s.QuestionImage):
            raise invalid(_IMAGES, f"{where}.instructions[{j}]", code="unsupported_content")
        texts.append(part.text if isinstance(part, s.QuestionText) else _json(part.data))
    return join_text(texts)


def choice_labels(choices: list[s.Choice]) -> list[str]:
    """The text each choice is answered with: a string as it is, a boolean as ``true`` or
    ``false``; a string that reads like one of the booleans next to that boolean is quoted
    (``"true"``), so the two stay apart."""
    bools = {c.value for c in choices if isinstance(c.value, bool)}
    names = {"true" if b else "false" for b in bools}
    labels = []
    for c in choices:
        if isinstance(c.value, bool):
            labels.append("true" if c.value else "false")
        elif c.value in names:
            labels.append(_json(c.value))
        else:
            labels.append(c.value)
    return labels


def _listed(label: str, description: str | None) -> str:
    return f"- {label}: {description}" if description else f"- {label}"


def _either(labels: list[str]) -> str:
    """``a, b or c``."""
    return f"{', '.join(labels[:-1])} or {labels[-1]}"


def _inline(labels: list[str], descriptions: list[str | None]) -> bool:
    """Whether the answer space fits on one line: no description, and no label that a
    comma, ``or`` or a line break would blur."""
    return not any(descriptions) and not any(
        "," in label or "\n" in label or " or " in f" {label} " for label in labels
    )


def _space(labels: list[str], descriptions: list[str | None], heading: str) -> str:
    """The answer space: inline (``Choices: a, b or c.``) when :func:`_inline`, else one
    ``- label: description`` line each under the heading. Every token of it is read once
    per question (questions with the same answer space share it: it comes first), so it
    is short."""
    if _inline(labels, descriptions):
        return f"{heading}: {_either(labels)}."
    listed = "\n".join(_listed(label, d) for label, d in zip(labels, descriptions, strict=True))
    return f"{heading}:\n{listed}\nAnswer with exactly one of them, as written."


def question_text(question: s.Question, where: str) -> tuple[str, list[str]]:
    """The question as the model reads it (its answer space first, then its
    instructions), and the labels of its answer space."""
    instructions = _instructions(question, where)
    if isinstance(question, s.Predicate):
        return f"True or false: {instructions}", list(TRUE_FALSE)
    if isinstance(question, s.ChoiceQuestion):
        labels = choice_labels(question.choices)
        space = _space(labels, [c.description for c in question.choices], "Choices")
        return f"{space}\n{instructions}", labels
    labels = [level.label for level in question.levels]
    descriptions = [level.description for level in question.levels]
    space = _space(labels, descriptions, "Levels (lowest to highest)")
    return f"{space}\n{instructions}", labels


def validate(data: s.DecisionRequest) -> None:
    for i, question in enumerate(data.questions):
        where = f"questions[{i}]"
        if isinstance(question, s.ChoiceQuestion):
            seen = set()
            for j, choice in enumerate(question.choices):
                key = (type(choice.value), choice.value)
                if key in seen:
                    raise invalid(
                        f"Invalid '{where}.choices[{j}].value': the choice {_json(choice.value)} is given twice; "
                        "choices must be unique.",
                        f"{where}.choices[{j}].value",
                    )
                if choice.value == "":
                    raise invalid(
                        f"Invalid '{where}.choices[{j}].value': a choice must not be empty.",
                        f"{where}.choices[{j}].value",
                    )
                seen.add(key)
        elif isinstance(question, s.ScoreQuestion):
            labels = [level.label for level in question.levels]
            for j, label in enumerate(labels):
                if label in labels[:j]:
                    raise invalid(
                        f"Invalid '{where}.levels[{j}].label': the label '{label}' is given twice; "
                        "levels must be unique.",
                        f"{where}.levels[{j}].label",
                    )


def _prefixed(labels: list[str]) -> bool:
    """Whether one label is the start of another (then each is scored as the whole reply)."""
    return any(a != b and b.startswith(a) for a in labels for b in labels)


def score_request(data: s.DecisionRequest) -> tuple[ScoreRequest, list[list[str]]]:
    """One prompt per question (all starting with the same rendered input), and each
    question's labels."""
    validate(data)
    messages = input_messages(data.input)
    prompts, spaces = [], []
    for i, question in enumerate(data.questions):
        text, labels = question_text(question, f"questions[{i}]")
        asked = [dict(m) for m in messages]
        last = asked[-1] if asked else None
        if last is not None and last["role"] == "user":
            last["content"] = last["content"] + QUESTION_SEPARATOR + text
        else:
            asked.append({"role": "user", "content": text})
        prompts.append(
            ScorePrompt(
                messages=tuple(asked), continuations=tuple(labels), end_of_turn=_prefixed(labels)
            )
        )
        spaces.append(labels)
    return ScoreRequest(prompts=tuple(prompts)), spaces


# ---- the answers ---------------------------------------------------------------------------


def normalise(logprobs: tuple[float, ...]) -> list[float]:
    """Probabilities over the answer space: the softmax of the labels' log-probabilities."""
    peak = max(logprobs)
    weights = [math.exp(lp - peak) for lp in logprobs]
    total = sum(weights)
    return [w / total for w in weights]


def answers(data: s.DecisionRequest, scores: Scores) -> list:
    out = []
    for question, logprobs in zip(data.questions, scores.logprobs, strict=True):
        probs = normalise(logprobs)
        best = max(range(len(probs)), key=probs.__getitem__)
        if isinstance(question, s.Predicate):
            out.append(s.PredicateAnswer(name=question.name, probability=probs[0]))
        elif isinstance(question, s.ChoiceQuestion):
            out.append(
                s.ChoiceAnswer(
                    name=question.name,
                    choice=question.choices[best].value,
                    confidence=probs[best],
                    probabilities=[
                        s.ChoiceProbability(value=c.value, probability=p)
                        for c, p in zip(question.choices, probs, strict=True)
                    ],
                )
            )
        else:
            out.append(
                s.ScoreAnswer(
                    name=question.name,
                    score=sum(i * p for i, p in enumerate(probs)),
                    confidence=probs[best],
                    probabilities=[
                        s.LevelProbability(label=level.label, value=i, probability=p)
                        for i, (level, p) in enumerate(zip(question.levels, probs, strict=True))
                    ],
                )
            )
    return out


def decision(data: s.DecisionRequest, scores: Scores) -> s.Decision:
    cached = scores.cached_tokens
    return s.Decision(
        answers=answers(data, scores),
        model=data.model,
        usage=s.Usage(
            input_tokens=scores.prompt_tokens,
            input_tokens_details=s.InputTokensDetails(
                cached_tokens=cached, cache_write_tokens=max(0, scores.prefix_tokens - cached)
            ),
            output_tokens=0,
            output_tokens_details=s.OutputTokensDetails(reasoning_tokens=0),
            total_tokens=scores.prompt_tokens,
        ),
    )
