"""One widget per dashboard panel; each renders an immutable view from `state.py` kept in a reactive."""

from __future__ import annotations

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult, RenderResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Input, RichLog, Static
from textual_plotext import PlotextPlot

from .state import CheckpointsView, CheckpointView, HeaderView, LogLine, ProgressView, downsample

DEFAULT_PROMPT = "Once upon a time"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def format_count(value: float | None, unit: str = "") -> str:
    """1234567 -> '1.23M' (SI prefixes; parameters and tokens/s read best this way)."""
    if value is None:
        return "-"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}{unit}"
    return f"{value:.3g}{unit}"


def format_bytes(value: int | None) -> str:
    if value is None or value <= 0:
        return "-"
    for limit, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if value >= limit:
            return f"{value / limit:.1f} {suffix}"
    return f"{value} B"


def columns(points: list[tuple[int, float]]) -> tuple[list[int], list[float]]:
    return [step for step, _ in points], [value for _, value in points]


def integer_ticks(low: int, high: int, count: int) -> list[int]:
    """About `count` round step numbers spanning low..high (plotext's own ticks are fractional)."""
    if high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** (len(str(max(int(raw), 1))) - 1)
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = -(-low // step) * step
    return list(range(first, high + 1, step)) or [low, high]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


class RunHeader(Static):
    """Run name, status and elapsed time; model size, device, data (and its train tokens), preset and world
    size below."""

    view: reactive[HeaderView] = reactive(HeaderView)

    def render(self) -> RenderResult:
        view = self.view
        top = Table.grid(expand=True)
        top.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        top.add_column(justify="right", no_wrap=True)
        top.add_row(
            Text.assemble(("mlxstory ", "bold"), (view.run_name or "(no run yet)", "bold cyan")),
            Text.assemble((view.status, "italic"), "  ", format_duration(view.elapsed_seconds)),
        )
        details = [
            f"{format_count(view.parameter_count)} params" if view.parameter_count else "",
            view.device,
            f"{view.dataset} ({format_count(view.train_tokens)} tok)" if view.train_tokens else view.dataset,
            f"preset {view.preset}" if view.preset else "",
            f"{view.world_size} procs" if view.world_size > 1 else "1 proc",
        ]
        line = Text(" · ".join(d for d in details if d), no_wrap=True, overflow="ellipsis")
        return Group(top, line)


class ProgressPanel(Static):
    """Step bar (with passes over the train split so far / planned) and ETA, then the per-step numbers a user
    watches: loss, tokens/s, lr, grad norm, memory."""

    view: reactive[ProgressView] = reactive(ProgressView)

    def render(self) -> RenderResult:
        view = self.view
        total = max(view.total_steps, 1)
        bar = Table.grid(expand=True, padding=(0, 1))
        bar.add_column(no_wrap=True)
        bar.add_column(ratio=1)
        bar.add_column(no_wrap=True, justify="right")
        eta = "done" if view.finished else f"ETA {format_duration(view.eta_seconds)}"
        epochs = f" · epoch {view.epoch:.1f}/{view.epochs:.1f}" if view.epochs is not None else ""
        bar.add_row(
            f"step {view.step}/{view.total_steps}{epochs}",
            ProgressBar(total=total, completed=min(view.step, total)),
            f"{100 * view.step / total:3.0f}%  {eta}",
        )
        numbers = Text.assemble(
            ("loss ", "dim"), _fmt(view.loss, ".3f"),
            ("  tok/s ", "dim"), format_count(view.tokens_per_second),
            ("  lr ", "dim"), _fmt(view.lr, ".2e"),
            ("  grad ", "dim"), _fmt(view.grad_norm, ".3f"),
            ("  peak ", "dim"), format_bytes(view.peak_memory_bytes),
            no_wrap=True, overflow="ellipsis",
        )  # fmt: skip
        return Group(bar, numbers)


class LossChart(PlotextPlot):
    """Smoothed train loss per step and val loss per eval on one plot.

    Data updates only mark the chart dirty; a timer replots at most every `interval` seconds, so a
    fast run (or a long replay) never makes the UI thread rebuild the plot per step.
    """

    def __init__(self, *, interval: float = 0.5, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.interval = interval
        self._train: list[tuple[int, float]] = []
        self._val: list[tuple[int, float]] = []
        self._dirty = True
        self.point_count = 0  # points plotted at the last redraw, after thinning

    def on_mount(self) -> None:
        super().on_mount()
        self.set_interval(self.interval, self.flush)
        self.flush()

    def show(self, train: list[tuple[int, float]], val: list[tuple[int, float]]) -> None:
        self._train, self._val = train, val
        self._dirty = True

    def flush(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        limit = max(2 * self.size.width, 40)  # braille: two points per column
        train, val = downsample(self._train, limit), downsample(self._val, limit)
        if train:
            plt.plot(*columns(train), label="train", marker="braille", color="cyan")
        if val:
            plt.scatter(*columns(val), label="val", marker="●", color="orange")  # one dot per eval
        if train or val:
            first, last = min(p[0] for p in train + val), max(p[0] for p in train + val)
            ticks = integer_ticks(first, last, max(3, self.size.width // 8))
            plt.xticks(ticks, [str(t) for t in ticks])
        else:
            plt.title("waiting for the first step")
        plt.xlabel("step")
        self.point_count = len(train) + len(val)
        self.refresh()


class CheckpointsPanel(Static):
    view: reactive[CheckpointsView] = reactive(CheckpointsView)

    def render(self) -> RenderResult:
        view = self.view
        if view.latest is None:
            return Text("no checkpoint yet", style="dim")
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="dim")
        grid.add_column(justify="right")
        grid.add_column()

        def row(label: str, checkpoint: CheckpointView | None) -> None:
            if checkpoint is not None:
                val = "val -" if checkpoint.val_loss is None else f"val {checkpoint.val_loss:.3f}"
                grid.add_row(label, f"step {checkpoint.step}", val)

        row("latest", view.latest)
        row("best", view.best)
        latest = Text(f"{view.count} saved · {view.latest.name}", "dim", no_wrap=True, overflow="ellipsis")
        return Group(grid, latest)


class GenerationPane(Vertical):
    """A sample from the current weights, streamed in piece by piece; `e` edits the prompt here."""

    class PromptChanged(Message):
        def __init__(self, prompt: str) -> None:
            super().__init__()
            self.prompt = prompt

    prompt: reactive[str] = reactive(DEFAULT_PROMPT)

    def __init__(self, *, prompt: str = DEFAULT_PROMPT, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.set_reactive(GenerationPane.prompt, prompt)
        self._text = ""
        self._streaming = False

    def compose(self) -> ComposeResult:
        yield Input(value=self.prompt, placeholder="prompt", id="prompt-input")
        with VerticalScroll(id="sample-scroll"):
            yield Static(Text(f"{self.prompt}…  (press g)", style="dim"), id="sample-text")

    @property
    def text(self) -> str:
        """The story shown now (prompt included)."""
        return self._text

    @property
    def streaming(self) -> bool:
        return self._streaming

    def begin(self, title: str) -> None:
        self._text = ""
        self._streaming = True
        self.border_title = title
        self._render_text()

    def append(self, piece: str) -> None:
        self._text += piece
        self._render_text()

    def finish(self, note: str = "") -> None:
        self._streaming = False
        if note:
            self.border_subtitle = note
        self._render_text()

    def show_sample(self, title: str, text: str) -> None:
        self.begin(title)
        self.append(text)
        self.finish()

    def _render_text(self) -> None:
        body = Text(self._text)
        if self._streaming:
            body.append("▍", style="bold cyan")
        self.query_one("#sample-text", Static).update(body)
        self.query_one("#sample-scroll", VerticalScroll).scroll_end(animate=False)

    def edit_prompt(self) -> None:
        prompt_input = self.query_one("#prompt-input", Input)
        prompt_input.value = self.prompt
        self.add_class("editing")
        prompt_input.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.remove_class("editing")
        self.prompt = event.value.strip() or DEFAULT_PROMPT
        self.screen.set_focus(None)
        self.post_message(self.PromptChanged(self.prompt))

    def cancel_edit(self) -> None:
        self.remove_class("editing")
        self.screen.set_focus(None)


class LogPane(RichLog):
    """Warnings and errors from the event stream (and what the keys did), newest at the bottom."""

    STYLES = {"info": "dim", "warning": "yellow", "error": "bold red"}

    def add(self, line: LogLine) -> None:
        prefix = {"warning": "warning: ", "error": "error: "}.get(line.level, "")
        self.write(Text(prefix + line.text, style=self.STYLES.get(line.level, "")))
        self.lines_written.append(line)

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id, wrap=True, max_lines=500, min_width=20)
        self.lines_written: list[LogLine] = []
