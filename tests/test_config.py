"""Configs: the original gpt-rs RON files load unmodified, typos fail loudly, presets are complete."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlxstory.formats.config import (
    DEFAULT_PRESET,
    PRESETS,
    ConfigError,
    ModelConfig,
    TrainConfig,
    load_config,
    load_preset,
    preset_path,
    save_config,
)


def test_the_original_model_file_loads_as_the_seed_model() -> None:
    config = load_config(ModelConfig, preset_path("seed.model.ron"))
    assert (config.vocab_size, config.embedding_size, config.context_length) == (2048, 128, 64)
    assert (config.head_count, config.block_count, config.feed_forward_multiplier) == (4, 8, 4)
    assert config.residual_dropout == 0.05


def test_the_original_train_file_keeps_its_values_and_gets_the_new_fields_defaults() -> None:
    config = load_config(TrainConfig, preset_path("original.train.ron"))
    assert config.learning_rate == 2e-4 and config.training_iterations == 60000
    assert config.evaluation_interval == 500 and config.contexts_per_batch == 64
    assert config.warmup_iterations == TrainConfig().warmup_iterations


def test_every_preset_loads_and_the_default_is_the_original_model_for_2000_steps() -> None:
    for name in PRESETS:
        model, train = load_preset(name)
        model.validate()
        train.validate()
    model, train = load_preset(DEFAULT_PRESET)
    assert model == load_config(ModelConfig, preset_path("seed.model.ron"))
    assert train.training_iterations == 2000


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    config = TrainConfig(learning_rate=3e-3, betas=(0.9, 0.99), seed=7)
    save_config(config, tmp_path / "train.ron")
    assert load_config(TrainConfig, tmp_path / "train.ron") == config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("(vocab_sise: 10)", "unknown field(s) vocab_sise"),
        ('(vocab_size: "big")', "field vocab_size must be int"),
        ("(embedding_size: 100, head_count: 3)", "not divisible by head_count"),
        ("(residual_dropout: 1.5)", "residual_dropout must be in [0, 1)"),
        ("(vocab_size: 10", "1:"),
        ("[1, 2]", "expected a struct"),
    ],
)
def test_bad_model_files_name_the_file_and_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "model.ron"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(ModelConfig, path)
    assert str(path) in str(error.value) and message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_missing_file_and_an_unknown_preset_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(ModelConfig, tmp_path / "nope.ron")
    with pytest.raises(ConfigError, match="unknown preset 'huge'; choose one of: tiny, small, seed, mac"):
        load_preset("huge")
