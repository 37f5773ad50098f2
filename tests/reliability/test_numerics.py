"""Numerics: a learning rate that blows the loss up to inf/NaN stops the run with a clear message and exit 1,
keeps the last checkpoint whose losses were finite (and the best one) untouched, and the run can be
resumed with a smaller learning rate, as the message says.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlxstory  # noqa: F401  isort: skip  (loads MKL before mlx.core)
import mlx.core as mx
from mlx.utils import tree_flatten

from mlxstory.training.checkpoint import load_model, read_latest
from mlxstory.training.events import EvalCompleted, RunFinished, StepCompleted
from mlxstory.training.metrics_log import METRICS_FILE, read_metrics

from .faults import assert_one_error_line, cli, fault, snapshot

EXPLODING_LR = "1e4"  # the tiny preset reaches inf/NaN within a few steps (1e2 already does by step ~20)


def train(store: Path, run: Path, *extra: str):
    return cli("train", "--data", str(store), "--preset", "tiny", "--batch-size", "4", "--eval-interval", "2",
               "--out", str(run), "--no-tui", *extra)


def check_stopped_cleanly(run: Path, result) -> int:
    """Exit 1 naming the step and the kept checkpoint; that checkpoint loads with finite weights and its
    eval was finite; nothing was saved at or after the bad step; the log is whole JSON. Returns the step."""
    error = assert_one_error_line(result, "training diverged at step", "last good checkpoint kept")
    bad_step = int(error.split("at step ")[1].split()[0])
    pointer = read_latest(run)
    assert pointer["step"] < bad_step and f"step-{pointer['step']:06d}.safetensors" in error
    loaded = load_model(run)
    assert all(bool(mx.isfinite(v).all()) for _, v in tree_flatten(loaded.model.parameters()))
    saved = sorted(int(p.name[5:11]) for p in (run / "checkpoints").glob("step-??????.json"))
    assert saved[-1] == pointer["step"] and (pointer["best"] is None or pointer["best"]["step"] in saved)
    for line in (run / METRICS_FILE).read_text().splitlines():
        json.loads(line)  # NaN/inf are written as null: every line stays JSON
    read = read_metrics(run / METRICS_FILE)
    assert not read.warnings
    finished = read.events[-1]
    assert isinstance(finished, RunFinished) and finished.reason == "diverged" and finished.step == bad_step
    evals = {e.step: e.val_loss for e in read.events if isinstance(e, EvalCompleted)}
    assert math.isfinite(evals[pointer["step"]])
    return bad_step


def test_an_exploding_learning_rate_stops_with_the_last_good_checkpoint(small_store: Path, tmp_path: Path):
    run = tmp_path / "run"
    with fault("exploding learning rate"):
        result = train(small_store, run, "--iterations", "12", "--lr", EXPLODING_LR)
        bad_step = check_stopped_cleanly(run, result)
        steps = [e for e in read_metrics(run / METRICS_FILE).events if isinstance(e, StepCompleted)]
        assert steps[-1].step == bad_step - 1 and steps[-1].loss > 100 * steps[0].loss  # it really exploded
    result = cli("train", "--resume", str(run), "--lr", "1e-3", "--no-tui")  # what the message advises
    assert result.exit_code == 0, result.stderr
    assert read_latest(run)["step"] == 12


def test_a_healthy_run_resumed_with_an_exploding_rate_keeps_its_checkpoint_bytes(small_store: Path,
                                                                                  tmp_path: Path):
    run = tmp_path / "run"
    assert train(small_store, run, "--iterations", "4").exit_code == 0
    before = snapshot(run / "checkpoints")
    with fault("exploding learning rate"):
        # --eval-interval 100: the next checkpoint would be the final one, at step 12
        result = cli("train", "--resume", str(run), "--iterations", "12", "--eval-interval", "100",
                     "--lr", "1e6", "--no-tui")
        check_stopped_cleanly(run, result)
        assert read_latest(run)["step"] == 4
        assert snapshot(run / "checkpoints") == before
