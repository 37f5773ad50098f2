"""Model and training configs, their RON files, and the named presets.

Field names keep the original gpt-rs names so its RON files load unmodified; fields the original
did not have get defaults (mlxstory's recipe: warmup + cosine decay, AdamW, clipping by norm).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from mlxstory.errors import MlxstoryError
from mlxstory.formats import ron

# name -> (model file, train file or None for TrainConfig's defaults), all in mlxstory/formats/presets.
PRESET_FILES: dict[str, tuple[str, str | None]] = {
    "tiny": ("tiny.model.ron", "tiny.train.ron"),  # minutes on a laptop CPU; tests and demos
    "small": ("seed.model.ron", None),  # the original's model, 2,000 steps of the default recipe
    "seed": ("seed.model.ron", "seed.train.ron"),  # the original's model and schedule sizes
    "mac": ("mac.model.ron", "mac.train.ron"),  # ~20M parameters for an M-series GPU
}
PRESETS = tuple(PRESET_FILES)
# Laptop-sized: the measured quality budget (2,000 steps of 64x64 tokens) on the original's model.
DEFAULT_PRESET = "small"


class ConfigError(MlxstoryError):
    """A config file or value that cannot be used; the message says where and what to do."""


@dataclass
class ModelConfig:
    vocab_size: int = 2048
    embedding_size: int = 128
    context_length: int = 64
    head_count: int = 4
    block_count: int = 8
    feed_forward_multiplier: int = 4
    embedding_dropout: float = 0.05
    attention_dropout: float = 0.05
    feed_forward_dropout: float = 0.05
    residual_dropout: float = 0.05
    activation: str = "relu"  # the original's; "gelu" is the option

    def validate(self) -> None:
        if self.embedding_size % self.head_count:
            raise ConfigError(
                f"embedding_size {self.embedding_size} is not divisible by head_count {self.head_count}: "
                "choose sizes where embedding_size % head_count == 0"
            )
        for name in ("vocab_size", "embedding_size", "context_length", "head_count", "block_count",
                     "feed_forward_multiplier"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model config field {name} must be at least 1, got {getattr(self, name)}")
        for name in ("embedding_dropout", "attention_dropout", "feed_forward_dropout", "residual_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model config field {name} must be in [0, 1), got {getattr(self, name)}")
        if self.activation not in ("relu", "gelu"):
            raise ConfigError(f"activation must be 'relu' or 'gelu', got {self.activation!r}")


@dataclass
class TrainConfig:
    learning_rate: float = 3e-3  # peak, after warmup; chosen by held-out bits/byte (benchmarks/quality.py)
    training_iterations: int = 2000
    evaluation_interval: int = 200
    evaluation_iterations: int = 5  # batches per eval split
    contexts_per_batch: int = 64
    warmup_iterations: int = 100
    min_learning_rate: float = 1e-4  # cosine decays to this at the last iteration
    weight_decay: float = 0.1  # weight matrices only
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # global norm; 0 disables
    gradient_accumulation: int = 1
    seed: int = 1337
    # Recompute each block in the backward pass instead of keeping its activations: about a third
    # more compute for far less memory (docs/memory.md). Trains with the plain path on every device.
    recompute_blocks: bool = False

    def validate(self) -> None:
        for name in ("training_iterations", "evaluation_interval", "evaluation_iterations",
                     "contexts_per_batch", "gradient_accumulation"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train config field {name} must be at least 1, got {getattr(self, name)}")
        if not (self.learning_rate > 0 and self.min_learning_rate >= 0):
            raise ConfigError(
                "learning_rate must be > 0 and min_learning_rate >= 0, "
                f"got {self.learning_rate} and {self.min_learning_rate}"
            )
        if self.warmup_iterations < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ConfigError("warmup_iterations, grad_clip and weight_decay must not be negative")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {self.betas}")


C = TypeVar("C", ModelConfig, TrainConfig)


def config_from_mapping(cls: type[C], values: dict[str, Any], where: str = "config") -> C:
    """Build a config, rejecting unknown fields by name (a typo must not silently fall back)."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"{where}: unknown field(s) {', '.join(unknown)} for {cls.__name__}; "
            f"known fields: {', '.join(known)}"
        )
    kwargs = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if isinstance(default, tuple):
            value = tuple(value)
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif type(default) is not type(value):
            raise ConfigError(
                f"{where}: field {name} must be {type(default).__name__}, "
                f"got {type(value).__name__} {value!r}"
            )
        kwargs[name] = value
    config = cls(**kwargs)
    try:
        config.validate()
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    return config


def load_config(cls: type[C], path: str | Path) -> C:
    path = Path(path)
    try:
        values = ron.load(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; check the path") from None
    except ron.RonError as error:
        raise ConfigError(f"{path}:{error}") from None
    if not isinstance(values, dict):
        raise ConfigError(
            f"{path}: expected a struct like `(field: value, ...)`, got {type(values).__name__}"
        )
    return config_from_mapping(cls, dict(values), where=str(path))


def save_config(config: ModelConfig | TrainConfig, path: str | Path) -> None:
    values = ron.Struct(dataclasses.asdict(config))
    Path(path).write_text(ron.dumps(values, pretty=True) + "\n")


def load_preset(name: str) -> tuple[ModelConfig, TrainConfig]:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    model_file, train_file = PRESET_FILES[name]
    model = load_config(ModelConfig, preset_path(model_file))
    train = load_config(TrainConfig, preset_path(train_file)) if train_file else TrainConfig()
    return model, train


def preset_path(filename: str) -> Path:
    """Path of a file shipped in mlxstory/formats/presets (e.g. the original's `original.train.ron`)."""
    return Path(str(resources.files("mlxstory.formats") / "presets" / filename))


@dataclass
class RunConfig:
    """Everything a run directory records about how it was made."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = DEFAULT_PRESET
