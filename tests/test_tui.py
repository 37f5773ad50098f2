"""The dashboard over a run directory: replay, follow, snapshots, and `mlxstory dashboard`."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from mlxstory.tui.app import DashboardApp
from mlxstory.tui.sources import RunDirSource
from mlxstory.tui.widgets import (
    CheckpointsPanel,
    GenerationPane,
    LogPane,
    LossChart,
    ProgressPanel,
    RunHeader,
)
from rich.console import Console
from typer.testing import CliRunner

import mlxstory  # noqa: F401  (CPU speedups before anything imports mlx)
from mlxstory.cli import app as cli_app
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

STORY = "Once upon a time there was a little dog named Max. He liked to play in the park with his ball."


def replay_events(run: Path, steps: int = 120, total: int = 200, finished: bool = True) -> list[Event]:
    """A fixed, plausible run: falling loss, an eval + checkpoint + sample every 50 steps, one warning."""
    events: list[Event] = [RunStarted(
        run_dir=str(run), preset="tiny", dataset="tinystories-sample.parquet", device="cpu",
        parameter_count=145_536, start_step=0, total_steps=total, tokens_per_step=2048,
        train_tokens=102_400, epochs=total * 2048 / 102_400,
    )]
    for n in range(1, steps + 1):
        loss = 2.0 + 4.0 * math.exp(-n / 30) + 0.1 * math.sin(n)
        events.append(StepCompleted(
            step=n, loss=loss, lr=2e-3 * min(1.0, n / 20), grad_norm=1.0 / (1 + n / 50),
            tokens_per_second=20_000 + 100 * (n % 7), peak_memory_bytes=50_000_000, elapsed_seconds=0.25 * n,
        ))
        if n == 77:
            events.append(Warning(message="loss spiked to 4.1", step=77))
        if n % 50 == 0:
            val = loss + (0.1 if n == 50 else 0.05)
            path = str(run / "checkpoints" / f"step-{n:06d}.safetensors")
            events += [
                EvalCompleted(step=n, train_loss=loss, val_loss=val),
                CheckpointSaved(step=n, path=path, val_loss=val, is_best=True),
                SampleGenerated(step=n, prompt="Once upon a time", text=STORY),
            ]
    if finished:
        events.append(RunFinished(step=steps, reason="interrupted",
                                  checkpoint=str(run / "checkpoints" / f"step-{steps:06d}.safetensors")))
    return events


def write_metrics(run: Path, events: list[Event], mode: str = "w") -> None:
    run.mkdir(parents=True, exist_ok=True)
    with (run / "metrics.jsonl").open(mode) as handle:
        for event in events:
            handle.write(json.dumps(event.to_dict()) + "\n")


@pytest.fixture
def replay_run(tmp_path: Path) -> Path:
    run = tmp_path / "story-run"
    write_metrics(run, replay_events(run))
    return run


def run_async(test):
    """Run an `async def` pilot test with asyncio.run (no pytest async plugin needed)."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        asyncio.run(test(*args, **kwargs))

    return wrapper


async def wait_until(pilot, condition: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError("the dashboard did not reach the expected state in time")


async def settle(pilot) -> None:
    """Replay done and the throttled chart redrawn: what a user sees a moment after opening."""
    app = pilot.app
    await wait_until(pilot, lambda: app.source_done)
    await pilot.pause()
    app.query_one(LossChart).flush()
    await pilot.pause()


def rendered(widget) -> str:
    """The text a panel shows, as a user would read it."""
    console = Console(width=widget.size.width, file=io.StringIO(), record=True)
    console.print(widget.render())
    return console.export_text()


@run_async
async def test_replay_shows_last_step_chart_points_and_best_checkpoint(replay_run: Path) -> None:
    app = DashboardApp(RunDirSource(replay_run, follow=False))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        progress = app.query_one(ProgressPanel).view
        assert (progress.step, progress.total_steps, progress.finished) == (120, 200, True)
        chart = app.query_one(LossChart)
        # 120 smoothed train points, thinned to the chart's braille resolution, plus the two evals
        assert 60 <= chart.point_count <= 2 * chart.size.width + 3
        best = app.query_one(CheckpointsPanel).view.best
        assert best.step == 100 and best.val_loss == pytest.approx(app.state.val_points[1][1])
        assert app.query_one(GenerationPane).text == STORY
        log = [line.text for line in app.query_one(LogPane).lines_written]
        assert any("loss spiked" in text for text in log)
        assert any("checkpoints/step-000120.safetensors" in text for text in log)
        header = app.query_one(RunHeader).view
        assert (header.run_name, header.preset, header.status) == ("story-run", "tiny", "interrupted")
        assert "step 120/200 · epoch 2.4/4.0" in rendered(app.query_one(ProgressPanel))
        assert "tinystories-sample.parquet (102k tok)" in rendered(app.query_one(RunHeader))
        assert "best   step 100 val 2.1" in rendered(app.query_one(CheckpointsPanel))

        # Shrinking to the smallest supported terminal and growing again keeps every panel on screen.
        for width, height in ((80, 24), (160, 48)):
            await pilot.resize_terminal(width, height)
            await pilot.pause()
            chart.flush()
            await pilot.pause()
            assert app.screen.size == (width, height)
            for panel in (RunHeader, ProgressPanel, LossChart, CheckpointsPanel, GenerationPane, LogPane):
                region = app.query_one(panel).region
                assert region.width > 0 and region.height > 0 and region.bottom <= height - 1
            assert "step 120/200" in rendered(app.query_one(ProgressPanel))
        await pilot.press("q")
    assert app.return_value == replay_events(replay_run)[-1]


@run_async
async def test_follow_picks_up_lines_as_the_run_writes_them(tmp_path: Path) -> None:
    run = tmp_path / "growing"
    events = replay_events(run, steps=60, total=60, finished=False)
    head, tail = events[:21], events[21:]
    write_metrics(run, head)
    app = DashboardApp(RunDirSource(run, poll_seconds=0.05), chart_interval=0.05)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.state.step == 20)
        points_before = app.query_one(LossChart).point_count
        line = json.dumps(tail[0].to_dict())
        with (run / "metrics.jsonl").open("a") as handle:  # the trainer mid-write: half a line
            handle.write(line[:15])
            handle.flush()
            await pilot.pause(0.2)
            assert app.state.step == 20
            handle.write(line[15:] + "\n")
        write_metrics(run, tail[1:] + [RunFinished(step=60, reason="completed", checkpoint=None)], mode="a")
        await wait_until(pilot, lambda: app.source_done)
        assert app.state.step == 60 and app.state.status == "completed"
        await wait_until(pilot, lambda: app.query_one(LossChart).point_count > points_before)
        assert app.query_one(CheckpointsPanel).view.latest.step == 50
        # The line written in two halves was read once, whole: nothing skipped, nothing to warn about.
        assert [line.text for line in app.query_one(LogPane).lines_written if line.level != "info"] == []


@run_async
async def test_prompt_edit_keeps_keys_out_of_the_dashboard(replay_run: Path) -> None:
    app = DashboardApp(RunDirSource(replay_run, follow=False))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("e")
        await pilot.press("ctrl+a", *"A dragon q")  # `q` types into the prompt instead of quitting
        await pilot.press("escape")
        assert app.is_running
        assert app.query_one(GenerationPane).prompt == "Once upon a time"
        await pilot.press("ctrl+c")  # what a terminal user presses to stop
    assert not app.is_running


def snapshot_app(run: Path) -> DashboardApp:
    write_metrics(run, replay_events(run))
    return DashboardApp(RunDirSource(run, follow=False))


@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
def test_dashboard_snapshot(snap_compare, tmp_path: Path, size: tuple[int, int]) -> None:
    assert snap_compare(snapshot_app(tmp_path / "story-run"), terminal_size=size, run_before=settle)


def test_dashboard_command_replays_the_run(replay_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    async def drive(pilot) -> None:
        await settle(pilot)
        seen["step"] = pilot.app.query_one(ProgressPanel).view.step
        seen["best"] = pilot.app.query_one(CheckpointsPanel).view.best.step
        await pilot.press("q")

    original_run = DashboardApp.run

    def headless_run(self: DashboardApp, **kwargs):
        return original_run(self, headless=True, size=(100, 30), auto_pilot=drive)

    monkeypatch.setattr(DashboardApp, "run", headless_run)
    result = CliRunner().invoke(cli_app, ["dashboard", str(replay_run), "--no-follow"])
    assert result.exit_code == 0, result.output
    assert seen == {"step": 120, "best": 100}


@pytest.mark.parametrize("make", ["missing", "file", "empty"])
def test_dashboard_command_rejects_what_is_not_a_run(tmp_path: Path, make: str) -> None:
    target = tmp_path / "run"
    if make == "file":
        target.write_text("not a run")
    elif make == "empty":
        target.mkdir()
    result = CliRunner().invoke(cli_app, ["dashboard", str(target)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(target) in lines[0]
