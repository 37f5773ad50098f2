"""The dashboard app: panels fed by one event source running in a thread worker.

Workers never touch widgets: they post `ItemArrived` messages, and the app folds events into
`DashboardState` and hands each panel its new view. The same app shows a live training run
(`run_training_dashboard`, called by `mlxstory train`) and a run directory (`mlxstory dashboard`).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Footer
from textual.worker import get_current_worker

from mlxstory.errors import MlxstoryError
from mlxstory.training.events import Event, RunFinished, SampleGenerated

from .sources import (
    SAMPLE_MAX_TOKENS,
    Cancelled,
    Item,
    RunDirSource,
    SampleFinished,
    SamplePiece,
    SampleStarted,
)
from .state import DashboardState, LogLine
from .widgets import (
    DEFAULT_PROMPT,
    CheckpointsPanel,
    GenerationPane,
    LogPane,
    LossChart,
    ProgressPanel,
    RunHeader,
)


class Source(Protocol):
    """What the app needs from any event source; both methods run in thread workers."""

    run_dir: Path

    def events(self, cancelled: Cancelled) -> Iterator[Item]: ...

    def sample(self, prompt: str, cancelled: Cancelled) -> Iterator[Item]: ...


@runtime_checkable
class TrainingControls(Protocol):
    """A live run also takes the keys; `prompt` is what it samples at each eval."""

    prompt: str

    def set_paused(self, paused: bool) -> None: ...

    def save_now(self) -> None: ...

    def stop(self) -> None: ...

    def request_sample(self, prompt: str) -> bool: ...


class DashboardApp(App[RunFinished | None]):
    """Header, progress, loss chart, checkpoints, live sample and log for one run."""

    CSS_PATH = "dashboard.tcss"
    TITLE = "mlxstory dashboard"
    ENABLE_COMMAND_PALETTE = False
    AUTO_FOCUS = None  # keys drive the app; the prompt input takes focus only on `e`
    BINDINGS = [
        Binding("p", "pause", "Pause/resume"),
        Binding("s", "save", "Save now"),
        Binding("g", "generate", "Generate"),
        Binding("e", "edit_prompt", "Edit prompt"),
        Binding("q", "quit_run", "Quit"),
        # Ctrl-C means "stop" to a user of `mlxstory train`: the same graceful save-and-quit as q.
        Binding("ctrl+c", "quit_run", "Quit", show=False, priority=True),
        Binding("escape", "cancel_edit", "Cancel", show=False),
    ]

    class ItemArrived(Message):
        """Events or sample pieces from a worker thread."""

        def __init__(self, item: Item) -> None:
            super().__init__()
            self.item = item

    class SourceEnded(Message):
        def __init__(self, error: str | None = None) -> None:
            super().__init__()
            self.error = error

    def __init__(self, source: Source, *, prompt: str = DEFAULT_PROMPT, chart_interval: float = 0.5) -> None:
        super().__init__()
        self.source = source
        self.state = DashboardState()
        self._prompt = prompt
        self._chart_interval = chart_interval
        self._paused = False
        self._quitting = False
        self.source_done = False
        self.failure: str | None = None
        self.training = source if isinstance(source, TrainingControls) else None
        if self.training is not None:
            self.training.prompt = prompt

    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        yield ProgressPanel(id="progress")
        with Horizontal(id="middle"):
            yield LossChart(id="chart", interval=self._chart_interval)
            with Vertical(id="side"):
                yield CheckpointsPanel(id="checkpoints")
                yield GenerationPane(id="generation", prompt=self._prompt)
        yield LogPane(id="log")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#chart").border_title = "loss (train smoothed, val per eval)"
        self.query_one("#checkpoints").border_title = "checkpoints"
        self.query_one("#generation").border_title = "sample"
        self.query_one("#log").border_title = "log"
        self._consume_source()

    # Workers ----------------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="source")
    def _consume_source(self) -> None:
        worker = get_current_worker()
        try:
            for item in self.source.events(lambda: worker.is_cancelled):
                self.post_message(self.ItemArrived(item))
        except Exception as error:  # noqa: BLE001 - shown in the log pane instead of breaking the screen
            detail = traceback.format_exception_only(type(error), error)[-1].strip()
            self.post_message(self.SourceEnded(error=detail))
        else:
            self.post_message(self.SourceEnded())

    @work(thread=True, exclusive=True, group="sample")
    def _sample_from_checkpoint(self, prompt: str) -> None:
        worker = get_current_worker()
        try:
            for item in self.source.sample(prompt, lambda: worker.is_cancelled):
                self.post_message(self.ItemArrived(item))
        except Exception as error:  # noqa: BLE001
            self.post_message(self.ItemArrived(SampleFinished(f"failed: {error}")))

    # Messages ---------------------------------------------------------------------------------------

    def on_dashboard_app_item_arrived(self, message: ItemArrived) -> None:
        item = message.item
        generation = self.query_one(GenerationPane)
        if isinstance(item, list):
            self.apply_events(item)
        elif isinstance(item, SampleStarted):
            generation.begin(item.title)
        elif isinstance(item, SamplePiece):
            generation.append(item.text)
        elif isinstance(item, SampleFinished):
            generation.finish(item.note)

    def on_dashboard_app_source_ended(self, message: SourceEnded) -> None:
        self.source_done = True
        self.refresh_bindings()
        if message.error:
            self.failure = message.error
            self.state.status = "error"
            self.log_line(LogLine("error", message.error))
            if self.training is not None:
                self.log_line(LogLine("error", self.saved_note()))
            self._refresh_panels()
        if self._quitting:
            self.exit(self.state.finished)

    @on(GenerationPane.PromptChanged)
    def _prompt_changed(self, message: GenerationPane.PromptChanged) -> None:
        self._prompt = message.prompt
        if self.training is not None:
            self.training.prompt = message.prompt
        self.action_generate()

    def apply_events(self, events: list[Event]) -> None:
        log = self.query_one(LogPane)
        for event in events:
            for line in self.state.apply(event):
                log.add(line)
            if isinstance(event, SampleGenerated):
                generation = self.query_one(GenerationPane)
                if not generation.streaming:
                    generation.show_sample(f"sample · step {event.step}", event.text)
        self._refresh_panels()

    def _refresh_panels(self) -> None:
        state = self.state
        if self._paused and not state.finished:
            state.status = "paused"
        self.query_one(RunHeader).view = state.header()
        self.query_one(ProgressPanel).view = state.progress()
        self.query_one(CheckpointsPanel).view = state.checkpoints()
        self.query_one(LossChart).show(state.train_points, state.val_points)

    def log_line(self, line: LogLine) -> None:
        self.query_one(LogPane).add(line)

    def saved_note(self) -> str:
        """Where the run stands on disk, for a user whose training just stopped."""
        latest = self.state.latest
        run = self.source.run_dir
        if latest is None:
            return f"no checkpoint was saved in {run}"
        resume = f"mlxstory train --resume {run}"
        return f"last checkpoint {latest.path} (step {latest.step}); resume with: {resume}"

    # Actions ----------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("pause", "save"):
            if self.training is None:
                return False  # hidden: a run directory cannot be paused or saved from here
            return None if self.source_done else True
        return True

    @property
    def _controls(self) -> TrainingControls | None:
        """The live run's controls while it still trains."""
        return None if self.source_done else self.training

    def action_pause(self) -> None:
        if (controls := self._controls) is None:
            return
        self._paused = not self._paused
        controls.set_paused(self._paused)
        self.state.status = "paused" if self._paused else "running"
        self.log_line(LogLine("info", "paused" if self._paused else "resumed"))
        self._refresh_panels()

    def action_save(self) -> None:
        if (controls := self._controls) is None:
            return
        controls.save_now()
        self.log_line(LogLine("info", "saving a checkpoint after this step…"))

    def action_generate(self) -> None:
        if self.query_one(GenerationPane).streaming:
            self.notify("a sample is already streaming", timeout=2)
            return
        controls = self._controls
        if controls is not None and controls.request_sample(self._prompt):
            self.log_line(LogLine("info", "sampling from the weights after this step…"))
            return
        self._sample_from_checkpoint(self._prompt)

    def action_edit_prompt(self) -> None:
        self.query_one(GenerationPane).edit_prompt()

    def action_cancel_edit(self) -> None:
        self.query_one(GenerationPane).cancel_edit()

    async def action_quit(self) -> None:
        """Textual's ctrl+q: also save first."""
        self.action_quit_run()

    def action_quit_run(self) -> None:
        if (controls := self._controls) is not None:
            if self._quitting:
                return
            self._quitting = True
            if self._paused:
                self.action_pause()
            controls.stop()
            self.state.status = "saving"
            self.log_line(LogLine("info", "saving a checkpoint before quitting…"))
            self._refresh_panels()
            return
        self.exit(self.state.finished)


def run_dashboard(run_dir: str | Path, *, follow: bool = True) -> RunFinished | None:
    """`mlxstory dashboard RUN_DIR`: replay the run's metrics, follow them while it runs."""
    return DashboardApp(RunDirSource(Path(run_dir), follow=follow)).run()


def run_training_dashboard(
    run_dir: str | Path,
    *,
    control: Any = None,
    prompt: str = DEFAULT_PROMPT,
    sample_tokens: int = SAMPLE_MAX_TOKENS,
    consumer: Any = None,
    **train_options: Any,
) -> RunFinished | None:
    """`mlxstory train` in a terminal: train the run in `run_dir` (made by `create_run`) in the dashboard.

    `train_options` (resume, device, group, keep_checkpoints) go to `training.train.train`, which runs
    in the app's worker thread; `consumer` (the `--report-to` trackers) gets every event and eval sample
    there too. Returns the run's final `RunFinished` (None if the user closed the app
    before training started). After the app closes, one line on stderr says where the run is saved
    and how to continue it. If training raised, that is re-raised as a one-line `MlxstoryError`
    naming the last checkpoint, after the screen is restored.
    """
    from .live import TrainingSource

    source = TrainingSource(run_dir, control=control, sample_tokens=sample_tokens,
                            train_options=train_options, consumer=consumer)
    app = DashboardApp(source, prompt=prompt)
    finished = app.run()
    if app.failure is not None:
        raise MlxstoryError(f"training failed: {app.failure}; {app.saved_note()}")
    if finished is not None and finished.reason == "interrupted":
        print(f"training stopped at step {finished.step}; {app.saved_note()}", file=sys.stderr)
    elif finished is not None and finished.reason == "diverged":
        print(finished.message, file=sys.stderr)  # it says "training diverged at step ..."
    return finished
