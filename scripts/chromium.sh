#!/usr/bin/env bash
# The browser tests (tests/browser) drive Debian's chromium through Playwright, which cannot
# download a browser of its own here. `make test` runs this first, so a machine without it
# learns at once, not after the 9-minute run: as root with apt, chromium is installed (as
# .ci/run always did); otherwise this prints the one command to run and fails.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "chromium is missing (the browser tests need it): installing it with apt-get" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
    exit 0
fi
cat >&2 <<'MSG'
make test needs Debian's chromium for the browser tests (tests/browser). Install it with:

    sudo apt-get install -y chromium

(or run the suite without them: .venv/bin/python -m pytest -m 'not browser')
MSG
exit 1
