"""Facts about the installed llama.cpp build, read from llama-cpp-python's package folder
without importing it (importing a CUDA build fails when the CUDA libraries are missing)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_lib_dir() -> Path | None:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "lib"


def is_cuda_build() -> bool:
    """Whether the installed llama-cpp-python ships llama.cpp's CUDA backend (checked
    without importing it, which fails when the CUDA libraries are missing)."""
    lib_dir = package_lib_dir()
    return bool(lib_dir and list(lib_dir.glob("libggml-cuda*")))


#: llama.cpp's GPU backends, by the library each builds.
GPU_BACKENDS = ("cuda", "hip", "musa", "vulkan", "metal", "sycl", "opencl")


def is_gpu_build() -> bool:
    """Whether the installed llama-cpp-python ships a GPU backend of llama.cpp."""
    lib_dir = package_lib_dir()
    return bool(lib_dir and any(list(lib_dir.glob(f"libggml-{name}*")) for name in GPU_BACKENDS))
