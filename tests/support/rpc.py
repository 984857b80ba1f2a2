"""llama.cpp's ``ggml-rpc-server`` on loopback, for the RPC tests.

The executable comes from ``$HOSHIKAGE_RPC_SERVER`` or from ``scripts/llama-cpp.sh
rpc-server`` (built by ``make rpc-server``/``make test`` from the same sources and flags as
the installed llama-cpp-python wheel, linked against its ggml).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import attrs

from tests.support.server import free_port

ROOT = Path(__file__).resolve().parents[2]


def find_rpc_server() -> str:
    """The path of ``ggml-rpc-server``; raises RuntimeError saying how to build it."""
    exe = os.environ.get("HOSHIKAGE_RPC_SERVER")
    if exe:
        if not os.access(exe, os.X_OK):
            raise RuntimeError(f"HOSHIKAGE_RPC_SERVER={exe} is not an executable")
        return exe
    script = ROOT / "scripts" / "llama-cpp.sh"
    cache = subprocess.run(
        [str(script), "dir"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if not list(Path(cache).glob("wheel/*.whl")):
        raise RuntimeError(
            f"ggml-rpc-server is not built (no llama-cpp-python wheel in {cache} for these CMAKE_ARGS): "
            "run `make install rpc-server`"
        )
    done = subprocess.run([str(script), "rpc-server"], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"building ggml-rpc-server failed:\n{done.stderr}")
    return done.stdout.strip()


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies (no stray servers)."""
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@attrs.define
class RpcServer:
    """One ``ggml-rpc-server`` process on 127.0.0.1:``port``."""

    exe: str
    port: int = attrs.field(factory=free_port)
    #: Its CPU threads. One by default: spinning ggml threads on a shared 2-core machine
    #: slow every process down by orders of magnitude.
    threads: int = 1
    log_path: Path | None = None
    process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, log_path: Path, timeout: float = 30.0) -> RpcServer:
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.exe, "-H", "127.0.0.1", "-p", str(self.port), "-t", str(self.threads)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"ggml-rpc-server exited with {self.process.returncode}:\n{self.log()}"
                )
            if _accepting(self.port):
                return self
            time.sleep(0.05)
        raise TimeoutError(
            f"ggml-rpc-server did not listen on {self.endpoint} within {timeout}s:\n{self.log()}"
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def rss(self) -> int:
        """Resident bytes of the server process (its remote buffers live there)."""
        import psutil

        return psutil.Process(self.process.pid).memory_info().rss

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
