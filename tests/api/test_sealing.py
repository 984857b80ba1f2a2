"""The seal on reasoning items' ``encrypted_content`` (hoshikage_api.responses.sealing): a
token opens only under the key that sealed it, and any change to it is caught."""

from __future__ import annotations

import os
import stat

import pytest
from hoshikage_api.responses.sealing import PREFIX, Sealer


def test_a_token_opens_to_its_text_under_its_key_only():
    sealer = Sealer(b"k" * 32)
    text = "思考: the user wants the weather.\n" * 20
    token = sealer.seal(text)
    assert token.startswith(PREFIX) and "weather" not in token
    assert sealer.open(token) == text
    assert Sealer(b"j" * 32).open(token) is None
    assert sealer.open("") is None and sealer.open("hk1.") is None


def test_any_change_to_a_token_is_caught():
    sealer = Sealer(os.urandom(32))
    token = sealer.seal("I should call get_weather.")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_="
    for i in range(len(PREFIX), len(token)):
        for c in (alphabet[(alphabet.index(token[i]) + 1) % len(alphabet)], "*"):
            changed = token[:i] + c + token[i + 1 :]
            if changed != token:
                assert sealer.open(changed) is None, (i, c)
    assert sealer.open(token[:-1]) is None and sealer.open(token + "A") is None


def test_the_key_is_made_once_private_and_reused(tmp_path):
    path = tmp_path / "data" / "reasoning.key"
    first = Sealer.at(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_bytes()) == 32
    token = first.seal("kept across restarts")
    assert Sealer.at(path).open(token) == "kept across restarts"
    path.unlink()
    assert Sealer.at(path).open(token) is None


def test_a_short_key_is_refused():
    with pytest.raises(ValueError):
        Sealer(b"short")
