from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import mlxstory  # noqa: F401  isort: skip  (loads MKL before mlx.core)
import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlxstory.data.tokenizer import Tokenizer
from mlxstory.errors import CheckpointError
from mlxstory.formats.config import ModelConfig, save_config
from mlxstory.model import GPT
from mlxstory.training.checkpoint import TrainerState, load_model, read_latest, save_checkpoint
from mlxstory.training.optimizer import AdamW

CONFIG = ModelConfig(vocab_size=300, embedding_size=32, context_length=16, head_count=2, block_count=1)


@pytest.fixture(scope="module")
def tokenizer(sample_texts: list[str]) -> Tokenizer:
    return Tokenizer.train(sample_texts[:200], vocab_size=CONFIG.vocab_size)


@pytest.fixture
def run(tmp_path: Path, tokenizer: Tokenizer) -> Path:
    """A run directory as `create_run` leaves it, minus the data: configs and tokenizer."""
    save_config(CONFIG, tmp_path / "model.ron")
    tokenizer.save(tmp_path / "tokenizer.ron")
    return tmp_path


def save(run: Path, step: int, val_loss: float | None = None, seed: int = 0) -> tuple[GPT, Path]:
    mx.random.seed(seed)
    model = GPT(CONFIG)
    optimizer = AdamW(model.trainable_parameters(), model.decay_mask())
    state = TrainerState(step=step, sampler={}, seed=seed, val_loss=val_loss)
    return model, save_checkpoint(run, model, optimizer.flat_state(), state)


def weights_of(model) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


def test_load_model_from_the_run_dir_or_a_checkpoint_file(run: Path):
    saved, path = save(run, 5)
    loaded = load_model(run)
    assert loaded.step == 5 and loaded.checkpoint_path == path and loaded.run_dir == run
    assert not loaded.model.training and loaded.model_config == CONFIG
    for name, value in weights_of(saved).items():
        np.testing.assert_array_equal(weights_of(loaded.model)[name], value)
    assert load_model(path).step == 5
    tokens = mx.array([loaded.tokenizer.encode("Once upon a time")])
    assert loaded.model(tokens).shape == (1, tokens.shape[1], CONFIG.vocab_size)


def test_keeps_the_two_newest_and_the_best_and_points_latest_at_the_newest(run: Path):
    for step, val in [(1, 3.0), (2, 4.0), (3, None), (4, 6.0)]:
        save(run, step, val)
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == [
        "latest.json",
        "step-000001.json", "step-000001.optimizer.safetensors", "step-000001.safetensors",
        "step-000003.json", "step-000003.optimizer.safetensors", "step-000003.safetensors",
        "step-000004.json", "step-000004.optimizer.safetensors", "step-000004.safetensors",
    ]
    latest = read_latest(run)
    assert latest["step"] == 4 and latest["best"]["step"] == 1 and latest["best"]["val_loss"] == 3.0


@pytest.mark.parametrize("point", ["weights", "optimizer", "state"])
def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one_loadable(run: Path, point: str):
    save(run, 1, 2.5)
    script = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_checkpoint as t; "
        f"t.save(t.Path({str(run)!r}), 2, 2.0, seed=1)"
    )
    env = {**os.environ, "MLXSTORY_FAULT_AT": point}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert result.returncode == -9, result.stderr.decode()[-500:]
    assert read_latest(run)["step"] == 1
    assert load_model(run).step == 1
    save(run, 3, 1.0)  # the next save clears what the killed writer left: temp files, half checkpoints
    names = {p.name for p in (run / "checkpoints").iterdir()} - {"latest.json"}
    steps = {name[:11] for name in names}
    suffixes = (".json", ".safetensors", ".optimizer.safetensors")
    assert names == {f"{step}{suffix}" for step in steps for suffix in suffixes}


def corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "random":
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    elif how == "pickle":  # a pickle payload renamed .safetensors must be refused, never run
        path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    else:
        path.write_bytes(b"")


@pytest.mark.parametrize("how", ["truncated", "random", "pickle", "empty"])
def test_a_damaged_weights_file_is_one_clear_error(run: Path, how: str):
    _, path = save(run, 1)
    corrupt(path, how)
    with pytest.raises(CheckpointError, match="not a readable safetensors file") as error:
        load_model(run)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_weights_for_another_config_name_the_mismatched_shape(run: Path):
    save(run, 1)
    save_config(ModelConfig(**{**CONFIG.__dict__, "embedding_size": 64}), run / "model.ron")
    with pytest.raises(CheckpointError, match=r"token_embedding.weight has shape \(300, 32\).*\(300, 64\)"):
        load_model(run)


def test_a_tokenizer_from_another_run_is_refused(run: Path, sample_texts: list[str]):
    save(run, 1)
    Tokenizer.train(sample_texts[:200], vocab_size=280).save(run / "tokenizer.ron")
    with pytest.raises(CheckpointError, match="280 tokens but model.ron says vocab_size 300"):
        load_model(run)


def test_missing_pieces_are_clear_errors(run: Path, tmp_path: Path):
    with pytest.raises(CheckpointError, match="no checkpoint yet"):
        load_model(run)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nowhere.safetensors")
    _, path = save(run, 1)
    (run / "tokenizer.ron").unlink()
    with pytest.raises(CheckpointError, match="no tokenizer.ron"):
        load_model(path)
    (run / "checkpoints" / "latest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable checkpoint pointer"):
        load_model(run)


def test_trainer_state_round_trips_through_json(run: Path):
    rng = np.random.default_rng(3)
    state = TrainerState(step=7, sampler=rng.bit_generator.state, seed=3, best_val_loss=1.5, tokens_seen=99)
    mx.random.seed(0)
    model = GPT(CONFIG)
    save_checkpoint(run, model, AdamW(model.trainable_parameters(), model.decay_mask()).flat_state(), state)
    values = json.loads((run / "checkpoints" / "step-000007.json").read_text())
    restored = TrainerState.from_dict(values, "x")
    assert restored == state
    again = np.random.default_rng(0)
    again.bit_generator.state = restored.sampler
    assert again.integers(0, 1 << 30) == rng.integers(0, 1 << 30)
