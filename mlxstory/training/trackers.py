"""Experiment trackers (TensorBoard, Weights & Biases): consumers of the training event stream.

They read the same events as the console and `metrics.jsonl` — step loss, learning rate, gradient
norm, tokens/s, eval losses, eval samples, and the configs from `RunStarted` as hyperparameters — so
`mlxstory train --report-to` (live) and `mlxstory report` (from a finished run's metrics.jsonl) log
the same thing. Their clients are optional extras, imported only when a tracker starts.

A tracker never stops training: `Trackers` catches whatever a client raises, drops that tracker,
and hands back one warning for the caller to show (console line or dashboard log).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from mlxstory.errors import MlxstoryError
from mlxstory.training.events import (
    CheckpointSaved,
    EvalCompleted,
    Event,
    RunFinished,
    RunStarted,
    SampleGenerated,
    StepCompleted,
)

# tracker name -> (module its client imports, extra that installs it)
CLIENTS = {"tensorboard": ("tensorboardX", "tensorboard"), "wandb": ("wandb", "wandb")}
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"
WANDB_PROJECT = "mlxstory"
SAMPLE_PROMPT = "Once upon a time"
SAMPLE_TOKENS = 200
SAMPLE_TEMPERATURE = 0.8


def parse_tracker_names(value: str, flag: str = "--report-to") -> list[str]:
    """`tensorboard,wandb` -> ["tensorboard", "wandb"], each installed; else one clear error."""
    names = list(dict.fromkeys(part.strip().lower() for part in value.split(",") if part.strip()))
    unknown = [name for name in names if name not in CLIENTS]
    if unknown or not names:
        raise MlxstoryError(f"{flag} takes tensorboard, wandb or both (comma-separated), got {value!r}")
    for name in names:
        module, extra = CLIENTS[name]
        if importlib.util.find_spec(module) is None:
            raise MlxstoryError(f'{flag} {name} needs the {module} package: pip install "mlxstory[{extra}]"')
    return names


def flat_hyperparameters(event: RunStarted) -> dict[str, Any]:
    """The run's configs as flat `model.x` / `train.x` scalars (what hyperparameter views can compare)."""
    values: dict[str, Any] = {"preset": event.preset, "dataset": event.dataset, "device": event.device,
                              "parameters": event.parameter_count, "world_size": event.world_size,
                              "tokens_per_step": event.tokens_per_step}
    for prefix, config in (("model", event.model_config), ("train", event.train_config)):
        for key, value in config.items():
            values[f"{prefix}.{key}"] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return values


def config_markdown(event: RunStarted) -> str:
    rows = "\n".join(f"| {key} | {value} |" for key, value in flat_hyperparameters(event).items())
    return f"| setting | value |\n|---|---|\n{rows}"


class Tracker(Protocol):
    name: str

    def handle(self, event: Event) -> None: ...

    def close(self, finished: RunFinished | None) -> str | None:
        """Finish writing; returns where the logs are and how to look at them."""


class TensorBoardTracker:
    """Event files in `log_dir` (tensorboardX writes them; `tensorboard --logdir` shows them).

    A resumed run logs into the same folder; the steps past its checkpoint that the first attempt
    logged are purged so the curves continue instead of doubling back.
    """

    name = "tensorboard"

    def __init__(self, log_dir: str | Path, *, purge_resumed: bool = True) -> None:
        self.log_dir = Path(log_dir)
        self.purge_resumed = purge_resumed
        self.writer: Any = None

    def handle(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._start(event)
            return
        writer = self.writer
        if writer is None:
            return
        if isinstance(event, StepCompleted):
            writer.add_scalar("train/loss", event.loss, event.step)
            writer.add_scalar("train/lr", event.lr, event.step)
            writer.add_scalar("train/grad_norm", event.grad_norm, event.step)
            writer.add_scalar("train/tokens_per_second", event.tokens_per_second, event.step)
            writer.add_scalar("train/peak_memory_gb", event.peak_memory_bytes / 1e9, event.step)
        elif isinstance(event, EvalCompleted):
            writer.add_scalar("eval/train_loss", event.train_loss, event.step)
            writer.add_scalar("eval/val_loss", event.val_loss, event.step)
            writer.flush()  # evals are rare: make each visible at once
        elif isinstance(event, SampleGenerated):
            writer.add_text("samples", event.text, event.step)
            writer.flush()

    def _start(self, event: RunStarted) -> None:
        if self.writer is not None:
            return  # a resumed history (mlxstory report): one writer for all of it
        from tensorboardX import SummaryWriter
        from tensorboardX.summary import hparams

        purge = event.start_step + 1 if self.purge_resumed and event.start_step else None
        # The file name has the time in seconds: the suffix keeps a quick resume from overwriting it.
        self.writer = SummaryWriter(logdir=str(self.log_dir), purge_step=purge, flush_secs=10,
                                    filename_suffix=f".{os.getpid()}.from-step-{event.start_step}")
        experiment, session_start, self._session_end = hparams(
            flat_hyperparameters(event), {"eval/val_loss": 0.0, "eval/train_loss": 0.0})
        self.writer.file_writer.add_summary(experiment)
        self.writer.file_writer.add_summary(session_start)
        self.writer.add_text("config", config_markdown(event), event.start_step)

    def close(self, finished: RunFinished | None) -> str | None:
        if self.writer is None:
            return None
        if finished is not None and finished.reason == "completed":
            self.writer.file_writer.add_summary(self._session_end)
        self.writer.close()
        self.writer = None
        return f"TensorBoard logs in {self.log_dir}; view them with: tensorboard --logdir {self.log_dir}"


def wandb_mode() -> str | None:
    """Offline unless the user chose (WANDB_MODE): training must not depend on the network."""
    return None if os.environ.get("WANDB_MODE") else "offline"


class WandbTracker:
    """One W&B run per training session, in `RUN/wandb/` (offline unless WANDB_MODE says otherwise)."""

    name = "wandb"

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.display_name = self.run_dir.name
        self.run: Any = None
        self.samples: list[list[Any]] = []

    def handle(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._start(event)
            return
        run = self.run
        if run is None:
            return
        if isinstance(event, StepCompleted):
            run.log({"train/loss": event.loss, "train/lr": event.lr, "train/grad_norm": event.grad_norm,
                     "train/tokens_per_second": event.tokens_per_second,
                     "train/peak_memory_gb": event.peak_memory_bytes / 1e9}, step=event.step)
        elif isinstance(event, EvalCompleted):
            run.log({"eval/train_loss": event.train_loss, "eval/val_loss": event.val_loss}, step=event.step)
        elif isinstance(event, SampleGenerated):
            import wandb

            self.samples.append([event.step, event.prompt, event.text])
            # A table logged again with every sample so far: W&B shows the latest version of it.
            run.log({"samples": wandb.Table(columns=["step", "prompt", "text"], data=list(self.samples))},
                    step=event.step)

    def _start(self, event: RunStarted) -> None:
        if self.run is not None:
            return
        import wandb

        (self.run_dir / WANDB_DIR).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", WANDB_PROJECT), name=self.display_name,
            dir=str(self.run_dir), mode=wandb_mode(),
            config={"preset": event.preset, "dataset": event.dataset, "device": event.device,
                    "parameters": event.parameter_count, "world_size": event.world_size,
                    "model": event.model_config, "train": event.train_config},
            # The dashboard owns the terminal: W&B must not print into it or wrap stdout.
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )

    def close(self, finished: RunFinished | None) -> str | None:
        if self.run is None:
            return None
        run, self.run = self.run, None
        if finished is not None:
            run.summary["finish_reason"] = finished.reason
        failed = finished is not None and finished.reason in ("diverged", "error")
        offline = run.settings.mode == "offline" if hasattr(run, "settings") else False
        folder = Path(run.dir).parent  # RUN/wandb/offline-run-…/files -> the run's folder
        run.finish(exit_code=1 if failed else 0)
        if offline:
            return f"W&B offline run in {folder}; upload it with: wandb sync {folder}"
        return f"W&B run {run.name}: {run.url}" if getattr(run, "url", None) else None


class SampleWriter:
    """Samples for the trackers when nothing else makes them (console training): a story from each
    eval's checkpoint, on the training thread, between steps — as the dashboard does at each eval."""

    def __init__(self, prompt: str = SAMPLE_PROMPT, max_tokens: int = SAMPLE_TOKENS) -> None:
        self.prompt = prompt
        self.max_tokens = max_tokens

    def after(self, event: Event) -> SampleGenerated | None:
        if not (isinstance(event, CheckpointSaved) and event.val_loss is not None
                and event.path not in (None, "None")):
            return None
        from mlxstory.generation.generate import generate
        from mlxstory.training.checkpoint import load_model

        loaded = load_model(event.path)
        text = generate(loaded.model, loaded.tokenizer, self.prompt, max_tokens=self.max_tokens,
                        temperature=SAMPLE_TEMPERATURE, seed=event.step)
        return SampleGenerated(step=event.step, prompt=self.prompt, text=self.prompt + text)


def make_tracker(name: str, run_dir: str | Path, *, log_dir: str | Path | None = None,
                 purge_resumed: bool = True) -> Tracker:
    """A tracker by the name `parse_tracker_names` checked; `log_dir` moves TensorBoard's event files."""
    run_dir = Path(run_dir)
    if name == "tensorboard":
        return TensorBoardTracker(log_dir or run_dir / TENSORBOARD_DIR, purge_resumed=purge_resumed)
    return WandbTracker(run_dir)


class Trackers:
    """Feeds every event to each tracker; one that raises is dropped, with one warning returned.

    With a `SampleWriter`, each eval checkpoint also gets a sample generated for the trackers.
    """

    def __init__(self, trackers: Iterable[Tracker]) -> None:
        self.trackers = list(trackers)
        self.samples: SampleWriter | None = None  # set by a shell that samples for the trackers
        self.finished: RunFinished | None = None

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def handle(self, event: Event) -> list[str]:
        """The warnings of trackers that failed on this event (each tracker warns at most once)."""
        if isinstance(event, RunFinished):
            self.finished = event
        warnings = self._feed(event)
        if self.samples is not None and self.trackers:
            try:
                sample = self.samples.after(event)
            except Exception as error:  # noqa: BLE001 - a sample for a tracker must never stop training
                self.samples = None
                warnings.append(f"eval samples for the trackers stopped ({type(error).__name__}: {error})")
            else:
                if sample is not None:
                    warnings += self._feed(sample)
        return warnings

    def _feed(self, event: Event) -> list[str]:
        warnings = []
        for tracker in list(self.trackers):
            try:
                tracker.handle(event)
            except Exception as error:  # noqa: BLE001 - see the module docstring
                doing = "starting" if isinstance(event, RunStarted) else "logging"
                warnings.append(self._drop(tracker, doing, error))
        return warnings

    def _drop(self, tracker: Tracker, doing: str, error: BaseException) -> str:
        self.trackers.remove(tracker)
        try:
            tracker.close(None)
        except Exception:  # noqa: BLE001 - it has already failed once; say that, not this
            pass
        return f"{tracker.name} {doing} failed and is off for the rest of this run " \
               f"({type(error).__name__}: {error}); training continues"

    def close(self) -> tuple[list[str], list[str]]:
        """Finish every tracker: (notes on where the logs are, warnings)."""
        notes, warnings = [], []
        for tracker in list(self.trackers):
            try:
                note = tracker.close(self.finished)
            except Exception as error:  # noqa: BLE001
                warnings.append(self._drop(tracker, "closing", error))
                continue
            if note:
                notes.append(note)
        self.trackers = []
        return notes, warnings


def open_trackers(names: Iterable[str], run_dir: str | Path) -> Trackers:
    """Trackers for a training run; they start (and may fail, as a warning) at its `RunStarted`."""
    return Trackers([make_tracker(name, run_dir) for name in names])
