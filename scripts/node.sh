#!/usr/bin/env bash
# The client tests (tests/clients) run the real agent programs, installed from npm at pinned
# versions (tests/support/clients.py), so they need node (20 or later: Qwen Code runs on it;
# Claude Code and opencode ship native binaries) and npm. `make test` runs this first: as root
# with apt, Debian's nodejs and npm are installed (as scripts/chromium.sh does for chromium);
# otherwise, or when the node found is older, this prints what to do and fails.
set -euo pipefail
new_enough() {
    node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'
}
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    new_enough && exit 0
    cat >&2 <<MSG
make test needs node 20 or later for the client tests (tests/clients); this one is
$(node --version). Debian 13's nodejs, or NodeSource's packages for older releases, have it.
(or run the suite without them: .venv/bin/python -m pytest -m 'not clients')
MSG
    exit 1
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "node or npm is missing (the client tests need them): installing them with apt-get" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm
    new_enough && exit 0
    echo "apt's nodejs is $(node --version); the client tests need 20 or later (Debian 13's, or NodeSource's)" >&2
    exit 1
fi
cat >&2 <<'MSG'
make test needs node (20 or later) and npm for the client tests (tests/clients). Install them with:

    sudo apt-get install -y nodejs npm

(or run the suite without them: .venv/bin/python -m pytest -m 'not clients')
MSG
exit 1
