"""Render the dashboard pictures in docs/images/ from the dashboard's SVG snapshot tests.

The pictures are never drawn by hand: `tests/test_tui.py::test_dashboard_snapshot` renders the dashboard
on a replayed run into tests/__snapshots__/test_tui/*.svg, and this script screenshots those SVGs with
headless Chromium (the SVG's own fonts and `textLength`s lay the cells out as a terminal would; cairosvg
set the text proportionally and broke the box lines). Each PNG records the SHA-256 of the SVG it was
made from, so tests/test_docs_links.py notices a picture that no longer matches its snapshot.

    python docs/scripts/render_dashboard.py            # needs chromium (Debian: apt-get install chromium)

Run it after updating the snapshots (`pytest tests/test_tui.py --snapshot-update`).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SNAPSHOTS = REPO / "tests" / "__snapshots__" / "test_tui"
IMAGES = REPO / "docs" / "images"
# snapshot file -> picture (80x24 is the smallest terminal the dashboard is made for, 120x36 a roomy one)
PICTURES = {
    "test_dashboard_snapshot[size0].svg": "dashboard-80x24.png",
    "test_dashboard_snapshot[size1].svg": "dashboard-120x36.png",
}
SOURCE_KEY = b"mlxstory-source-sha256"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def svg_sha256(svg: Path) -> str:
    return hashlib.sha256(svg.read_bytes()).hexdigest()


def png_source(png: Path) -> str | None:
    """The SHA-256 of the SVG a picture was rendered from (its tEXt chunk), or None."""
    data = png.read_bytes()
    offset = 8
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        if kind == b"tEXt" and body.startswith(SOURCE_KEY + b"\0"):
            return body[len(SOURCE_KEY) + 1:].decode("ascii")
        offset += 12 + length
    return None


def _with_source(png: bytes, digest: str) -> bytes:
    """The PNG with a tEXt chunk naming its source inserted after IHDR (chunk 1, always 25 bytes)."""
    body = b"tEXt" + SOURCE_KEY + b"\0" + digest.encode("ascii")
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    return png[:33] + chunk + png[33:]


def _browser() -> str:
    for name in BROWSERS:
        if found := shutil.which(name):
            return found
    tried = ", ".join(BROWSERS)
    sys.exit(f"error: no Chromium found (tried {tried}); install it, e.g. apt-get install chromium")


def render(svg: Path, png: Path, browser: str) -> None:
    view_box = re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg.read_text())
    width, height = (float(v) for v in view_box.groups())
    with tempfile.TemporaryDirectory() as scratch:
        # Chromium writes where it is told but reads the SVG by URL: a copy without brackets in its name.
        page = Path(scratch) / "dashboard.svg"
        shutil.copyfile(svg, page)
        shot = Path(scratch) / "shot.png"
        subprocess.run(
            [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--force-device-scale-factor=1", f"--window-size={round(width)},{round(height + 0.5)}",
             f"--user-data-dir={scratch}/profile", f"--screenshot={shot}", page.as_uri()],
            check=True, capture_output=True, timeout=120,
        )
        png.write_bytes(_with_source(shot.read_bytes(), svg_sha256(svg)))


def main() -> None:
    browser = _browser()
    IMAGES.mkdir(parents=True, exist_ok=True)
    for svg_name, png_name in PICTURES.items():
        render(SNAPSHOTS / svg_name, IMAGES / png_name, browser)
        print(f"{IMAGES / png_name} <- {SNAPSHOTS / svg_name}")


if __name__ == "__main__":
    main()
