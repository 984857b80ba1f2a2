"""Model options: validated by the core's config loader through the plugin's hook."""

from __future__ import annotations

import subprocess
import sys

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from hoshikage_core.config import structure  # noqa: E402
from hoshikage_core.errors import ConfigError  # noqa: E402
from hoshikage_core.plugins import make_plugin_manager  # noqa: E402
from hoshikage_llamacpp.options import LlamaOptions, physical_cores  # noqa: E402

from hoshikage_llamacpp import plugin  # noqa: E402


@pytest.fixture
def pm():
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(plugin, name="llamacpp")
    return pm


def config_with(pm, **options):
    return structure({"models": [{"name": "m", "path": "/m.gguf", **options}]}, pm=pm)


def test_defaults(pm):
    options = config_with(pm).models[0].options
    assert isinstance(options, LlamaOptions)
    assert (options.n_ctx, options.n_gpu_layers, options.flash_attn) == (4096, -1, "auto")
    assert (options.type_k, options.type_v, options.use_mmap, options.embedding) == (
        "f16",
        "f16",
        True,
        False,
    )
    assert options.threads() == physical_cores() >= 1


def test_every_option_is_accepted(pm):
    options = (
        config_with(
            pm,
            n_ctx=2048,
            n_batch=256,
            n_ubatch=128,
            n_threads=2,
            n_threads_batch=4,
            n_gpu_layers=10,
            main_gpu=1,
            split_mode="row",
            tensor_split=[3, 1],
            flash_attn=False,
            type_k="q8_0",
            type_v="f16",
            use_mmap=False,
            use_mlock=True,
            seed=7,
            chat_format="chatml",
            chat_template="{{ messages }}",
            embedding=True,
            pooling="cls",
            rope_freq_base=10000.0,
            rope_freq_scale=0.5,
            rpc_servers="10.0.0.2:50052,10.0.0.3:50052",
            temperature=0.2,
            top_p=0.9,
            top_k=20,
            min_p=0.1,
            repeat_penalty=1.1,
        )
        .models[0]
        .options
    )
    assert options.tensor_split == [3.0, 1.0]
    assert options.sampling_defaults() == {
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 20,
        "min_p": 0.1,
        "repeat_penalty": 1.1,
    }
    assert config_with(pm).models[0].options.sampling_defaults() == {}
    assert options.threads() == 2 and options.threads_batch() == 4


def test_the_old_names_of_the_model_process_timeouts_still_work_with_a_warning(pm):
    """``rpc_load_timeout`` and ``rpc_call_timeout`` time any model process, not RPC: they
    are ``load_timeout`` and ``call_timeout`` now, the old names accepted for one release."""
    with pytest.warns(DeprecationWarning) as caught:
        options = config_with(pm, rpc_load_timeout=30, rpc_call_timeout=7).models[0].options
    assert sorted(str(w.message).split(";")[0] for w in caught) == [
        "option 'rpc_call_timeout' is now 'call_timeout'",
        "option 'rpc_load_timeout' is now 'load_timeout'",
    ]
    assert (options.load_timeout, options.call_timeout) == (30, 7)
    options = config_with(pm, load_timeout=30, call_timeout=7).models[0].options
    assert (options.load_timeout, options.call_timeout) == (30, 7)
    assert (config_with(pm).models[0].options.call_timeout, LlamaOptions().load_timeout) == (
        120,
        300,
    )
    with pytest.raises(ConfigError, match=r"models\[0\]\.rpc_call_timeout: must be > 0"):
        config_with(pm, rpc_call_timeout=0)


def test_unknown_option_is_named(pm):
    with pytest.raises(ConfigError, match=r"models\[0\]\.n_ctxx: unknown key"):
        config_with(pm, n_ctxx=2048)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_ctx": 0}, r"models\[0\]\.n_ctx: must be > 0"),
        ({"n_ctx": "big"}, r"models\[0\]\.n_ctx: expected an integer"),
        ({"n_gpu_layers": -2}, r"models\[0\]\.n_gpu_layers: must be -1"),
        ({"type_k": "q3"}, r"models\[0\]\.type_k: must be one of"),
        ({"flash_attn": "yes"}, r"models\[0\]\.flash_attn: must be \"auto\", true or false"),
        ({"chat_format": "nope"}, r"models\[0\]\.chat_format: must be one of"),
        (
            {"rpc_servers": ["host-without-port"]},
            r"models\[0\]\.rpc_servers: expected \"host:port\"",
        ),
        ({"tensor_split": [0, 0]}, r"models\[0\]\.tensor_split"),
        ({"type_v": "q4_0", "flash_attn": False}, r"type_v: a quantized V cache needs flash_attn"),
        ({"temperature": 3}, r"models\[0\]\.temperature: must be between 0 and 2"),
        ({"top_p": 1.5}, r"models\[0\]\.top_p: must be between 0 and 1"),
        ({"repeat_penalty": -1}, r"models\[0\]\.repeat_penalty: must be between 0 and 10"),
    ],
)
def test_bad_values_name_the_key(pm, options, message):
    with pytest.raises(ConfigError, match=message):
        config_with(pm, **options)


def test_every_bad_option_is_reported_with_the_rest(pm):
    """The issue's example: a bad value and a misspelled key in one model, plus errors in a
    second model and in the core's keys, all in one error."""
    with pytest.raises(ConfigError) as info:
        structure(
            {
                "server": {"concurrency": 0},
                "models": [
                    {
                        "name": "a",
                        "path": "/a.gguf",
                        "n_ctx": -5,
                        "idle_ttl_typo": 3,
                        "parallel": 0,
                    },
                    {
                        "name": "b",
                        "path": "/b.gguf",
                        "idle_ttl": "soon",
                        "type_k": "q3",
                        "max_tokens": -1,
                    },
                    {"name": "c", "path": "/c.gguf", "type_v": "q4_0", "flash_attn": False},
                ],
            },
            pm=pm,
        )
    problems = info.value.problems
    for line in (
        "server.concurrency: must be > 0",
        "models[0].n_ctx: must be > 0",
        "models[0].idle_ttl_typo: unknown key",
        "models[0].parallel: must be between 1 and 256",
        "models[1].idle_ttl: 'soon' is not a duration",
        "models[1].type_k: must be one of",
        "models[1].max_tokens: must be >= 0",
        "models[2].type_v: a quantized V cache needs flash_attn",
    ):
        assert sum(p.startswith(line) for p in problems) == 1, (line, problems)
    assert len(problems) == 8, problems


def test_backend_options_hook_answers_only_for_llamacpp():
    assert plugin.backend_options(backend="llamacpp") is LlamaOptions
    assert plugin.backend_options(backend="other") is None


def test_importing_the_plugin_does_not_import_llama_cpp():
    code = (
        "import sys, hoshikage_llamacpp.plugin, hoshikage_llamacpp.options;"
        "assert 'llama_cpp' not in sys.modules and 'numpy' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
