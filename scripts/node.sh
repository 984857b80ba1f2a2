#!/usr/bin/env bash
# The client tests (tests/clients) run the real agent programs, installed from npm at pinned
# versions (tests/support/clients.py), so they need node and npm. `make test` runs this first:
# as root with apt, Debian's nodejs and npm are installed (as scripts/chromium.sh does for
# chromium); otherwise this prints the one command to run and fails.
set -euo pipefail
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "node or npm is missing (the client tests need them): installing them with apt-get" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm
    exit 0
fi
cat >&2 <<'MSG'
make test needs node and npm for the client tests (tests/clients). Install them with:

    sudo apt-get install -y nodejs npm

(or run the suite without them: .venv/bin/python -m pytest -m 'not clients')
MSG
exit 1
