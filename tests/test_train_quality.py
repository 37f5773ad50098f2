"""The model learns: val loss falls well below the unigram entropy of the real sample data.

A model that only learned token frequencies would sit at the unigram entropy; anything clearly below
it has learned context. The CI version trains 50 small steps (~5 s); the issue's 200-step `tiny`
run is the slow version: MLXSTORY_SLOW_TESTS=1 pytest tests/test_train_quality.py.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mlxstory.data.sources import load_texts
from mlxstory.data.token_store import TokenStore
from mlxstory.formats.config import load_preset
from mlxstory.training.events import EvalCompleted, StepCompleted
from mlxstory.training.run_dir import create_run
from mlxstory.training.train import train


def unigram_entropy(tokens: np.ndarray) -> float:
    """Nats per token of the best context-free model: the train split's token frequencies."""
    counts = np.bincount(tokens)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def train_and_measure(run: Path, sample_parquet: Path, **train_overrides) -> tuple[float, float, float]:
    model_config, train_config = load_preset("tiny")
    create_run(run, model_config=model_config, train_config=replace(train_config, **train_overrides),
               preset="tiny", texts=load_texts(str(sample_parquet)))
    entropy = unigram_entropy(np.asarray(TokenStore.open(run / "data").split_tokens("train")))
    events = list(train(run))
    first_loss = next(e.loss for e in events if isinstance(e, StepCompleted))
    final_val = [e for e in events if isinstance(e, EvalCompleted)][-1].val_loss
    return entropy, first_loss, final_val


def test_fifty_small_steps_fall_well_below_the_unigram_entropy(tmp_path: Path, sample_parquet: Path):
    entropy, first_loss, val_loss = train_and_measure(
        tmp_path / "run", sample_parquet, training_iterations=50, evaluation_interval=50,
        contexts_per_batch=16, warmup_iterations=10, learning_rate=5e-3, min_learning_rate=5e-4,
    )
    assert first_loss == pytest.approx(np.log(512), abs=0.1)  # starts near uniform over the vocab
    assert entropy > 5.0  # measured 5.61 nats for the sample at vocab 512
    assert val_loss < entropy - 0.5  # measured 4.78


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("MLXSTORY_SLOW_TESTS"), reason="set MLXSTORY_SLOW_TESTS=1 (1-2 min)")
def test_the_tiny_preset_200_steps_falls_far_below_the_unigram_entropy(tmp_path: Path, sample_parquet: Path):
    entropy, _, val_loss = train_and_measure(tmp_path / "run", sample_parquet)
    assert val_loss < entropy - 1.0  # measured: 3.77 vs 5.61 nats
