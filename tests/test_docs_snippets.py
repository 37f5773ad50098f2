"""The Python snippets in the docs run, so an API change that breaks a page fails a test.

Every ```python fence in docs/**/*.md and README.md runs in this process with fresh globals, in a fresh
empty working folder whose `../shared` is the repository's `../shared` (so a page can read the sample as
`../shared/data/tinystories-sample.parquet`, as the tests do). A fence opened with ```python no-run is
shown, not run: for what truly cannot run here (a Mac, the hub, a terminal). Snippets must use the new
module paths: the moved-module DeprecationWarning is an error here.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import mlxstory  # noqa: F401  isort: skip  (loads MKL before mlx.core)
import mlx.core as mx
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FENCE = re.compile(r"^(?P<indent>[ \t]*)```python(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                   re.MULTILINE | re.DOTALL)


def pages() -> list[Path]:
    return sorted((REPO / "docs").rglob("*.md")) + [REPO / "README.md"]


def snippets() -> list:
    found = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 2  # the snippet's first line
            indent = match["indent"]
            body = "".join(row[len(indent):] if row.startswith(indent) else row
                           for row in match["body"].splitlines(keepends=True))
            where = f"{page.relative_to(REPO)}:{line}"
            marks = [pytest.mark.skip(reason="marked no-run")] if "no-run" in match["info"].split() else []
            found.append(pytest.param(page, line, body, id=where, marks=marks))
    return found


def test_the_docs_have_snippets_to_run() -> None:
    runnable = [s for s in snippets() if not s.marks]
    assert len(runnable) >= 5, "the pages lost their runnable examples"


@pytest.mark.parametrize(("page", "line", "code"), snippets())
def test_snippet_runs(page: Path, line: int, code: str, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    if SHARED.exists():
        (tmp_path / "shared").symlink_to(SHARED, target_is_directory=True)
    monkeypatch.chdir(work)
    # Blank lines in front, so a traceback's line number is the page's.
    compiled = compile("\n" * (line - 1) + code, str(page), "exec")
    device = mx.default_device()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=r"mlxstory\.\S+ moved to", category=DeprecationWarning)
            exec(compiled, {"__name__": "__docs__"})
    finally:
        mx.set_default_device(device)
