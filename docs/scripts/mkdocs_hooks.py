"""MkDocs hook: show ```python no-run fences as ordinary Python.

`no-run` tells tests/test_docs_snippets.py not to execute a snippet; Markdown's fence syntax has no room for
a bare word after the language, so the site drops it before rendering.
"""

from __future__ import annotations

import re

NO_RUN = re.compile(r"^([ \t]*```python)[ \t]+no-run[ \t]*$", re.MULTILINE)


def on_page_markdown(markdown: str, **_: object) -> str:
    return NO_RUN.sub(r"\1", markdown)
