"""Make the web page's screenshot for docs/ui.md (docs/img/timeline.png).

    .venv/bin/python tools/screenshot_ui.py [--out docs/img/timeline.png]

Starts ``timeline serve`` on a scratch store (``REDIS_URL`` when set, else the embedded Redis
server), loads the bundled demo events, opens a week of Elon Musk's timeline in Debian's Chromium
(``TIMELINE_CHROMIUM``, default /usr/bin/chromium) and saves what a 1280 x 1000 window shows.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "timeline" / "data" / "demo_events.jsonl"
PAGE = "/ui/entities/elon-musk?since=2025-05-20&until=2025-05-25"  # a week: day-long entries wide enough to label


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(folder: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TIMELINE_DB": str(folder / "timeline.db"), "TIMELINE_STREAM": f"screenshot:{os.getpid()}"}
    command = [str(Path(sys.executable).parent / "timeline"), "serve", "--port", str(port)]
    return subprocess.Popen(command, env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_healthy(base: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"timeline serve did not become healthy at {base}")


def shoot(base: str, out: Path) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=os.environ.get("TIMELINE_CHROMIUM", "/usr/bin/chromium"))
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(base + PAGE)
        page.locator("#entries > li").first.wait_for()
        page.mouse.move(0, 0)
        page.wait_for_timeout(300)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "timeline.png")
    out = parser.parse_args().out
    with tempfile.TemporaryDirectory(prefix="screenshot-") as scratch:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = serve(Path(scratch), port)
        try:
            wait_healthy(base)
            events = [line for line in DEMO.read_text().splitlines() if line.strip()]
            answer = httpx.post(f"{base}/events?wait=true", content="[" + ",".join(events) + "]", timeout=60)
            answer.raise_for_status()
            shoot(base, out)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"{out.resolve().relative_to(ROOT) if out.resolve().is_relative_to(ROOT) else out} ({out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
