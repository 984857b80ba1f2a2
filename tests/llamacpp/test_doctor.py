"""``hoshikage doctor`` facts from the llamacpp plugin, on this machine's real build."""

from __future__ import annotations

import platform

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from hoshikage_core.config import structure  # noqa: E402
from hoshikage_core.plugins import make_plugin_manager  # noqa: E402
from hoshikage_llamacpp.lifecycle.doctor import cuda_target_dir, loader_path  # noqa: E402

from hoshikage_llamacpp import plugin  # noqa: E402


@pytest.fixture
def checks(tiny_model_path, tmp_path):
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(plugin, name="llamacpp")
    (tmp_path / "junk.gguf").write_text("not a model")
    config = structure(
        {
            "models": [
                {"name": "tiny", "path": str(tiny_model_path)},
                {"name": "gone", "path": str(tmp_path / "gone.gguf")},
                {"name": "junk", "path": str(tmp_path / "junk.gguf")},
            ]
        },
        pm=pm,
    )
    return {c.name: c for group in pm.hook.doctor_checks(config=config) for c in group}


def gpu_build() -> bool:
    """A GPU backend library in the installed build (llama_supports_gpu_offload() is also
    true for a CPU-only build with RPC)."""
    from pathlib import Path

    lib = Path(llama_cpp.__file__).parent / "lib"
    return any(
        any(lib.glob(f"libggml-{name}*"))
        for name in ("cuda", "hip", "musa", "vulkan", "metal", "sycl", "opencl")
    )


def test_gpu_offload_matches_the_build(checks):
    gpu = gpu_build()
    check = checks["GPU offload"]
    assert check.ok is (True if gpu else None)
    assert check.source == "llamacpp"
    if not gpu:
        assert "DGGML_CUDA=on" in check.hint


def test_cuda_libraries_are_reported(checks):
    gpu = gpu_build()
    for name in ("libcudart", "libcublas", "libcuda"):
        check = checks[name]
        assert check.detail
        if not gpu:  # on a CPU build a missing CUDA library is information, not a failure
            assert check.ok in (None,)


def test_loader_lookup_finds_a_real_library():
    path = loader_path("z")  # zlib: present wherever Python is
    assert path is not None and "/libz.so" in path
    assert loader_path("definitely-not-a-library") is None


def test_cuda_hint_names_this_architecture():
    machine = platform.machine()
    assert cuda_target_dir().startswith("/usr/local/cuda/targets/")
    if machine == "x86_64":
        assert cuda_target_dir() == "/usr/local/cuda/targets/x86_64-linux/lib"


def test_rpc_support_is_reported_from_the_build(checks):
    check = checks["RPC offload"]
    if llama_cpp.llama_supports_rpc():
        assert (
            check.detail == "supported by this build" and check.ok is None
        )  # no model needs it here
    else:
        assert "not in this build" in check.detail and check.ok is None
