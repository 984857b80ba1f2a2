"""Config loading: the documented format, and errors that name the key path."""

from __future__ import annotations

import textwrap

import pytest
from hoshikage_core.errors import ConfigError
from hoshikage_core.plugins import make_plugin_manager

from hoshikage_core import config as config_mod
from tests.core.fake_backend import FakeBackendPlugin

ISSUE_EXAMPLE = """
[server]
host = "127.0.0.1"
port = 8000
api_key = ""          # empty: no auth
concurrency = 1
max_queue = 32

[unload]
idle_ttl = "5m"
max_loaded = 1

[[models]]
name = "gemma-3-270m"
path = "/models/gemma-3-270m-q4_k_m.gguf"
aliases = ["default"]
n_ctx = 4096
"""


def load_text(tmp_path, text, pm=None):
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(text))
    return config_mod.load(path, pm=pm)


def error_of(tmp_path, text, pm=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, pm)
    return str(info.value)


def test_the_documented_example_loads(tmp_path):
    cfg = load_text(tmp_path, ISSUE_EXAMPLE)
    assert cfg.server.port == 8000 and cfg.server.api_key == ""
    assert cfg.unload.idle_ttl == 300.0
    (model,) = cfg.models
    assert model.name == "gemma-3-270m" and model.aliases == ["default"]
    assert model.options == {"n_ctx": 4096}  # no backend plugin here: kept raw
    assert cfg.source == tmp_path / "config.toml"


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.delenv("HOSHIKAGE_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "nothing"))
    cfg = config_mod.load(None)
    assert cfg.source is None and cfg.models == []
    assert (cfg.server.host, cfg.server.port, cfg.server.concurrency) == ("127.0.0.1", 8000, 4)
    assert (cfg.unload.idle_ttl, cfg.unload.max_loaded) == (300.0, 1)


def test_resolution_order(tmp_path, monkeypatch):
    env_file = tmp_path / "env.toml"
    env_file.write_text("[server]\nport = 9001\n")
    xdg = tmp_path / "xdg"
    (xdg / "hoshikage").mkdir(parents=True)
    (xdg / "hoshikage" / "config.toml").write_text("[server]\nport = 9002\n")
    explicit = tmp_path / "explicit.toml"
    explicit.write_text("[server]\nport = 9003\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.delenv("HOSHIKAGE_CONFIG", raising=False)
    assert config_mod.load(None).server.port == 9002
    monkeypatch.setenv("HOSHIKAGE_CONFIG", str(env_file))
    assert config_mod.load(None).server.port == 9001
    assert config_mod.load(explicit).server.port == 9003


def test_durations_and_sizes(tmp_path):
    cfg = load_text(
        tmp_path,
        """
        [server]
        affinity_wait = "500ms"
        max_body_size = "2MiB"
        [unload]
        idle_ttl = "90s"
        max_memory = "8GB"
        [[models]]
        name = "a"
        path = "/a.gguf"
        idle_ttl = -1
        [[models]]
        name = "b"
        path = "/b.gguf"
        idle_ttl = "1h"
    """,
    )
    assert cfg.server.affinity_wait == 0.5
    assert cfg.server.max_body_size == 2 * 1024 * 1024
    assert cfg.unload.idle_ttl == 90.0
    assert cfg.unload.max_memory == 8_000_000_000
    assert [m.idle_ttl for m in cfg.models] == [-1.0, 3600.0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[server]\nport = 'x'\n", "server.port: expected an integer, got str 'x'"),
        ("[server]\nport = 70000\n", "server.port: must be between 0 and 65535"),
        ("[server]\nconcurrency = 0\n", "server.concurrency: must be > 0"),
        ("[server]\nmax_queue = -1\n", "server.max_queue: must be >= 0"),
        ("[server]\nportt = 1\n", "server.portt: unknown key"),
        ("[servre]\nport = 1\n", "servre: unknown key"),
        ("[unload]\nidle_ttl = '5 minutes'\n", "unload.idle_ttl: '5 minutes' is not a duration"),
        ("[unload]\nidle_ttl = -3\n", "unload.idle_ttl: must be >= 0 (or -1 for never)"),
        ("[unload]\nmax_memory = 'lots'\n", "unload.max_memory: 'lots' is not a size"),
        ("[unload]\nmax_loaded = true\n", "unload.max_loaded: expected an integer, got bool True"),
        ("[[models]]\npath = '/x'\n", "models[0].name: is required"),
        ("[[models]]\nname = 'a'\n", "models[0].path: is required"),
        ("[[models]]\nname = ''\npath='/x'\n", "models[0].name: must not be empty"),
        (
            "[[models]]\nname = 'a'\npath = '/x'\naliases = 'b'\n",
            "models[0].aliases: expected an array",
        ),
        (
            "[[models]]\nname = 'a'\npath = '/x'\npreload = 'yes'\n",
            "models[0].preload: expected true or false",
        ),
        ("models = 3\n", "models: expected an array"),
        ("[server]\nport = 1\n[server]\n", "not valid TOML"),
    ],
)
def test_errors_name_the_key(tmp_path, text, expected):
    message = error_of(tmp_path, text)
    assert expected in message
    assert str(tmp_path / "config.toml") in message


def test_second_model_error_has_its_index(tmp_path):
    message = error_of(
        tmp_path,
        """
        [[models]]
        name = "a"
        path = "/a"
        [[models]]
        name = "b"
        path = "/b"
        idle_ttl = "soon"
    """,
    )
    assert "models[1].idle_ttl: 'soon' is not a duration" in message


def test_several_errors_are_all_reported(tmp_path):
    message = error_of(tmp_path, "[server]\nport = 'x'\nhost = 3\nbogus = 1\n")
    assert (
        "server.port:" in message
        and "server.host:" in message
        and "server.bogus: unknown key" in message
    )


def test_every_error_of_a_file_is_reported_at_once(tmp_path):
    """Type errors, validator failures, unknown keys and duplicate names, over every
    section and model, in one report: one line each, with its key path."""
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(FakeBackendPlugin())
    with pytest.raises(ConfigError) as info:
        load_text(
            tmp_path,
            """
            [server]
            port = 70000
            concurrency = 0
            max_tokens = -1
            bogus = 1
            [unload]
            max_loaded = 0
            max_memory = "lots"
            [[models]]
            name = "a"
            path = "/a"
            backend = "fake"
            tokens = "7"
            tokenz = 7
            [[models]]
            name = ""
            path = "/b"
            aliases = ["a"]
            preload = "yes"
        """,
            pm,
        )
    expected = [
        "server.port: must be between 0 and 65535",
        "server.concurrency: must be > 0",
        "server.max_tokens: must be >= 0",
        "server.bogus: unknown key",
        "unload.max_loaded: must be > 0",
        "unload.max_memory: 'lots' is not a size",
        "models[0].tokenz: unknown key",
        "models[0].tokens: expected an integer",
        "models[1].name: must not be empty",
        "models[1].preload: expected true or false",
        "models[1]: the name 'a' is already used by 'a'",
    ]
    problems = info.value.problems
    assert len(problems) == len(expected), problems
    for line in expected:
        assert sum(p.startswith(line) for p in problems) == 1, (line, problems)
        assert line in str(info.value)


def test_validators_and_unknown_keys_of_one_table_come_together(tmp_path):
    """attrs stops at the first failing validator, and cattrs only calls it when every
    field structured: both are reported here anyway."""
    message = error_of(
        tmp_path, "[server]\nport = 'x'\nconcurrency = 0\nmax_queue = -1\nportt = 1\n"
    )
    for line in (
        "server.port: expected an integer",
        "server.concurrency: must be > 0",
        "server.max_queue: must be >= 0",
        "server.portt: unknown key",
    ):
        assert line in message


def test_duplicate_names_and_aliases(tmp_path):
    message = error_of(
        tmp_path,
        """
        [[models]]
        name = "a"
        path = "/a"
        [[models]]
        name = "b"
        path = "/b"
        aliases = ["a"]
    """,
    )
    assert "models[1]: the name 'a' is already used by 'a'" in message


def test_backend_options_are_validated_by_the_backend_plugin(tmp_path):
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(FakeBackendPlugin())
    base = "[[models]]\nname = 'a'\npath = '/a'\nbackend = 'fake'\n"
    cfg = load_text(tmp_path, base + "tokens = 7\n", pm)
    assert cfg.models[0].options.tokens == 7
    assert "models[0].tokenz: unknown key" in error_of(tmp_path, base + "tokenz = 7\n", pm)
    assert "models[0].tokens: expected an integer" in error_of(
        tmp_path, base + "tokens = '7'\n", pm
    )


def test_missing_explicit_file(tmp_path):
    with pytest.raises(ConfigError, match="Config file not found: .*nope.toml"):
        config_mod.load(tmp_path / "nope.toml")
