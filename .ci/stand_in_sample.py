"""Write a stand-in for ../shared/data/tinystories-sample.parquet where the shared folder is missing (GitHub).

The tests read a 2,450-story TinyStories sample from a folder beside the checkout, which is not part of the
repository. On a CI runner without it, this writes 2,450 stories of the built-in demo corpus in the same
shape (one `text` column) at that path, so the suite runs; the figures in the docs come from the real sample.

    python .ci/stand_in_sample.py ../shared/data/tinystories-sample.parquet     # needs pyarrow

The demo corpus module is loaded by file path: this runs before the package is installed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
STORIES = 2450  # the real sample's size; tests/test_sources.py counts them


def main(out: Path) -> None:
    if out.exists():
        sys.exit(f"error: {out} exists; the stand-in never replaces a real sample")
    module_path = REPO / "mlxstory" / "data" / "demo_corpus.py"
    spec = importlib.util.spec_from_file_location("demo_corpus", module_path)
    demo = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = demo  # dataclasses look their module up while the class is made
    spec.loader.exec_module(demo)
    stories = demo.generate_stories(count=STORIES, seed=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": stories}), out)
    print(f"{out}: {len(stories)} demo-corpus stories standing in for the TinyStories sample")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python .ci/stand_in_sample.py OUT.parquet")
    main(Path(sys.argv[1]))
