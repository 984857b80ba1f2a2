"""``models_dir``: the config's shapes, discovery's names and skips, explicit overrides and
name clashes (core only: the files are minimal GGUF headers; ``tests/api/test_models_dir.py``
serves a discovered model for real)."""

from __future__ import annotations

import pytest
from hoshikage_core.catalog import build_registry
from hoshikage_core.discovery import model_name
from hoshikage_core.errors import ConfigError
from hoshikage_core.plugins import make_plugin_manager

from hoshikage_core import config as config_mod
from tests.core.gguf_writer import write_minimal_gguf


@pytest.mark.parametrize(
    ("file_name", "name"),
    [
        ("Qwen3-8B-Q4_K_M.gguf", "qwen3-8b-q4_k_m"),
        ("tiny.GGUF", "tiny"),
        ("big-model-00001-of-00003.gguf", "big-model"),
        ("big-model-00002-of-00003.gguf", None),
        ("big-model-00003-of-00003.gguf", None),
        ("mmproj-model-f16.gguf", None),
        ("mmproj.gguf", None),
        (".hidden.gguf", None),
        ("._tiny.gguf", None),
        ("notes.txt", None),
        ("model.gguf.part", None),
    ],
)
def test_names_from_file_names(file_name, name):
    assert model_name(file_name) == name


def gguf(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_minimal_gguf(path)
    return path


def build(data):
    pm = make_plugin_manager(load_entry_points=False)
    return build_registry(config_mod.structure(data, pm=pm), pm)


def test_discovery_walks_folders_and_skips_what_is_not_a_model(tmp_path):
    root = tmp_path / "models"
    gguf(root / "Tiny.gguf")
    gguf(root / "vision" / "llava-7b.gguf")
    gguf(root / "vision" / "mmproj-llava-7b-f16.gguf")
    gguf(root / "split" / "Big-00001-of-00002.gguf")
    gguf(root / "split" / "Big-00002-of-00002.gguf")
    gguf(root / ".cache" / "partial.gguf")
    (root / "README.md").write_text("not a model")
    registry = build({"models_dir": str(root)})
    entries = {e.name: e for e in registry}
    assert list(entries) == [
        "big",
        "tiny",
        "llava-7b",
    ]  # path order, ignoring case: split/, Tiny.gguf, vision/
    assert entries["big"].path == str(root / "split" / "Big-00001-of-00002.gguf")
    assert {e.source for e in entries.values()} == {"models_dir"}
    assert {e.backend for e in entries.values()} == {"llamacpp"}
    assert registry.notes == []


def test_folder_defaults_apply_to_discovered_models(tmp_path):
    gguf(tmp_path / "a" / "one.gguf")
    gguf(tmp_path / "b" / "two.gguf")
    registry = build(
        {
            "models_dir": [
                str(tmp_path / "a"),
                {"path": str(tmp_path / "b"), "idle_ttl": "10m", "n_ctx": 512},
            ],
        }
    )
    one, two = registry
    assert (one.name, one.options, one.idle_ttl) == ("one", {}, None)
    assert (two.name, two.options, two.idle_ttl) == ("two", {"n_ctx": 512}, 600.0)


def test_an_explicit_entry_for_a_discovered_file_wins(tmp_path):
    path = gguf(tmp_path / "m" / "Tiny.gguf")
    gguf(tmp_path / "m" / "other.gguf")
    registry = build(
        {
            "models_dir": [{"path": str(tmp_path / "m"), "n_ctx": 512}],
            "models": [{"name": "mine", "path": str(path), "n_ctx": 2048, "aliases": ["other"]}],
        }
    )
    entries = {e.name: e for e in registry}
    assert list(entries) == ["mine", "other-2"]  # tiny dropped; 'other' is mine's alias
    assert entries["mine"].options == {"n_ctx": 2048}  # the entry's own options, not the folder's
    assert registry.notes == [
        f"{tmp_path / 'm' / 'other.gguf'}: served as 'other-2': 'other' is taken by [[models]] 'mine'",
        f"{path}: served as the [[models]] entry 'mine'",
    ]


def test_name_clashes_get_a_deterministic_suffix(tmp_path):
    for sub in ("a", "b", "c"):
        gguf(tmp_path / sub / "Dup.gguf")
    first = [(e.name, e.path) for e in build({"models_dir": str(tmp_path)})]
    assert first == [
        ("dup", str(tmp_path / "a" / "Dup.gguf")),
        ("dup-2", str(tmp_path / "b" / "Dup.gguf")),
        ("dup-3", str(tmp_path / "c" / "Dup.gguf")),
    ]
    assert [(e.name, e.path) for e in build({"models_dir": str(tmp_path)})] == first


def test_a_file_under_two_listed_folders_is_one_model(tmp_path):
    gguf(tmp_path / "sub" / "one.gguf")
    assert [e.name for e in build({"models_dir": [str(tmp_path), str(tmp_path / "sub")]})] == [
        "one"
    ]


def test_a_missing_folder_is_a_config_problem(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError) as caught:
        build({"models_dir": [str(tmp_path / "nope"), str(tmp_path), str(tmp_path / "file")]})
    assert caught.value.problems == [
        f"models_dir[0].path: no such folder: {tmp_path / 'nope'}",
        f"models_dir[2].path: not a folder: {tmp_path / 'file'}",
    ]


def test_models_dir_shapes_and_their_errors():
    pm = make_plugin_manager(load_entry_points=False)
    assert [d.path for d in config_mod.structure({"models_dir": "~/m"}, pm=pm).models_dir] == [
        "~/m"
    ]
    both = config_mod.structure(
        {"models_dir": ["a", {"path": "b", "preload": 1}]}, pm=None
    ).models_dir
    assert [(d.path, d.options) for d in both] == [("a", {}), ("b", {"preload": 1})]
    with pytest.raises(ConfigError) as caught:
        config_mod.structure(
            {"models_dir": [{"idle_ttl": "soon"}, 5, ""], "models": [{"name": "x"}]}, pm=pm
        )
    assert caught.value.problems == [
        "models[0].path: is required",
        "models_dir[0].path: is required",
        "models_dir[0].idle_ttl: 'soon' is not a duration: use seconds or e.g. '90s', '5m', '1h'",
        "models_dir[1]: expected a folder path or a table, got int 5",
        "models_dir[2].path: must not be empty",
    ]
    with pytest.raises(ConfigError) as caught:
        config_mod.structure({"models_dir": 3}, pm=pm)
    assert caught.value.problems == [
        "models_dir: expected a folder path, an array of them or tables, got int 3"
    ]


def test_a_projector_beside_a_model_is_its_mmproj(tmp_path):
    root = tmp_path / "models"
    gguf(root / "vision" / "llava-7b.gguf")
    gguf(root / "vision" / "mmproj-llava-7b-f16.gguf")
    gguf(root / "pair" / "gemma-3-4b-it-Q4_K_M.gguf")
    gguf(root / "pair" / "Qwen2.5-VL-3B-Instruct-Q4_K_M.gguf")
    gguf(root / "pair" / "mmproj-gemma-3-4b-it-f16.gguf")
    gguf(root / "pair" / "mmproj-Qwen2.5-VL-3B-Instruct-f16.gguf")
    gguf(root / "pair" / "unrelated.gguf")
    gguf(root / "plain" / "text-only.gguf")
    gguf(root / "set" / "chosen.gguf")
    gguf(root / "set" / "mmproj-chosen.gguf")
    registry = build(
        {
            "models_dir": [
                str(root / "vision"),
                str(root / "pair"),
                str(root / "plain"),
                {"path": str(root / "set"), "mmproj": "/elsewhere/mine.gguf"},
            ]
        }
    )
    entries = {e.name: e for e in registry}
    assert set(entries) == {
        "llava-7b",
        "gemma-3-4b-it-q4_k_m",
        "qwen2.5-vl-3b-instruct-q4_k_m",
        "unrelated",
        "text-only",
        "chosen",
    }
    assert entries["llava-7b"].option("mmproj") == str(root / "vision" / "mmproj-llava-7b-f16.gguf")
    assert entries["gemma-3-4b-it-q4_k_m"].option("mmproj") == str(
        root / "pair" / "mmproj-gemma-3-4b-it-f16.gguf"
    )
    assert entries["qwen2.5-vl-3b-instruct-q4_k_m"].option("mmproj") == str(
        root / "pair" / "mmproj-Qwen2.5-VL-3B-Instruct-f16.gguf"
    )
    # several projectors and none named like it: none
    assert entries["unrelated"].option("mmproj") is None
    assert entries["text-only"].option("mmproj") is None
    # the folder's own setting wins
    assert entries["chosen"].option("mmproj") == "/elsewhere/mine.gguf"


def test_a_models_expected_bytes_count_its_projector(tmp_path):
    model = gguf(tmp_path / "m" / "vision.gguf")
    projector = gguf(tmp_path / "m" / "mmproj-vision.gguf")
    (entry,) = list(build({"models_dir": str(tmp_path / "m")}))
    (plain,) = list(build({"models": [{"name": "p", "path": str(model)}]}))
    assert entry.expected_bytes() == plain.expected_bytes() + projector.stat().st_size


def test_a_pulled_models_projector_is_its_mmproj(tmp_path):
    from hoshikage_core.pull import store

    model = gguf(tmp_path / "store" / "blobs" / "sha256-aaaa")
    projector = gguf(tmp_path / "store" / "blobs" / "sha256-bbbb")
    common = {"aliases": [], "files": [str(model)], "size": 1, "digest": "sha256:aa"}
    store.write(
        tmp_path / "store",
        {"name": "llava", "path": str(model), "projector": str(projector), **common},
    )
    store.write(
        tmp_path / "store",
        {"name": "plain", "path": str(model), "projector": None, **common},
    )
    entries, _ = store.entries(tmp_path / "store", {})
    by_name = {e.name: e for e in entries}
    assert by_name["llava"].option("mmproj") == str(projector)
    assert by_name["plain"].option("mmproj") is None
