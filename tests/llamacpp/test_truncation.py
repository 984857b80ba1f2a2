"""Which turns a chat over the context keeps (:mod:`hoshikage_llamacpp.frontend.truncation`),
with a tokenizer of one token a character: the rules, apart from any model. The same rules
through a real server and a real model: tests/api/test_truncation.py."""

from __future__ import annotations

from hoshikage_llamacpp.frontend.truncation import shorter_conversations, truncated


def msg(role: str, content: str = "", **extra) -> dict:
    return {"role": role, "content": content, **extra}


def contents(messages) -> list[str]:
    return [m["content"] for m in messages]


CHAT = [
    msg("system", "S"),
    msg("user", "u1"),
    msg("assistant", "a1"),
    msg("user", "u2"),
    msg("assistant", "a2"),
    msg("user", "u3"),
]


def test_whole_turns_go_the_oldest_first_and_system_messages_stay():
    assert [contents(c) for c in shorter_conversations(CHAT)] == [
        ["S", "u2", "a2", "u3"],
        ["S", "u3"],
    ]
    # A system message in the middle stays where it is.
    middle = [*CHAT[:3], msg("system", "S2"), *CHAT[3:]]
    assert [contents(c) for c in shorter_conversations(middle)] == [
        ["S", "S2", "u2", "a2", "u3"],
        ["S", "S2", "u3"],
    ]


def test_an_agents_last_turn_loses_its_oldest_steps_but_not_its_task():
    call = {"tool_calls": [{"id": "c"}]}
    agent = [
        msg("system", "S"),
        msg("user", "task"),
        msg("assistant", "a1", **call),
        msg("tool", "r1"),
        msg("tool", "r1b"),
        msg("assistant", "a2", **call),
        msg("tool", "r2"),
        msg("assistant", "a3", **call),
        msg("tool", "r3"),
    ]
    assert [contents(c) for c in shorter_conversations(agent)] == [
        ["S", "task", "a2", "r2", "a3", "r3"],
        ["S", "task", "a3", "r3"],
    ]
    # After earlier user turns: those go first, then the steps.
    longer = [msg("user", "old"), msg("assistant", "x"), *agent[1:]]
    assert [contents(c) for c in shorter_conversations(longer)][0] == contents(agent[1:])


def test_nothing_to_drop():
    assert shorter_conversations([msg("system", "S"), msg("user", "u")]) == []
    assert shorter_conversations([msg("assistant", "a")]) == []


def tokens_of(messages):
    text = "".join(m["content"] for m in messages)
    return text, list(text.encode())


def test_the_longest_that_leaves_room_for_the_answer():
    chat = [msg("system", "S" * 10)]
    for _ in range(10):
        chat += [msg("user", "u" * 20), msg("assistant", "a" * 20)]
    chat.append(msg("user", "q" * 20))
    whole = tokens_of(chat)[1]  # 430
    # n_ctx 200, an answer of 30: the prompt may take 170, so 3 turns (10 + 3 * 40 + 20).
    prompt, kept = truncated(chat, whole, 200, 30, tokens_of)
    assert len(kept) == 150 and prompt == "S" * 10 + ("u" * 20 + "a" * 20) * 3 + "q" * 20
    # Without max_tokens, at most a quarter of the context is kept for the answer.
    assert len(truncated(chat, whole, 200, None, tokens_of)[1]) == 150
    assert len(truncated(chat, whole, 400, None, tokens_of)[1]) == 270
    # A small max_tokens leaves the rest to the prompt.
    assert len(truncated(chat, whole, 200, 1, tokens_of)[1]) == 190


def test_the_shortest_when_none_leaves_room_and_none_when_nothing_fits():
    chat = [
        msg("system", "S" * 50),
        msg("user", "u" * 20),
        msg("assistant", "a"),
        msg("user", "q" * 40),
    ]
    whole = tokens_of(chat)[1]  # 111
    # Only system and the question (90) remain, over the target of 100 - 25 but within 100.
    assert truncated(chat, whole, 100, None, tokens_of)[1] == tokens_of([chat[0], chat[3]])[1]
    assert truncated(chat, whole, 90, None, tokens_of) is None
