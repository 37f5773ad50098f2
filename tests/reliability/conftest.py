from __future__ import annotations

from pathlib import Path

import pytest

from .faults import TALLY


@pytest.fixture(scope="session")
def small_store(tmp_path_factory: pytest.TempPathFactory, sample_texts: list[str]) -> Path:
    """300 real stories tokenized once (vocab 512, the tiny preset's): runs here train on it with
    `--data STORE` instead of tokenizing again in every killed process. Read-only."""
    from mlxstory.data.sources import SourceTexts
    from mlxstory.data.token_store import build_token_store

    path = tmp_path_factory.mktemp("reliability") / "store"
    build_token_store(path, SourceTexts(sample_texts[:300], "sample-300", "300 TinyStories"), 512)
    return path


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001
    if TALLY.injected:
        terminalreporter.write_line(TALLY.summary())
