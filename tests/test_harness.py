"""The harness a new machine runs: ``make test`` checks for chromium first (installing it as
root with apt, else stopping at once with the command to run), and the per-test timeout
really ends a test blocked in ``os.waitpid`` or ``select``, even when SIGINT is ignored (as
in a non-interactive shell's background job)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "chromium.sh"


def _fake_bin(tmp_path: Path, **scripts: str) -> Path:
    """A PATH of the few tools the script uses, plus fakes for ``scripts``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "cat", "env"):
        real = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        (bin_dir / tool).symlink_to(real)
    for name, body in scripts.items():
        path = bin_dir / name.replace("_", "-")
        path.write_text("#!/bin/bash\n" + body)
        path.chmod(0o755)
    return bin_dir


def _run(bin_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT)],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_without_chromium_a_user_is_told_the_one_command(tmp_path):
    bin_dir = _fake_bin(tmp_path, id="echo 1000", apt_get="exit 99")
    started = time.monotonic()
    result = _run(bin_dir)
    assert result.returncode == 1 and time.monotonic() - started < 5
    assert "sudo apt-get install -y chromium" in result.stderr


def test_without_chromium_root_with_apt_installs_it(tmp_path):
    log = tmp_path / "apt.log"
    # The fake apt-get "installs" chromium by putting an executable beside itself.
    fake = f"{tmp_path / 'bin' / 'chromium'}"
    install = f'echo "$@" >> {log}\nif [ "$1" = install ]; then /bin/cp /bin/true {fake}; fi\n'
    bin_dir = _fake_bin(tmp_path, id="echo 0", apt_get=install)
    result = _run(bin_dir)
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == ["update", "install -y chromium"]
    assert _run(bin_dir).returncode == 0  # found now: nothing more to do
    assert log.read_text().count("install") == 1


def test_make_test_checks_chromium_before_anything_else():
    makefile = (ROOT / "Makefile").read_text()
    rule = next(line for line in makefile.splitlines() if line.startswith("test:"))
    assert rule.split(":", 1)[1].split()[0] == "chromium"


@pytest.mark.timeout(120)
def test_the_per_test_timeout_ends_tests_blocked_in_waitpid_and_select(tmp_path):
    (tmp_path / "test_blocked.py").write_text(
        textwrap.dedent(
            """
            import os, select, signal, subprocess, sys

            def test_waitpid():
                child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
                try:
                    os.waitpid(child.pid, 0)
                finally:
                    child.kill()

            def test_select():
                r, _w = os.pipe()
                select.select([r], [], [])

            def test_waitpid_on_a_child_that_ignores_sigint():
                pid = os.fork()
                if pid == 0:
                    os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(120)"])
                try:
                    os.kill(pid, signal.SIGINT)
                    os.waitpid(pid, 0)
                finally:
                    os.kill(pid, signal.SIGKILL)
            """
        )
    )
    config = (ROOT / "pyproject.toml").read_text()
    method = config.split('timeout_method = "', 1)[1].split('"', 1)[0]
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "timeout=2",
            "-o",
            f"timeout_method={method}",
            str(tmp_path / "test_blocked.py"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
        # As a background job of a non-interactive shell: SIGINT ignored, and inherited.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        env={**os.environ, "PYTHONPATH": ""},
    )
    took = time.monotonic() - started
    assert "3 failed" in result.stdout, result.stdout[-2000:]
    assert result.stdout.count("Timeout (>2.0s)") >= 3
    assert took < 60, took
