"""`mlxstory dashboard RUN --web` in a real headless Chromium (Debian's `chromium`, driven by playwright).

The browser draws the terminal on a canvas, so what it shows is checked on what it received (the
websocket's terminal output) and kept as a screenshot: under the test's tmp folder always, and in
docs/images/ when MLXSTORY_DOCS_SCREENSHOT=1 (how the docs' picture is made).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlxstory.cli import app

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and Path(p).exists()), None)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_line(process: subprocess.Popen, pattern: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if pattern in line:
            return line
        if not line and process.poll() is not None:
            break
    pytest.fail(f"the server never printed {pattern!r} (exit code {process.poll()})")


def test_missing_textual_serve_is_one_error_line(tiny_trained_run: Path, monkeypatch: pytest.MonkeyPatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "textual_serve"
                        else real(name, *a))
    result = CliRunner().invoke(app, ["dashboard", str(tiny_trained_run), "--web"])
    assert result.exit_code == 1
    assert result.stderr == 'error: the browser dashboard needs textual-serve: pip install "mlxstory[web]"\n'


def test_a_taken_port_is_one_error_line(tiny_trained_run: Path):
    pytest.importorskip("textual_serve")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["dashboard", str(tiny_trained_run), "--web", "--port", str(port)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: cannot serve on 127.0.0.1:{port}")
    assert result.stderr.count("\n") == 1 and "--port" in result.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (apt-get install chromium)")
def test_the_browser_shows_the_runs_step_and_loss_and_samples_on_g(tiny_trained_run: Path, tmp_path: Path):
    pytest.importorskip("textual_serve", reason="the web extra is not installed")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    records = [json.loads(line) for line in (tiny_trained_run / "metrics.jsonl").read_text().splitlines()]
    last_eval = [r for r in records if r["event"] == "eval"][-1]
    total = records[0]["total_steps"]

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlxstory", "dashboard", str(tiny_trained_run), "--web", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200", "PLAYWRIGHT_BROWSERS_PATH": str(tmp_path / "no-downloads")},
    )
    received = bytearray()
    try:
        url = re.search(r"http://\S+", wait_for_line(server, "serving the dashboard", timeout=30)).group(0)
        assert url == f"http://127.0.0.1:{port}"
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                # Nothing but the dashboard itself: the page also asks Google for a font.
                page.route(re.compile(r"^https?://(?!127\.0\.0\.1)"), lambda route: route.abort())
                page.on("websocket", lambda ws: ws.on(
                    "framereceived", lambda payload: received.extend(
                        payload if isinstance(payload, bytes) else payload.encode())))

                def screen_shows(*texts: str, timeout: float = 20) -> str:
                    deadline = time.monotonic() + timeout
                    while time.monotonic() < deadline:
                        page.wait_for_timeout(200)
                        text = ANSI.sub(b"", bytes(received)).decode("utf-8", "replace")
                        if all(t in text for t in texts):
                            return text
                    pytest.fail(f"the browser never got {texts}; it got: {text[-2000:]!r}")

                page.goto(url)
                screen_shows(f"step {total}/{total}", f"val {last_eval['val_loss']:.3f}", "loss")
                page.locator("#terminal").click()
                page.keyboard.press("g")  # a story from the latest checkpoint, in this visitor's process
                screen_shows(f"sample · step {total}", " tokens · ")
                page.wait_for_timeout(500)  # let the canvas catch up with the last frame
                shot = tmp_path / "web-dashboard.png"
                page.screenshot(path=str(shot))
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert shot.stat().st_size > 20_000  # a drawn dashboard, not a blank page
    if os.environ.get("MLXSTORY_DOCS_SCREENSHOT") == "1":
        (REPO / "docs" / "images").mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, REPO / "docs" / "images" / "web-dashboard.png")
