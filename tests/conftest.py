from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE_PARQUET = REPO.parent / "shared" / "data" / "tinystories-sample.parquet"


@pytest.fixture(scope="session")
def sample_parquet() -> Path:
    """The shared real TinyStories sample (2,450 stories); never copied into the project."""
    if not SAMPLE_PARQUET.exists():
        pytest.fail(f"missing {SAMPLE_PARQUET}: the shared data folder must sit beside the project")
    return SAMPLE_PARQUET


@pytest.fixture(scope="session")
def sample_texts(sample_parquet: Path) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_table(sample_parquet).column("text").to_pylist()
