"""``hoshikage chat`` with a model that reasons: the reasoning is printed dimmed, the
answer after it on its own line. The model is the Qwen3.5 fixture (real tokenizer and
template; its prompt opens the think block) whose reasoning the engine ends at 6 tokens."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.support.server import running_server

pytestmark = pytest.mark.timeout(120)

DIM = "\x1b[2m"


@pytest.fixture(scope="module")
def server(family_model):
    thinker = family_model("qwen35", "Qwen3.5-4B")
    model = {
        "name": "thinker",
        "path": str(thinker),
        "n_ctx": 1024,
        "reasoning_budget": 6,
        "seed": 2,
        "top_k": 0,
        "top_p": 1.0,
        "min_p": 0.0,
    }
    with running_server({"models": [model]}) as srv:
        yield srv


def test_chat_prints_reasoning_dimmed_before_the_answer(server):
    env = {**os.environ, "COLUMNS": "200", "XDG_CONFIG_HOME": "/nonexistent", "FORCE_COLOR": "1"}
    env.pop("HOSHIKAGE_CONFIG", None)
    env.pop("NO_COLOR", None)
    res = subprocess.run(
        [sys.executable, "-m", "hoshikage_core.cli", "chat", "thinker", "--url", server.base_url]
        + ["--temperature", "2", "--max-tokens", "24"],
        capture_output=True,
        text=True,
        timeout=60,
        input="hello\n/exit\n",
        env=env,
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert DIM in out, out
    after = out.split("ai ›", 1)[1]
    reply, _, stats = after.partition("tokens in")
    dimmed = re.findall(r"\x1b\[2m(.*?)\x1b\[0m", reply, re.S)
    assert "".join(d for d in dimmed if not d.strip().isdigit()).strip(), after  # the reasoning
    plain = re.sub(r"\x1b\[2m.*?\x1b\[0m", "", reply, flags=re.S)
    assert re.sub(r"\x1b\[[0-9;]*m", "", plain).strip()  # then the answer, not dimmed
    assert "tokens in" in out
