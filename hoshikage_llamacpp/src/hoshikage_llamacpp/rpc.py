"""Registering llama.cpp RPC servers (``rpc-server``) as offload devices.

llama.cpp offloads to every registered device; an RPC server becomes one once its endpoint
is added through the RPC backend's registry. That needs a build with ``-DGGML_RPC=on``.
Each endpoint is registered once per process.
"""

from __future__ import annotations

import ctypes
import threading

_registered: set[str] = set()
_lock = threading.Lock()


class RPCUnavailable(RuntimeError):
    """RPC servers were asked for but cannot be used; the message says why."""


def register_rpc_servers(servers: list[str]) -> None:
    import llama_cpp
    from llama_cpp._ggml import libggml

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
