"""What the dashboard knows about a run, folded from the event stream — no Textual here.

The same fold serves a live run, a followed `metrics.jsonl` and a replay, so all three look alike.
Panels read immutable views (`HeaderView`, `ProgressView`, ...) that widgets keep in `reactive`s:
a view that compares equal to the last one costs no repaint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from mlxstory.training.events import (
    CheckpointSaved,
    EvalCompleted,
    Event,
    RunFinished,
    RunStarted,
    SampleGenerated,
    StepCompleted,
    Warning,
)
from mlxstory.training.run_dir import planned_epochs

LOSS_SMOOTHING = 0.9  # EMA weight on the past for the train-loss curve and the loss readout
RATE_SMOOTHING = 0.8  # EMA weight for tokens/s and seconds per step (ETA)


class Ema:
    """Exponential moving average with bias correction, so the first values are not pulled to 0."""

    def __init__(self, beta: float) -> None:
        self.beta = beta
        self._value = 0.0
        self._weight = 0.0

    def update(self, x: float | None) -> float | None:
        if x is None or not math.isfinite(x):  # the log writes NaN/inf as null: skip, keep the average
            return self.value
        self._value = self.beta * self._value + (1 - self.beta) * x
        self._weight = self.beta * self._weight + (1 - self.beta)
        return self.value

    @property
    def value(self) -> float | None:
        return self._value / self._weight if self._weight else None


@dataclass(frozen=True)
class HeaderView:
    run_name: str = ""
    parameter_count: int | None = None
    device: str = ""
    dataset: str = ""
    preset: str = ""
    world_size: int = 1
    elapsed_seconds: float = 0.0
    status: str = "waiting"
    train_tokens: int | None = None  # None: a log from before runs recorded it


@dataclass(frozen=True)
class ProgressView:
    step: int = 0
    total_steps: int = 0
    eta_seconds: float | None = None
    tokens_per_second: float | None = None
    loss: float | None = None
    lr: float | None = None
    grad_norm: float | None = None
    peak_memory_bytes: int | None = None
    finished: bool = False
    epoch: float | None = None  # passes over the train split so far, and planned (None: not recorded)
    epochs: float | None = None


@dataclass(frozen=True)
class CheckpointView:
    step: int
    name: str
    val_loss: float | None


@dataclass(frozen=True)
class CheckpointsView:
    latest: CheckpointView | None = None
    best: CheckpointView | None = None
    count: int = 0


@dataclass(frozen=True)
class LogLine:
    level: str  # "info" | "warning" | "error"
    text: str


@dataclass
class DashboardState:
    """Folds events into what the panels show; `apply` returns the log lines an event produced."""

    status: str = "waiting"
    info: RunStarted | None = None
    step: int = 0
    elapsed_seconds: float = 0.0
    last_step: StepCompleted | None = None
    train_points: list[tuple[int, float]] = field(default_factory=list)  # (step, smoothed loss)
    val_points: list[tuple[int, float]] = field(default_factory=list)
    latest: CheckpointSaved | None = None
    best: CheckpointSaved | None = None
    checkpoint_count: int = 0
    sample: SampleGenerated | None = None
    finished: RunFinished | None = None
    _loss: Ema = field(default_factory=lambda: Ema(LOSS_SMOOTHING))
    _rate: Ema = field(default_factory=lambda: Ema(RATE_SMOOTHING))
    _step_seconds: Ema = field(default_factory=lambda: Ema(RATE_SMOOTHING))

    def apply(self, event: Event) -> list[LogLine]:
        if isinstance(event, StepCompleted):
            self._on_step(event)
        elif isinstance(event, EvalCompleted):
            if event.val_loss is not None and math.isfinite(event.val_loss):
                self.val_points.append((event.step, event.val_loss))
        elif isinstance(event, CheckpointSaved):
            return self._on_checkpoint(event)
        elif isinstance(event, SampleGenerated):
            self.sample = event
        elif isinstance(event, Warning):
            where = f"step {event.step}: " if event.step is not None else ""
            return [LogLine("warning", where + event.message)]
        elif isinstance(event, RunStarted):
            return self._on_start(event)
        elif isinstance(event, RunFinished):
            return self._on_finish(event)
        return []

    def _on_start(self, event: RunStarted) -> list[LogLine]:
        resumed = self.info is not None or event.start_step > 0
        self.info = event
        self.status = "running"
        self.finished = None
        self.step = event.start_step
        # A resumed run restarts from its checkpoint: drop points logged after it by the earlier attempt.
        self.train_points = [p for p in self.train_points if p[0] <= event.start_step]
        self.val_points = [p for p in self.val_points if p[0] <= event.start_step]
        self._step_seconds = Ema(RATE_SMOOTHING)
        self.last_step = None
        if resumed:
            return [LogLine("info", f"resumed at step {event.start_step} of {event.total_steps}")]
        return [LogLine("info", f"started: {event.total_steps} steps on {event.device}")]

    def _on_step(self, event: StepCompleted) -> None:
        previous = self.last_step
        if previous is not None and event.step > previous.step:
            seconds = ((event.elapsed_seconds or 0.0) - (previous.elapsed_seconds or 0.0)) / (
                event.step - previous.step
            )
            if seconds >= 0:
                self._step_seconds.update(seconds)
        self.last_step = event
        self.step = event.step
        self.elapsed_seconds = max(self.elapsed_seconds, event.elapsed_seconds or 0.0)
        self._rate.update(event.tokens_per_second)
        smoothed = self._loss.update(event.loss)
        if smoothed is not None and event.loss is not None and math.isfinite(event.loss):
            self.train_points.append((event.step, smoothed))

    def _on_checkpoint(self, event: CheckpointSaved) -> list[LogLine]:
        self.latest = event
        self.checkpoint_count += 1
        best = self.best
        if event.val_loss is not None and (
            event.is_best or best is None or best.val_loss is None or event.val_loss < best.val_loss
        ):
            self.best = event
        return [LogLine("info", f"checkpoint step {event.step}: {self.short_path(event.path)}")]

    def short_path(self, path: str) -> str:
        """A path inside the run directory, relative to it; the log pane is narrow."""
        if self.info is None:
            return path
        try:
            return str(Path(path).relative_to(self.info.run_dir))
        except ValueError:
            return path

    def _on_finish(self, event: RunFinished) -> list[LogLine]:
        self.finished = event
        self.step = max(self.step, event.step)
        self.status = event.reason
        saved = f"; saved {self.short_path(event.checkpoint)}" if event.checkpoint else ""
        level = "error" if event.reason in ("error", "diverged") else "info"
        detail = f": {event.message}" if event.message else ""
        return [LogLine(level, f"run {event.reason} at step {event.step}{detail}{saved}")]

    # Views -------------------------------------------------------------------------------------------

    def header(self) -> HeaderView:
        info = self.info
        if info is None:
            return HeaderView(status=self.status, elapsed_seconds=self.elapsed_seconds)
        return HeaderView(
            run_name=Path(info.run_dir).name or info.run_dir,
            parameter_count=info.parameter_count,
            device=info.device,
            dataset=info.dataset,
            preset=info.preset,
            world_size=info.world_size,
            elapsed_seconds=self.elapsed_seconds,
            status=self.status,
            train_tokens=info.train_tokens or None,
        )

    def progress(self) -> ProgressView:
        total = self.info.total_steps if self.info else 0
        last = self.last_step
        per_step = self._step_seconds.value
        done = self.finished is not None
        eta = None if done or per_step is None else max(0, total - self.step) * per_step
        info = self.info
        known = info is not None and info.train_tokens > 0
        return ProgressView(
            step=self.step,
            total_steps=total,
            eta_seconds=eta,
            tokens_per_second=self._rate.value,
            loss=self._loss.value,
            lr=last.lr if last else None,
            grad_norm=last.grad_norm if last else None,
            peak_memory_bytes=last.peak_memory_bytes if last else None,
            finished=done,
            epoch=planned_epochs(self.step, info.tokens_per_step, info.train_tokens) if known else None,
            epochs=info.epochs if known else None,
        )

    def checkpoints(self) -> CheckpointsView:
        def view(event: CheckpointSaved | None) -> CheckpointView | None:
            if event is None:
                return None
            return CheckpointView(event.step, Path(event.path).name, event.val_loss)

        return CheckpointsView(view(self.latest), view(self.best), self.checkpoint_count)


def downsample(points: list[tuple[int, float]], limit: int) -> list[tuple[int, float]]:
    """At most `limit` points, evenly strided, always keeping the last: the chart is only so wide."""
    if len(points) <= limit or limit < 2:
        return points
    stride = (len(points) + limit - 2) // (limit - 1)
    picked = points[::stride]
    if picked[-1] != points[-1]:
        picked.append(points[-1])
    return picked
