"""A run directory: everything a training run needs to start, resume, and be read back later.

    RUN/model.ron, RUN/train.ron   the configs (RON, the original's field names)
    RUN/run.json                   preset, dataset source, token store location, world size, created,
                                   train tokens and planned epochs
    RUN/tokenizer.ron              the tokenizer the model's ids belong to
    RUN/data/                      the token store, when the run tokenized its own data
    RUN/metrics.jsonl              one JSON object per training event (metrics_log.py)
    RUN/checkpoints/               see checkpoint.py

`create_run` writes the first four (tokenizing first when given texts); `train()` and `--resume`
read them back with `open_run`, so a run directory alone says how to continue it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from mlxstory import __version__
from mlxstory.errors import MlxstoryError
from mlxstory.formats.config import ModelConfig, TrainConfig, load_config, save_config

RUN_FILE = "run.json"
DATA_DIR = "data"
UNFINISHED = ".creating"  # exists while create_run works: a folder whose creation was killed may be redone


@dataclass
class RunInfo:
    preset: str
    dataset: str  # the source as asked for: a path, tinystories-10k or demo
    dataset_description: str = ""
    data_dir: str = DATA_DIR  # token store, relative to the run directory unless absolute
    created: str = ""
    world_size: int = 1
    mlxstory_version: str = __version__
    notes: list[str] = field(default_factory=list)  # e.g. why the demo corpus stood in
    train_tokens: int = 0  # tokens in the train split
    epochs: float = 0.0  # planned passes over it (see planned_epochs); train() updates it on --iterations


@dataclass
class Run:
    path: Path
    info: RunInfo
    model_config: ModelConfig
    train_config: TrainConfig

    @property
    def data_path(self) -> Path:
        return self.path / self.info.data_dir

    def save_train_config(self) -> None:
        save_config(self.train_config, self.path / "train.ron")

    def save_info(self) -> None:
        write_info(self.path, self.info)


def tokens_per_step(model_config: ModelConfig, train_config: TrainConfig, world_size: int = 1) -> int:
    """Tokens one optimizer step trains on, over all data-parallel processes."""
    return (train_config.contexts_per_batch * model_config.context_length * train_config.gradient_accumulation
            * world_size)


def planned_epochs(iterations: int, step_tokens: int, train_tokens: int) -> float:
    """How many times `iterations` steps of `step_tokens` pass over a train split of `train_tokens`."""
    return iterations * step_tokens / train_tokens if train_tokens > 0 else 0.0


def write_info(path: Path, info: RunInfo) -> None:
    """`run.json` in the run folder `path`, replaced whole (a reader never sees half a file)."""
    temporary = path / (RUN_FILE + ".tmp")
    temporary.write_text(json.dumps(asdict(info), indent=1) + "\n")
    temporary.replace(path / RUN_FILE)


def default_run_path(preset: str, root: str | Path = "runs") -> Path:
    return Path(root) / f"{time.strftime('%Y%m%d-%H%M%S')}-{preset}"


def is_run_dir(path: Path) -> bool:
    return (path / RUN_FILE).is_file()


def check_new_run_path(path: Path) -> None:
    """A new run never writes into a folder that already holds something (no silent overwrite), except
    what a killed `create_run` left (it still holds the UNFINISHED marker): the retry starts it afresh."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not (path / UNFINISHED).is_file():
        hint = f"continue it with --resume {path}" if is_run_dir(path) else "choose an empty or new folder"
        raise MlxstoryError(f"--out {path} already exists and is not empty; {hint}, or pick another --out")


def create_run(
    path: str | Path,
    *,
    model_config: ModelConfig,
    train_config: TrainConfig,
    preset: str,
    texts: Any = None,
    store_dir: str | Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    world_size: int = 1,
    workers: int = 1,
    tokenizer_sample: int | None = None,
) -> Run:
    """Make a run directory from `texts` (a source from `sources.open_source`, or a `SourceTexts`;
    tokenized into RUN/data by `workers` processes) or an existing token store folder `store_dir`. The
    model's vocab_size follows the tokenizer's. `progress(phase, done, total)` reports tokenizing, phase
    "read" (source units), "merges", then "encode" (source units). `world_size`: the number of
    data-parallel processes the run is made for (recorded in run.json).

    On failure the half-made directory is removed again, so the same command can simply be retried.
    """
    from mlxstory.data.batches import check_stream
    from mlxstory.data.token_store import TokenStore, build_token_store

    path = Path(path)
    check_new_run_path(path)
    if (texts is None) == (store_dir is None):
        raise ValueError("create_run needs exactly one of texts or store_dir")
    created_dir = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        _empty(path)  # empty already, or a killed creation's leftovers (see check_new_run_path)
        (path / UNFINISHED).touch()
        notes: list[str] = []
        if texts is not None:
            phase = (lambda name: partial(progress, name)) if progress else (lambda name: None)
            store = build_token_store(path / DATA_DIR, texts, model_config.vocab_size, workers=workers,
                                      tokenizer_sample=tokenizer_sample, on_read_progress=phase("read"),
                                      on_train_progress=phase("merges"), on_encode_progress=phase("encode"))
            data_dir, dataset = DATA_DIR, texts.name
            description = store.manifest["source_description"]
            if getattr(texts, "fallback_reason", None):
                notes.append(texts.fallback_reason)
        else:
            store = TokenStore.open(Path(store_dir))
            data_dir = str(Path(store_dir).resolve())
            dataset = str(store.manifest.get("source", store_dir))
            description = f"token store {data_dir}"
        for split in ("train", "val"):  # too little text: fail now, leaving no half-made run behind
            check_stream(store.split_tokens(split), model_config.context_length, split)
        tokenizer = store.tokenizer
        if tokenizer.vocab_size != model_config.vocab_size:
            notes.append(f"vocab_size set to the tokenizer's {tokenizer.vocab_size} "
                         f"(config asked for {model_config.vocab_size})")
            model_config = ModelConfig(**{**asdict(model_config), "vocab_size": tokenizer.vocab_size})
            model_config.validate()
        tokenizer.save(path / "tokenizer.ron")
        save_config(model_config, path / "model.ron")
        save_config(train_config, path / "train.ron")
        train_tokens = len(store.split_tokens("train"))
        epochs = planned_epochs(train_config.training_iterations,
                                tokens_per_step(model_config, train_config, world_size), train_tokens)
        info = RunInfo(preset=preset, dataset=dataset, dataset_description=description, data_dir=data_dir,
                       created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), world_size=world_size, notes=notes,
                       train_tokens=train_tokens, epochs=epochs)
        write_info(path, info)
        (path / UNFINISHED).unlink()
    except BaseException:
        if created_dir:
            shutil.rmtree(path, ignore_errors=True)
        else:  # an empty folder the user made: empty it again
            _empty(path)
        raise
    return Run(path, info, model_config, train_config)


def _empty(path: Path) -> None:
    for child in path.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()


def open_run(path: str | Path) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise MlxstoryError(f"run directory {path} does not exist; check the path")
    if (path / UNFINISHED).is_file():
        raise MlxstoryError(f"{path} was interrupted while being created; run the same `mlxstory train "
                            f"--out {path}` command again")
    if not is_run_dir(path):
        raise MlxstoryError(f"{path} is not a run directory (no {RUN_FILE}); pass a folder made by train")
    try:
        values = json.loads((path / RUN_FILE).read_text())
        info = RunInfo(**{k: v for k, v in values.items() if k in RunInfo.__dataclass_fields__})
    except (ValueError, TypeError) as error:
        raise MlxstoryError(f"{path / RUN_FILE} is unreadable ({error}); the run is damaged") from None
    model_config = load_config(ModelConfig, path / "model.ron")
    train_config = load_config(TrainConfig, path / "train.ron")
    return Run(path, info, model_config, train_config)
