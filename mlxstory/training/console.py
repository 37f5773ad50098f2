"""Training events on stderr: a live rich progress bar on a terminal, plain log lines otherwise.

Plain mode (a pipe, a CI log) prints about twenty step lines per run plus every evaluation,
checkpoint and warning, so logs stay short but show the whole curve.
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mlxstory.training.events import (
    CheckpointSaved,
    EvalCompleted,
    Event,
    RunFinished,
    RunStarted,
    StepCompleted,
    Warning,
)

PLAIN_STEP_LINES = 20


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def describe_start(event: RunStarted) -> str:
    where = f"from step {event.start_step}" if event.start_step else "from scratch"
    ranks = f" x {event.world_size} ranks" if event.world_size > 1 else ""
    data = (f" ({event.train_tokens:,} train tokens, {event.epochs:,.2f} epochs planned)"
            if event.train_tokens else "")
    return (f"training {event.run_dir} {where} to step {event.total_steps}: {event.parameter_count:,} "
            f"parameters, preset {event.preset}, data {event.dataset}{data}, device {event.device}{ranks}, "
            f"{event.tokens_per_step:,} tokens/step")


class ConsolePrinter:
    """Consumes the trainer's events; use as a context manager so the bar is closed on errors too."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(file=sys.stderr, highlight=False)
        self.live = self.console.is_terminal
        self.progress: Progress | None = None
        self.task = None
        self.total = 0
        self.first_step = 0
        self.started = 0.0
        self.smoothed_rate: float | None = None

    def __enter__(self) -> ConsolePrinter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def line(self, text: str, style: str | None = None) -> None:
        target = self.progress.console if self.progress is not None else self.console
        target.print(text, style=style, markup=False, highlight=False, soft_wrap=True)

    def handle(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._start(event)
        elif isinstance(event, StepCompleted):
            self._step(event)
        elif isinstance(event, EvalCompleted):
            self.line(f"eval step {event.step}: train loss {event.train_loss:.4f}, "
                      f"val loss {event.val_loss:.4f}", "bold")
        elif isinstance(event, CheckpointSaved):
            best = " (best so far)" if event.is_best else ""
            self.line(f"saved {event.path}{best}", "dim")
        elif isinstance(event, Warning):
            self.line(f"warning: {event.message}", "yellow")
        elif isinstance(event, RunFinished):
            self.close()
            style = {"completed": "green", "interrupted": "yellow"}.get(event.reason, "red")
            label = "error" if event.reason in ("diverged", "error") else event.reason
            self.line(f"{label}: {event.message}" if event.message else label, style)

    def _start(self, event: RunStarted) -> None:
        self.total, self.first_step, self.started = event.total_steps, event.start_step, time.perf_counter()
        self.line(describe_start(event))
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  {task.fields[rate]} tok/s"), TimeRemainingColumn(),
                console=self.console, transient=False,
            )
            self.task = self.progress.add_task("train", total=event.total_steps, completed=event.start_step,
                                               loss="-", rate="-")
            self.progress.start()

    def _step(self, event: StepCompleted) -> None:
        rate = event.tokens_per_second
        self.smoothed_rate = rate if self.smoothed_rate is None else 0.9 * self.smoothed_rate + 0.1 * rate
        if self.progress is not None:
            self.progress.update(self.task, completed=event.step, loss=f"{event.loss:.4f}",
                                 rate=f"{self.smoothed_rate:,.0f}")
            return
        every = max(1, (self.total - self.first_step) // PLAIN_STEP_LINES)
        done = event.step - self.first_step
        if done % every and event.step != self.total and done != 1:
            return
        eta = (time.perf_counter() - self.started) / done * (self.total - event.step)
        self.line(f"step {event.step}/{self.total}  loss {event.loss:.4f}  lr {event.lr:.2e}  "
                  f"grad {event.grad_norm:.3f}  {self.smoothed_rate:,.0f} tok/s  eta {format_duration(eta)}")
