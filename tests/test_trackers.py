"""`--report-to tensorboard,wandb` and `mlxstory report`: what the trackers wrote, read back with
tensorboard's own reader and W&B's own record format, and trackers that fail never stopping training."""

from __future__ import annotations

import json
import struct
import time
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

import mlxstory  # noqa: F401  (CPU speedups before mlx)
from mlxstory.cli import app
from mlxstory.training import trackers as trackers_module
from mlxstory.training.events import Event, RunFinished, RunStarted, SampleGenerated, StepCompleted
from mlxstory.training.trackers import TensorBoardTracker, Trackers

pytest.importorskip("tensorboardX", reason="the tensorboard extra is not installed")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
FAST = ["--preset", "tiny", "--batch-size", "4", "--no-tui"]


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """W&B as a user without settings gets it (offline), its caches kept out of the home folder."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_PROJECT", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def read_tensorboard(log_dir: Path):
    reader = event_accumulator.EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    reader.Reload()
    return reader


def scalars(reader, tag: str) -> dict[int, float]:
    return {event.step: event.value for event in reader.Scalars(tag)}


def tensorboard_scalars(log_dir: Path, tag: str, timeout: float = 60) -> list:
    """[wall time, step, value] points of `tag`, as a running `tensorboard --logdir` serves them."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    board = Path(sys.executable).with_name("tensorboard")
    command = [str(board), "--logdir", str(log_dir), "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?run=.&tag={tag}"
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    return json.loads(response.read())
            except OSError:
                time.sleep(0.3)
        pytest.fail(f"tensorboard never served {url}")
    finally:
        server.terminate()
        server.wait(timeout=10)


def wandb_records(run_file: Path) -> list:
    """The records of a W&B transaction log (`run-ID.wandb`): a LevelDB-style log of `Record` protobufs,
    decoded with wandb's own message definitions. A chunk cut short at the end (still being written)
    ends the list."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    block, position, pending, out = 32768, 7, b"", []
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if position + 7 + length > len(data):
            break
        chunk, position = data[position + 7:position + 7 + length], position + 7 + length
        if kind in (1, 4):  # FULL, LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + chunk)
            out.append(record)
            pending = b""
        elif kind in (2, 3):  # FIRST, MIDDLE
            pending += chunk
    return out


def finished_wandb_records(run_file: Path, timeout: float = 60.0) -> list:
    """The records once the log is complete (ends with the run's exit record).

    `run.finish()` only tells wandb-core to close the run and returns; wandb-core writes the buffered
    log when it closes it, a moment later (a process's exit waits for that). Read before, the file
    holds only its header.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = wandb_records(run_file)
        if found and found[-1].WhichOneof("record_type") == "exit":
            return found
        assert time.monotonic() < deadline, f"{run_file} got no exit record in {timeout:.0f} s"
        time.sleep(0.05)


def test_report_to_both_logs_every_step_eval_sample_and_config(tmp_path: Path, sample_parquet: Path):
    pytest.importorskip("wandb", reason="the wandb extra is not installed")
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--data", str(sample_parquet), *FAST, "--iterations", "4",
                                      "--eval-interval", "2", "--out", str(run),
                                      "--report-to", "tensorboard,wandb"])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
    assert f"tensorboard --logdir {run / 'tensorboard'}" in result.stderr
    assert "wandb sync" in result.stderr
    log = records(run)
    steps = {r["step"]: r for r in log if r["event"] == "step"}
    evals = {r["step"]: r for r in log if r["event"] == "eval"}

    board = read_tensorboard(run / "tensorboard")
    for tag, key in (("train/loss", "loss"), ("train/lr", "lr"), ("train/grad_norm", "grad_norm"),
                     ("train/tokens_per_second", "tokens_per_second")):
        assert scalars(board, tag) == pytest.approx({s: r[key] for s, r in steps.items()}, rel=1e-6)
    for tag, key in (("eval/val_loss", "val_loss"), ("eval/train_loss", "train_loss")):
        assert scalars(board, tag) == pytest.approx({s: r[key] for s, r in evals.items()}, rel=1e-6)
    samples = board.Tensors("samples/text_summary")
    assert [s.step for s in samples] == [2, 4]
    assert all(s.tensor_proto.string_val[0].decode().startswith("Once upon a time ") for s in samples)
    config = board.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| model.context_length |" in config and "| train.training_iterations | 4 |" in config
    assert "_hparams_/session_start_info" in board.PluginTagToContent("hparams")

    (run_file,) = run.glob("wandb/offline-run-*/run-*.wandb")
    history, wandb_config = {}, {}
    for record in finished_wandb_records(run_file):
        if record.WhichOneof("record_type") == "history":
            items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
            history[items["_step"]] = items
        elif record.WhichOneof("record_type") == "run":
            wandb_config = {u.key: json.loads(u.value_json) for u in record.run.config.update}
    assert wandb_config["model"]["context_length"] > 0 and wandb_config["train"]["training_iterations"] == 4
    assert sorted(history) == [1, 2, 3, 4]
    assert {s: h["train/loss"] for s, h in history.items()} == pytest.approx(
        {s: r["loss"] for s, r in steps.items()})
    assert {s: h["eval/val_loss"] for s, h in history.items() if "eval/val_loss" in h} == pytest.approx(
        {s: r["val_loss"] for s, r in evals.items()})
    table = json.loads((run_file.parent / "files" / history[4]["samples/path"]).read_text())
    assert [row[0] for row in table["data"]] == [2, 4] and table["columns"] == ["step", "prompt", "text"]


def test_report_converts_a_finished_runs_metrics(tiny_trained_run: Path, tmp_path: Path):
    out = tmp_path / "board"
    report = ["report", str(tiny_trained_run), "--to", "tensorboard", "--out", str(out)]
    result = CliRunner().invoke(app, report)
    assert result.exit_code == 0, result.output
    log = records(tiny_trained_run)
    board = read_tensorboard(out)
    assert scalars(board, "train/loss") == pytest.approx(
        {r["step"]: r["loss"] for r in log if r["event"] == "step"}, rel=1e-6)
    assert scalars(board, "eval/val_loss") == pytest.approx(
        {r["step"]: r["val_loss"] for r in log if r["event"] == "eval"}, rel=1e-6)

    # And TensorBoard itself serves those curves (its HTTP API is what its web page draws from).
    served = {step: value for _, step, value in tensorboard_scalars(out, "eval/val_loss")}
    assert served == pytest.approx({r["step"]: r["val_loss"] for r in log if r["event"] == "eval"}, rel=1e-6)

    again = CliRunner().invoke(app, report)
    assert again.exit_code == 1 and again.stderr.startswith("error: ") and again.stderr.count("\n") == 1
    assert "already holds TensorBoard event files" in again.stderr


def test_a_missing_extra_is_one_error_line_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    real = trackers_module.importlib.util.find_spec
    monkeypatch.setattr(trackers_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    args = ["train", *FAST, "--out", str(tmp_path / "run"), "--report-to"]
    result = CliRunner().invoke(app, [*args, "wandb"])
    assert result.exit_code == 1
    assert result.stderr == ('error: --report-to wandb needs the wandb package: '
                             'pip install "mlxstory[wandb]"\n')
    assert not (tmp_path / "run").exists()
    result = CliRunner().invoke(app, [*args, "mlflow"])
    assert result.exit_code == 1 and "--report-to takes tensorboard, wandb or both" in result.stderr


def test_a_tracker_that_fails_warns_once_and_training_completes(
    tmp_path: Path, sample_parquet: Path, monkeypatch: pytest.MonkeyPatch
):
    def broken(self, event: Event) -> None:
        if isinstance(event, StepCompleted) and event.step >= 2:
            raise OSError("disk full")

    monkeypatch.setattr(TensorBoardTracker, "handle", broken)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--data", str(sample_parquet), *FAST, "--iterations", "4",
                                      "--eval-interval", "2", "--out", str(run),
                                      "--report-to", "tensorboard"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: tensorboard logging failed and is off for the rest of this run "
                        "(OSError: disk full); training continues"]
    assert [r["step"] for r in records(run) if r["event"] == "step"] == [1, 2, 3, 4]


class Recorder:
    name = "recorder"

    def __init__(self, fail_on: type | None = None) -> None:
        self.events: list[Event] = []
        self.fail_on = fail_on

    def handle(self, event: Event) -> None:
        if self.fail_on is not None and isinstance(event, self.fail_on):
            raise RuntimeError("cannot reach the server")
        self.events.append(event)

    def close(self, finished: RunFinished | None) -> str:
        return f"recorded {len(self.events)} events"


def start(step: int = 0) -> RunStarted:
    return RunStarted(run_dir="r", preset="tiny", dataset="d", device="cpu", parameter_count=1,
                      start_step=step, total_steps=4, tokens_per_step=8, model_config={"n": 1},
                      train_config={"betas": (0.9, 0.95)})


def step(n: int, loss: float) -> StepCompleted:
    return StepCompleted(step=n, loss=loss, lr=1e-3, grad_norm=1.0, tokens_per_second=10.0,
                         peak_memory_bytes=0, elapsed_seconds=float(n))


def test_one_failing_tracker_is_dropped_and_the_others_keep_logging():
    healthy, failing = Recorder(), Recorder(fail_on=RunStarted)
    group = Trackers([failing, healthy])
    first = group.handle(start())
    assert len(first) == 1 and first[0].startswith("recorder starting failed")
    assert group.handle(step(1, 2.0)) == [] and group.handle(RunFinished(1, "completed", None)) == []
    assert [type(e).__name__ for e in healthy.events] == ["RunStarted", "StepCompleted", "RunFinished"]
    assert group.close() == (["recorded 3 events"], [])


def test_a_resumed_run_continues_its_tensorboard_curve(tmp_path: Path):
    first = TensorBoardTracker(tmp_path)
    for event in (start(), step(1, 4.0), step(2, 3.0), step(3, 99.0)):  # step 3 is lost to a kill
        first.handle(event)
    first.close(None)
    resumed = TensorBoardTracker(tmp_path)
    for event in (start(step=2), step(3, 2.5), step(4, 2.0), SampleGenerated(4, "Once", "Once upon")):
        resumed.handle(event)
    resumed.close(RunFinished(4, "completed", None))
    board = read_tensorboard(tmp_path)
    # Step 3 once, with its value from after the resume: the killed attempt's step 3 is purged.
    logged = [(e.step, e.value) for e in board.Scalars("train/loss")]
    assert logged == [(1, 4.0), (2, 3.0), (3, 2.5), (4, 2.0)]


def test_the_dashboard_feeds_trackers_its_eval_samples(tmp_path: Path, sample_texts: list[str]):
    from mlxstory.tui.live import TrainingSource

    from mlxstory.data.sources import SourceTexts
    from mlxstory.formats.config import load_preset
    from mlxstory.training.run_dir import create_run

    model, trainer = load_preset("tiny")
    trainer = replace(trainer, training_iterations=2, evaluation_interval=2, evaluation_iterations=1,
                      contexts_per_batch=4, warmup_iterations=1)
    run = create_run(tmp_path / "run", model_config=model, train_config=trainer, preset="tiny",
                     texts=SourceTexts(sample_texts[:200], "sample", "200 stories")).path
    recorder = Recorder(fail_on=SampleGenerated)
    source = TrainingSource(run, sample_tokens=8, consumer=Trackers([recorder]))
    source.prompt = "Once upon a time"
    items = list(source.events(lambda: False))
    shown = [event for item in items if isinstance(item, list) for event in item]
    # The sample reached the tracker (which failed on it): its one warning is in the dashboard's log.
    assert [e.message for e in shown if type(e).__name__ == "Warning"] == [
        "recorder logging failed and is off for the rest of this run "
        "(RuntimeError: cannot reach the server); training continues"]
    assert [e.step for e in recorder.events if isinstance(e, StepCompleted)] == [1, 2]
