"""Registering llama.cpp RPC servers (``rpc-server``) as offload devices.

llama.cpp offloads to every registered device; an RPC server becomes one once its endpoint
is added through the RPC backend's registry. That needs a build with ``-DGGML_RPC=on``.
Each endpoint is registered once per process.

The registration must reach the ggml that ``libllama`` links. A wheel cannot hold symlinks,
so llama-cpp-python's ``lib/`` has ``libggml.so`` and ``libggml.so.0`` as two copies of one
file; ``llama_cpp._ggml`` loads the first, ``libllama`` the second (its ``DT_NEEDED``), and
each copy keeps its own device registry. Registering through ``llama_cpp._ggml`` therefore
added the RPC device where llama.cpp never looked, and every layer stayed local.
:func:`_libllama_ggml` opens the file ``libllama`` really uses.
"""

from __future__ import annotations

import ctypes
import socket
import threading

_registered: set[str] = set()
_lock = threading.Lock()


class RPCUnavailable(RuntimeError):
    """RPC servers were asked for but cannot be used; the message says why."""


def _libllama_ggml():
    """The ``libggml`` that ``libllama`` loaded (the same file again is the same handle)."""
    import os

    import llama_cpp

    lib_dir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    for name in ("libggml.so.0", "libggml.0.dylib"):
        path = os.path.join(lib_dir, name)
        if os.path.exists(path):
            return ctypes.CDLL(path)
    from llama_cpp._ggml import libggml  # one file only: there is no second copy

    return libggml


def register_rpc_servers(servers: list[str]) -> None:
    import llama_cpp

    libggml = _libllama_ggml()

    if not llama_cpp.llama_supports_rpc():
        raise RPCUnavailable(
            "rpc_servers is set but this llama.cpp build has no RPC support; rebuild with "
            'CMAKE_ARGS="-DGGML_RPC=on" pip install --force-reinstall --no-cache-dir llama-cpp-python'
        )
    libggml.ggml_backend_reg_by_name.argtypes = [ctypes.c_char_p]
    libggml.ggml_backend_reg_by_name.restype = ctypes.c_void_p
    libggml.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    libggml.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    with _lock:
        reg = libggml.ggml_backend_reg_by_name(b"RPC")
        if not reg:
            raise RPCUnavailable("the RPC backend is not registered in this llama.cpp build")
        add = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)
        add_server = libggml.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_rpc_add_server")
        add_device = libggml.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_rpc_add_device")
        for endpoint in servers:
            if endpoint in _registered:
                continue
            if add_server:  # newer llama.cpp: one backend registry per server
                handle = add(add_server)(endpoint.encode())
                register = libggml.ggml_backend_register
            elif add_device:  # older llama.cpp: one device per server
                handle = add(add_device)(endpoint.encode())
                register = libggml.ggml_backend_device_register
            else:
                raise RPCUnavailable("this llama.cpp build's RPC backend cannot add servers")
            if not handle:
                raise RPCUnavailable(f"could not connect to the RPC server {endpoint}")
            register.argtypes = [ctypes.c_void_p]
            register(handle)
            _registered.add(endpoint)


#: Seconds a TCP connect to an RPC server may take before the load says it is unreachable.
CONNECT_TIMEOUT = 3.0


def check_reachable(servers: list[str], timeout: float = CONNECT_TIMEOUT) -> list[str]:
    """The problems connecting to each ``host:port`` (empty when every one accepts)."""
    problems = []
    for endpoint in servers:
        host, _, port = endpoint.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                pass
        except (OSError, ValueError) as exc:
            problems.append(f"{endpoint} ({getattr(exc, 'strerror', None) or exc})")
    return problems
