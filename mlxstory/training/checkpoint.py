"""Checkpoints: weights and optimizer state as safetensors, trainer state as JSON, written atomically.

    RUN/checkpoints/step-000500.safetensors            model weights (names as in model.parameters())
    RUN/checkpoints/step-000500.optimizer.safetensors  AdamW state (step, m.<param>, v.<param>)
    RUN/checkpoints/step-000500.json                   trainer state: step, sampler RNG, losses, time
    RUN/checkpoints/latest.json                        pointer to the newest complete checkpoint (+ best)

Every file is written to a temporary name and renamed into place, and `latest.json` is replaced
last, so a process killed at any moment leaves `latest.json` naming a complete, older checkpoint.
Nothing here unpickles: safetensors and JSON only. For fault-injection tests, setting
MLXSTORY_FAULT_AT to a point name (`weights`, `optimizer`, `state`: after that file is written;
`latest`: after the pointer, before pruning; `temp`: a temp file written, not yet renamed — four per
checkpoint) kills the process there with SIGKILL; `name@n` waits for the n-th time the point is reached.
"""

from __future__ import annotations

import json
import math
import os
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from mlxstory.errors import CheckpointError
from mlxstory.formats.config import ConfigError, ModelConfig, load_config

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.json"
FORMAT_VERSION = 1
# Metadata of a checkpoint whose weights know only ids below this (an imported gpt-rs model: no special
# tokens); generation then never samples the others nor starts with <|endoftext|>.
KNOWN_VOCAB_KEY = "known_vocab_size"


@dataclass
class TrainerState:
    """Everything besides weights and optimizer moments that an exact resume needs.

    Dropout keys need no saving: the trainer reseeds MLX's generator from (seed, rank, step) before
    every step, so a resumed run draws the same dropout masks as an uninterrupted one.
    """

    step: int
    sampler: dict[str, Any]
    seed: int
    train_loss: float | None = None
    val_loss: float | None = None
    best_val_loss: float | None = None
    elapsed_seconds: float = 0.0
    tokens_seen: int = 0
    world_size: int = 1
    format: int = FORMAT_VERSION

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str) -> TrainerState:
        try:
            state = cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})
        except TypeError as error:
            raise CheckpointError(f"{where}: incomplete trainer state ({error})") from None
        if state.format > FORMAT_VERSION:
            raise CheckpointError(f"{where}: written by a newer mlxstory (format {state.format}); upgrade")
        return state


@dataclass(frozen=True)
class CheckpointFiles:
    weights: Path
    optimizer: Path
    state: Path

    @classmethod
    def for_step(cls, folder: Path, step: int) -> CheckpointFiles:
        stem = f"step-{step:06d}"
        return cls(
            folder / f"{stem}.safetensors", folder / f"{stem}.optimizer.safetensors", folder / f"{stem}.json"
        )


@dataclass
class LoadedModel:
    """A model ready for inference (eval mode), with the tokenizer and config it was trained with."""

    model: Any  # mlxstory.model.gpt.GPT
    tokenizer: Any  # mlxstory.data.tokenizer.Tokenizer
    model_config: ModelConfig
    checkpoint_path: Path
    step: int
    run_dir: Path = field(default=Path("."))


_fault_hits: dict[str, int] = {}


def _fault_point(name: str) -> None:
    point, _, nth = os.environ.get("MLXSTORY_FAULT_AT", "").partition("@")
    if point == name:
        _fault_hits[name] = _fault_hits.get(name, 0) + 1
        if _fault_hits[name] >= int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)


def _replace_atomically(path: Path, write) -> None:
    """Write through `write(file)` to a temporary sibling, fsync, then rename over `path`."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with temporary.open("wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        _fault_point("temp")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_json(path: Path, value: Any) -> None:
    _replace_atomically(path, lambda f: f.write((json.dumps(value, indent=1) + "\n").encode()))


def _write_safetensors(path: Path, arrays: dict[str, mx.array], metadata: dict[str, str]) -> None:
    _replace_atomically(path, lambda f: mx.save_safetensors(f, arrays, metadata=metadata))


def save_checkpoint(
    run_dir: str | Path,
    model: nn.Module,
    optimizer_state: dict[str, mx.array],
    state: TrainerState,
    *,
    keep_last: int = 2,
    extra_metadata: dict[str, str] | None = None,
) -> Path:
    """Write one checkpoint and point `latest.json` at it; returns the weights path.

    Keeps the `keep_last` newest checkpoints plus the one with the best val loss; removes older ones.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    files = CheckpointFiles.for_step(folder, state.step)
    metadata = {"format": "mlxstory", "version": str(FORMAT_VERSION), "step": str(state.step),
                **(extra_metadata or {})}
    _write_safetensors(files.weights, dict(tree_flatten(model.parameters())), metadata)
    _fault_point("weights")
    _write_safetensors(files.optimizer, optimizer_state, metadata)
    _fault_point("optimizer")
    write_json(files.state, asdict(state))
    _fault_point("state")

    previous = read_latest(run_dir)
    best = previous.get("best") if previous else None
    entry = {"step": state.step, "weights": files.weights.name, "val_loss": state.val_loss}
    if state.val_loss is not None and math.isfinite(state.val_loss) and (
        best is None or best.get("val_loss") is None or state.val_loss <= best["val_loss"]
    ):
        best = entry
    write_json(folder / LATEST, {**entry, "optimizer": files.optimizer.name, "state": files.state.name,
                                 "best": best})
    _fault_point("latest")
    _prune(folder, keep_steps={state.step, *([best["step"]] if best else [])}, keep_last=keep_last)
    return files.weights


def _prune(folder: Path, keep_steps: set[int], keep_last: int) -> None:
    """Remove old checkpoints, and what a killed writer left: files of unfinished steps, temp files."""
    complete = sorted(int(p.name[5:11]) for p in folder.glob("step-??????.json"))
    keep = keep_steps | set(complete[-keep_last:])
    every = {int(p.name[5:11]) for p in folder.glob("step-??????.*") if p.name[5:11].isdigit()}
    for step in sorted(every - keep):
        files = CheckpointFiles.for_step(folder, step)
        for path in (files.state, files.optimizer, files.weights):  # state first: it marks completeness
            path.unlink(missing_ok=True)
    for temporary in folder.glob(".*.tmp-*"):
        if not temporary.name.endswith(f".tmp-{os.getpid()}"):
            temporary.unlink(missing_ok=True)


def read_latest(run_dir: str | Path) -> dict[str, Any] | None:
    """The `latest.json` pointer of a run, or None when it has no checkpoint yet.

    Without the file (deleted by hand after damage, or a kill before the first pointer was written) the
    newest checkpoint whose three files exist stands in, so a resume never restarts over trained steps.
    """
    path = Path(run_dir) / CHECKPOINT_DIR / LATEST
    if not path.exists():
        for state_file in sorted(path.parent.glob("step-??????.json"), reverse=True):
            files = CheckpointFiles.for_step(path.parent, int(state_file.name[5:11]))
            if files.weights.is_file() and files.optimizer.is_file():
                return {"step": int(state_file.name[5:11]), "weights": files.weights.name,
                        "optimizer": files.optimizer.name, "state": files.state.name, "best": None}
        return None
    try:
        pointer = json.loads(path.read_text())
        int(pointer["step"]), str(pointer["weights"])
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"{path}: unreadable checkpoint pointer ({error}); delete it to use the older files"
        ) from None
    return pointer


def load_arrays(path: Path, what: str = "checkpoint") -> tuple[dict[str, mx.array], dict[str, str]]:
    """A safetensors file's arrays and metadata, or one CheckpointError line (missing, truncated,
    not safetensors, e.g. a pickle renamed: its bytes are parsed as a header, never executed)."""
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")
    try:
        return mx.load(str(path), format="safetensors", return_metadata=True)
    except (RuntimeError, ValueError, OSError) as error:
        detail = str(error).replace("\n", " ")[:160]
        raise CheckpointError(f"{what} {path} is not a readable safetensors file ({detail})") from None


def load_trainer_checkpoint(
    run_dir: str | Path,
) -> tuple[dict[str, mx.array], dict[str, mx.array], TrainerState]:
    """Weights, optimizer state and trainer state of the run's latest checkpoint, for `--resume`."""
    pointer = read_latest(run_dir)
    if pointer is None:
        raise CheckpointError(f"{run_dir} has no checkpoint to resume from; start it again without --resume")
    folder = Path(run_dir) / CHECKPOINT_DIR
    files = CheckpointFiles.for_step(folder, int(pointer["step"]))
    weights, _ = load_arrays(files.weights)
    optimizer, _ = load_arrays(files.optimizer, "optimizer state")
    try:
        state = TrainerState.from_dict(json.loads(files.state.read_text()), str(files.state))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{files.state}: unreadable trainer state ({error})") from None
    return weights, optimizer, state


def check_arrays(given: dict[str, mx.array], expected: dict[str, mx.array], where: str | Path, *, kind: str,
                 needed_by: str) -> None:
    """Names and shapes of `given` must equal `expected`'s: one error naming the first that differs.

    `kind` names an entry ("weight", "optimizer entry"), `needed_by` what fixes the shapes ("model.ron").
    """
    missing = sorted(set(expected) - set(given))
    if missing:
        raise CheckpointError(f"{where}: missing {kind} {missing[0]} ({len(missing)} missing); "
                              "it was not saved from this model config")
    extra = sorted(set(given) - set(expected))
    if extra:
        raise CheckpointError(
            f"{where}: unexpected {kind} {extra[0]}; it was saved from another model config"
        )
    for name, value in expected.items():
        if given[name].shape != value.shape:
            raise CheckpointError(
                f"{where}: {name} has shape {tuple(given[name].shape)} but {needed_by} needs "
                f"{tuple(value.shape)}; the checkpoint belongs to another model config"
            )


def check_weights(model: nn.Module, weights: dict[str, mx.array], where: Path) -> None:
    """The weights of a checkpoint must be the model's, by name and shape."""
    check_arrays(weights, dict(tree_flatten(model.parameters())), where, kind="weight", needed_by="model.ron")


def _run_dir_of(weights: Path) -> Path:
    """A checkpoint's run: the folder above `checkpoints/`, or the folder beside a loose file."""
    for folder in (weights.parent.parent, weights.parent):
        if (folder / "model.ron").exists():
            return folder
    raise CheckpointError(f"no model.ron beside {weights} or in its run directory; cannot tell its config")


def load_model(path: str | Path) -> LoadedModel:
    """Load a run's latest checkpoint (path = run dir) or one checkpoint file, ready to generate."""
    from mlxstory.data.tokenizer import Tokenizer
    from mlxstory.model.gpt import GPT

    path = Path(path)
    if path.is_dir():
        run_dir = path
        pointer = read_latest(run_dir)
        if pointer is None:
            raise CheckpointError(
                f"{run_dir} has no checkpoint yet (no {CHECKPOINT_DIR}/{LATEST}); train it first or pass "
                "a run directory that has one"
            )
        weights_path = run_dir / CHECKPOINT_DIR / pointer["weights"]
    elif path.suffix == ".safetensors":
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist")
        weights_path = path
        run_dir = _run_dir_of(path)
    elif not path.exists():
        raise CheckpointError(f"run directory {path} does not exist; check the path")
    else:
        raise CheckpointError(f"{path} is neither a run directory nor a .safetensors checkpoint")

    try:
        config = load_config(ModelConfig, run_dir / "model.ron")
    except ConfigError as error:
        raise CheckpointError(f"cannot rebuild the model: {error}") from None
    tokenizer_path = run_dir / "tokenizer.ron"
    if not tokenizer_path.exists():
        raise CheckpointError(f"{run_dir} has no tokenizer.ron; the run directory is incomplete")
    tokenizer = Tokenizer.load(tokenizer_path)
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(
            f"{tokenizer_path} has {tokenizer.vocab_size} tokens but model.ron says vocab_size "
            f"{config.vocab_size}; the tokenizer belongs to another run"
        )
    weights, metadata = load_arrays(weights_path)
    model = GPT(config)
    check_weights(model, weights, weights_path)
    model.load_weights(list(weights.items()))
    model.eval()
    mx.eval(model.parameters())
    if metadata.get(KNOWN_VOCAB_KEY, "").isdigit():
        model.known_vocab_size = int(metadata[KNOWN_VOCAB_KEY])
    step = int(metadata["step"]) if metadata.get("step", "").isdigit() else -1
    return LoadedModel(model, tokenizer, config, weights_path, step, run_dir)
