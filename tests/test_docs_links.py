"""The README's links and pictures lead somewhere, and the pictures show the dashboard as it is."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|\bsrc=\"([^\"]+)\"")


def relative_targets(markdown: str) -> list[str]:
    targets = [a or b for a, b in LINK.findall(markdown)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I) and not t.startswith("#")]


def test_every_relative_link_in_the_readme_points_to_a_file() -> None:
    targets = relative_targets((REPO / "README.md").read_text(encoding="utf-8"))
    assert targets, "the README links nowhere"
    missing = [t for t in targets if not (REPO / t.split("#")[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_the_link_finder_sees_links_images_and_skips_urls() -> None:
    text = ('[a](docs/a.md) [b](docs/b.md#part "title") ![c](docs/images/c.png) <img src="d.png"> '
            "[e](https://example.com) [f](#anchor) [g](mailto:x@y)")
    assert relative_targets(text) == ["docs/a.md", "docs/b.md#part", "docs/images/c.png", "d.png"]


def _renderer():
    path = REPO / "docs" / "scripts" / "render_dashboard.py"
    spec = importlib.util.spec_from_file_location("render_dashboard", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("svg", "png"), list(_renderer().PICTURES.items()))
def test_dashboard_pictures_match_their_snapshots(svg: str, png: str) -> None:
    render = _renderer()
    made_from = render.png_source(render.IMAGES / png)
    assert made_from == render.svg_sha256(render.SNAPSHOTS / svg), (
        f"docs/images/{png} was not rendered from the current {svg}: "
        "run `python docs/scripts/render_dashboard.py` (needs chromium) and commit the pictures"
    )
