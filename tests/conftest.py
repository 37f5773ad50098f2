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


@pytest.fixture(scope="session")
def tiny_trained_run(tmp_path_factory: pytest.TempPathFactory, sample_texts: list[str]) -> Path:
    """A `tiny` run trained 5 steps on 600 real stories (about a second): for generate/eval CLI tests.

    Shared and read-only: tests that change a run copy it first.
    """
    from dataclasses import replace

    from mlxstory.data.sources import SourceTexts
    from mlxstory.formats.config import load_preset
    from mlxstory.training.run_dir import create_run
    from mlxstory.training.train import train

    model_config, train_config = load_preset("tiny")
    train_config = replace(train_config, training_iterations=5, evaluation_interval=5, warmup_iterations=1)
    path = tmp_path_factory.mktemp("runs") / "tiny"
    texts = SourceTexts(sample_texts[:600], name="sample-600", description="600 TinyStories")
    create_run(path, model_config=model_config, train_config=train_config, preset="tiny", texts=texts)
    for _ in train(path):
        pass
    return path
