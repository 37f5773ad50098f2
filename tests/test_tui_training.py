"""The dashboard driving real training (tiny preset, a slice of the shared TinyStories sample)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from mlxstory.tui.app import DashboardApp, run_training_dashboard
from mlxstory.tui.live import TrainingSource
from mlxstory.tui.sources import RunDirSource
from mlxstory.tui.widgets import CheckpointsPanel, GenerationPane, LogPane, ProgressPanel, RunHeader
from test_tui import rendered, run_async, settle, wait_until

import mlxstory  # noqa: F401  (CPU speedups before mlx)
from mlxstory.data.sources import SourceTexts
from mlxstory.errors import MlxstoryError
from mlxstory.formats.config import load_preset
from mlxstory.training.checkpoint import read_latest
from mlxstory.training.events import RunFinished, StepCompleted
from mlxstory.training.metrics_log import METRICS_FILE, read_metrics
from mlxstory.training.run_dir import create_run
from mlxstory.training.train import TrainingControl, train

PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def token_store(tmp_path_factory: pytest.TempPathFactory, sample_texts: list[str]) -> Path:
    """One tokenized slice of the sample, shared by this module's runs."""
    model, trainer = load_preset("tiny")
    texts = SourceTexts(sample_texts[:300], "tinystories-sample", "300 stories")
    seed_run = create_run(tmp_path_factory.mktemp("store") / "run", model_config=model, train_config=trainer,
                          preset="tiny", texts=texts)
    return seed_run.data_path


def new_run(path: Path, store: Path, iterations: int, eval_every: int = 10) -> Path:
    model, trainer = load_preset("tiny")
    trainer = replace(trainer, training_iterations=iterations, evaluation_interval=eval_every,
                      evaluation_iterations=1, contexts_per_batch=8, warmup_iterations=2)
    return create_run(path, model_config=model, train_config=trainer, preset="tiny", store_dir=store).path


class CountingControl(TrainingControl):
    """The real controls, counting the trainer's polls while it waits paused: a test waits on those
    instead of sleeping and hoping no step came."""

    def __init__(self) -> None:
        super().__init__()
        self.paused_polls = 0

    def wait_while_paused(self, poll_seconds: float = 0.1):
        for _ in super().wait_while_paused(poll_seconds):
            self.paused_polls += 1
            yield


def last_logged_step(run: Path) -> int:
    return max(e.step for e in read_metrics(run / METRICS_FILE).events if isinstance(e, StepCompleted))


@run_async
async def test_live_training_steps_samples_saves_and_quits(tmp_path: Path, token_store: Path) -> None:
    run = new_run(tmp_path / "live", token_store, iterations=5000)
    control = CountingControl()
    app = DashboardApp(TrainingSource(run, control=control, sample_tokens=12), prompt=PROMPT)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.state.step >= 3, timeout=60)
        assert app.query_one(RunHeader).view.status == "running"
        assert app.query_one(ProgressPanel).view.total_steps == 5000

        # The first eval (step 10) streams a sample of the current weights into the pane.
        generation = app.query_one(GenerationPane)
        await wait_until(pilot, lambda: app.state.checkpoint_count >= 1 and generation.text != ""
                         and not generation.streaming)
        assert generation.text.startswith(PROMPT) and len(generation.text) > len(PROMPT)
        assert generation.border_title == "sample · step 10"
        assert "tok/s" in str(generation.border_subtitle)

        # `s` saves between evals: a checkpoint without a val loss, on disk.
        saved = app.state.checkpoint_count
        await pilot.press("s")
        await wait_until(pilot, lambda: app.state.checkpoint_count > saved)
        assert Path(app.state.latest.path).is_file()

        # `p` pauses: the trainer finishes the step in flight, then waits in its pause loop and logs no
        # step while it polls there; the screen shows the last step and "paused". `p` again resumes.
        await pilot.press("p")
        await wait_until(pilot, lambda: control.paused_polls >= 1, timeout=30)
        paused_at, polls = last_logged_step(run), control.paused_polls
        await wait_until(pilot, lambda: control.paused_polls >= polls + 3 and app.state.step == paused_at)
        assert last_logged_step(run) == paused_at and app.query_one(RunHeader).view.status == "paused"
        # `g` while paused with nothing unsaved still samples (from the latest checkpoint).
        await pilot.press("s")
        await wait_until(pilot, lambda: app.state.latest.step == paused_at)
        await pilot.press("g")
        await wait_until(pilot, lambda: generation.border_title == f"sample · step {paused_at}"
                         and not generation.streaming)
        await pilot.press("p")
        await wait_until(pilot, lambda: app.state.step > paused_at + 2)

        # `q` saves the current step and exits; the checkpoint is what --resume continues from.
        await pilot.press("q")
        await wait_until(pilot, lambda: not app.is_running, timeout=30)
    finished = app.return_value
    assert isinstance(finished, RunFinished) and finished.reason == "interrupted"
    assert read_latest(run)["step"] == finished.step == app.state.latest.step
    assert Path(finished.checkpoint).is_file()
    assert "--resume" in app.saved_note()

    # --resume in the dashboard: the run so far is on the chart, and training goes on from the checkpoint.
    resumed = DashboardApp(TrainingSource(run, sample_at_eval=False, train_options={"resume": True}))
    async with resumed.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: resumed.state.step > finished.step, timeout=60)
        assert resumed.state.train_points[0][0] == 1
        assert any(f"resumed at step {finished.step}" in line.text
                   for line in resumed.query_one(LogPane).lines_written)
        await pilot.press("q")
        await wait_until(pilot, lambda: not resumed.is_running, timeout=30)
    assert read_latest(run)["step"] == resumed.return_value.step > finished.step


@run_async
async def test_a_training_error_shows_in_the_ui_with_the_run_saved(
    tmp_path: Path, token_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlxstory.training.train as trainer

    real_save = trainer.save_checkpoint
    calls = []

    def save_then_fill_the_disk(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_fill_the_disk)
    run = new_run(tmp_path / "fails", token_store, iterations=100, eval_every=5)
    app = DashboardApp(TrainingSource(run, sample_at_eval=False))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.source_done, timeout=60)
        assert app.is_running  # the screen stays up
        assert app.query_one(RunHeader).view.status == "error"
        errors = [line.text for line in app.query_one(LogPane).lines_written if line.level == "error"]
        assert "No space left on device" in errors[0]
        assert "step-000005" in errors[1] and f"--resume {run}" in errors[1]
        assert "step 5" in rendered(app.query_one(CheckpointsPanel))
        await pilot.press("q")
    assert app.failure and read_latest(run)["step"] == 5
    # The metrics log records the failure, so `mlxstory dashboard` shows it later too.
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "done" and last["reason"] == "error"


def test_run_training_dashboard_reports_a_failure_as_one_line(
    tmp_path: Path, token_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlxstory.training.train as trainer

    def broken_step(*args, **kwargs):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(trainer, "make_train_step", broken_step)
    run = new_run(tmp_path / "broken", token_store, iterations=10)

    async def close_when_stopped(pilot) -> None:
        await wait_until(pilot, lambda: pilot.app.source_done, timeout=60)
        await pilot.press("q")

    original_run = DashboardApp.run
    monkeypatch.setattr(DashboardApp, "run", lambda self: original_run(
        self, headless=True, size=(80, 24), auto_pilot=close_when_stopped))
    with pytest.raises(MlxstoryError) as error:
        run_training_dashboard(run)
    message = str(error.value)
    assert "\n" not in message and "kernel exploded" in message and "no checkpoint was saved" in message


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, token_store: Path) -> Path:
    run = new_run(tmp_path_factory.mktemp("trained") / "run", token_store, iterations=10, eval_every=5)
    for _ in train(run):
        pass
    return run


@run_async
async def test_dashboard_on_a_finished_run_samples_its_latest_checkpoint(trained_run: Path) -> None:
    app = DashboardApp(RunDirSource(trained_run, follow=False))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert app.state.status == "completed" and app.state.step == 10
        assert app.query_one(CheckpointsPanel).view.best is not None
        generation = app.query_one(GenerationPane)
        await pilot.press("g")
        await wait_until(pilot, lambda: generation.text.startswith(PROMPT) and not generation.streaming)
        assert generation.border_title == "sample · step 10"
        # `e` edits the prompt (the old one is selected, typing replaces it); Enter samples with it.
        await pilot.press("e", *"The cat", "enter")
        await wait_until(pilot, lambda: generation.text.startswith("The cat") and not generation.streaming)
        assert generation.prompt == "The cat"
        await pilot.press("q")
