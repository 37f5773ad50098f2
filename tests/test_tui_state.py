"""The dashboard's event fold and metrics follower, without a screen."""

from __future__ import annotations

import json
from pathlib import Path

from mlxstory.tui.follow import MetricsFollower
from mlxstory.tui.state import DashboardState, downsample

import mlxstory  # noqa: F401  (CPU speedups before anything imports mlx)
from mlxstory.training.events import CheckpointSaved, EvalCompleted, RunFinished, RunStarted, StepCompleted


def start(start_step: int = 0, total: int = 100) -> RunStarted:
    return RunStarted(
        run_dir="/runs/demo", preset="tiny", dataset="demo", device="cpu", parameter_count=1000,
        start_step=start_step, total_steps=total, tokens_per_step=512,
    )


def step(n: int, loss: float = 3.0, seconds_per_step: float = 0.5) -> StepCompleted:
    return StepCompleted(
        step=n, loss=loss, lr=1e-3, grad_norm=1.0, tokens_per_second=1000.0, peak_memory_bytes=1 << 20,
        elapsed_seconds=n * seconds_per_step,
    )


def test_eta_follows_the_pace_of_recent_steps() -> None:
    state = DashboardState()
    state.apply(start(total=100))
    for n in range(1, 21):
        state.apply(step(n, seconds_per_step=0.5))
    progress = state.progress()
    assert progress.step == 20
    assert progress.eta_seconds == 80 * 0.5
    state.apply(RunFinished(step=20, reason="interrupted", checkpoint="/runs/demo/checkpoints/x.safetensors"))
    assert state.progress().eta_seconds is None and state.progress().finished
    assert state.header().status == "interrupted"


def test_train_tokens_and_passes_over_them_come_from_the_start_event() -> None:
    state = DashboardState()
    state.apply(RunStarted(
        run_dir="/runs/demo", preset="mac", dataset="tinystories", device="gpu", parameter_count=1000,
        start_step=0, total_steps=100, tokens_per_step=512, train_tokens=1024, epochs=50.0,
    ))
    for n in range(1, 5):
        state.apply(step(n))
    assert state.header().train_tokens == 1024
    assert (state.progress().epoch, state.progress().epochs) == (2.0, 50.0)
    old = DashboardState()  # a log from before runs recorded their data: nothing invented
    old.apply(start())
    old.apply(step(1))
    assert old.header().train_tokens is None and old.progress().epochs is None


def test_best_checkpoint_is_the_lowest_val_loss_not_the_latest() -> None:
    state = DashboardState()
    state.apply(start())
    for n, val in ((50, 2.5), (100, 2.1), (150, 2.3)):
        state.apply(EvalCompleted(step=n, train_loss=val, val_loss=val))
        state.apply(CheckpointSaved(step=n, path=f"/runs/demo/checkpoints/step-{n:06d}.safetensors",
                                    val_loss=val, is_best=val == 2.1))
    view = state.checkpoints()
    assert view.latest.step == 150 and view.best.step == 100 and view.best.val_loss == 2.1
    assert view.count == 3
    assert state.val_points == [(50, 2.5), (100, 2.1), (150, 2.3)]


def test_a_resume_drops_the_points_its_checkpoint_did_not_keep() -> None:
    state = DashboardState()
    state.apply(start())
    for n in range(1, 31):
        state.apply(step(n))
    state.apply(EvalCompleted(step=20, train_loss=3, val_loss=3))
    state.apply(EvalCompleted(step=30, train_loss=3, val_loss=3))
    lines = state.apply(start(start_step=20))  # killed at 30, resumed from the step-20 checkpoint
    assert [s for s, _ in state.train_points][-1] == 20
    assert state.val_points == [(20, 3)]
    assert "resumed at step 20" in lines[0].text


def test_nan_loss_from_the_log_does_not_poison_the_curve() -> None:
    state = DashboardState()
    state.apply(start())
    state.apply(step(1, loss=3.0))
    state.apply(StepCompleted(step=2, loss=None, lr=1e-3, grad_norm=None, tokens_per_second=None,  # type: ignore[arg-type]
                              peak_memory_bytes=0, elapsed_seconds=1.0))
    assert state.progress().loss == 3.0
    assert state.train_points == [(1, 3.0)]


def test_downsample_keeps_first_and_last_and_the_limit() -> None:
    points = [(i, float(i)) for i in range(1000)]
    picked = downsample(points, 100)
    assert len(picked) <= 101 and picked[0] == (0, 0.0) and picked[-1] == (999, 999.0)
    assert downsample(points[:10], 100) == points[:10]


def test_follower_waits_for_a_line_to_end_and_skips_a_torn_one(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    record = json.dumps(step(1).to_dict())
    path.write_text(json.dumps(start().to_dict()) + "\n" + record[:20])
    follower = MetricsFollower(path)
    first = follower.poll()
    assert [e.kind for e in first.events] == ["start"] and follower.pending_partial_line
    with path.open("a") as handle:
        handle.write(record[20:] + "\n")
        handle.write('{"event": "step", "st\n')  # torn by a kill, then the resumed run goes on
        handle.write(json.dumps(step(2).to_dict()) + "\n")
    second = follower.poll()
    assert [e.step for e in second.events] == [1, 2]
    assert len(second.problems) == 1 and "line 3" in second.problems[0]
    assert not follower.pending_partial_line
