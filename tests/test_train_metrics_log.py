"""metrics.jsonl: appended and flushed per event, readable after a torn write, replayable after a resume."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from mlxstory.training.console import ConsolePrinter, format_duration
from mlxstory.training.events import (
    CheckpointSaved,
    EvalCompleted,
    RunFinished,
    RunStarted,
    StepCompleted,
    Warning,
)
from mlxstory.training.metrics_log import MetricsLog, current_history, read_metrics


def start(start_step: int = 0, total: int = 100) -> RunStarted:
    return RunStarted(run_dir="runs/x", preset="tiny", dataset="demo", device="cpu", parameter_count=1234,
                      start_step=start_step, total_steps=total, tokens_per_step=2048)


def step(n: int, loss: float = 2.5) -> StepCompleted:
    return StepCompleted(step=n, loss=loss, lr=1e-3, grad_norm=0.5, tokens_per_second=1000.0,
                         peak_memory_bytes=1, elapsed_seconds=float(n))


def test_each_event_is_one_flushed_json_line(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    log.write(start())
    log.write(step(1))
    # Flushed per line: a reader sees both records before the log is closed.
    assert [json.loads(line)["event"] for line in path.read_text().splitlines()] == ["start", "step"]
    log.close()


def test_a_torn_last_line_is_reported_and_the_next_writer_starts_a_fresh_line(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    with MetricsLog(path) as log:
        log.write(start())
        log.write(step(1))
    path.write_bytes(path.read_bytes() + b'{"event": "step", "step": 2, "lo')  # killed mid-write

    read = read_metrics(path)
    assert [e.kind for e in read.events] == ["start", "step"]
    assert len(read.warnings) == 1 and "torn last line" in read.warnings[0] and ":3:" in read.warnings[0]

    with MetricsLog(path) as log:  # a resumed run appends
        log.write(start(start_step=1))
    read = read_metrics(path)
    assert [e.kind for e in read.events] == ["start", "step", "start"]
    assert len(read.warnings) == 1 and "unreadable line" in read.warnings[0]


def test_non_finite_numbers_are_written_as_null_so_every_line_is_json(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    with MetricsLog(path) as log:
        log.write(EvalCompleted(step=1, train_loss=float("nan"), val_loss=float("inf")))
    record = json.loads(path.read_text())
    assert record == {"event": "eval", "step": 1, "train_loss": None, "val_loss": None}


def test_current_history_drops_steps_a_resume_redid():
    events = [start(), step(1), step(2), step(3), start(start_step=2), step(3, loss=1.0), step(4)]
    kept = [(type(e).__name__, getattr(e, "step", None), getattr(e, "loss", None))
            for e in current_history(events)]
    assert kept == [("RunStarted", None, None), ("StepCompleted", 1, 2.5), ("StepCompleted", 2, 2.5),
                    ("RunStarted", None, None), ("StepCompleted", 3, 1.0), ("StepCompleted", 4, 2.5)]


def plain_output(events) -> str:
    buffer = io.StringIO()
    with ConsolePrinter(Console(file=buffer, force_terminal=False, width=200)) as printer:
        for event in events:
            printer.handle(event)
    return buffer.getvalue()


def test_plain_console_prints_a_bounded_number_of_step_lines_and_every_eval_checkpoint_and_warning():
    events = [start(total=100), Warning(message="using the demo corpus", step=0)]
    events += [step(n) for n in range(1, 101)]
    events += [EvalCompleted(step=100, train_loss=2.0, val_loss=2.1),
               CheckpointSaved(step=100, path="runs/x/checkpoints/step-000100.safetensors", val_loss=2.1,
                               is_best=True),
               RunFinished(step=100, reason="completed", checkpoint=None, message="trained 100 steps")]
    lines = plain_output(events).splitlines()
    step_lines = [line for line in lines if line.startswith("step ")]
    assert len(step_lines) == 21  # step 1, then every 5th
    assert step_lines[-1].startswith("step 100/100  loss 2.5000")
    assert "tok/s" in step_lines[0] and "eta" in step_lines[0]
    assert lines[0].startswith("training runs/x from scratch to step 100: 1,234 parameters, preset tiny")
    assert "warning: using the demo corpus" in lines
    assert "eval step 100: train loss 2.0000, val loss 2.1000" in lines
    assert "saved runs/x/checkpoints/step-000100.safetensors (best so far)" in lines
    assert lines[-1] == "completed: trained 100 steps"


def test_terminal_console_draws_a_progress_bar():
    buffer = io.StringIO()
    with ConsolePrinter(Console(file=buffer, force_terminal=True, width=120)) as printer:
        printer.handle(start(total=10))
        for n in range(1, 11):
            printer.handle(step(n))
    output = buffer.getvalue()
    assert "10/10" in output and "2.5000" in output and "tok/s" in output
    assert not any(line.startswith("step ") for line in output.splitlines())


def test_durations_read_naturally():
    assert [format_duration(s) for s in (5, 65, 3700)] == ["5s", "1m05s", "1h01m"]
