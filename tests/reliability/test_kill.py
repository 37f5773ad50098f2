"""Kill at any moment: `mlxstory train` is SIGKILLed at random points and in the middle of checkpoint writes.

After every kill the run directory must hold what a user needs: a checkpoint that loads, at most one
evaluation interval behind the furthest step logged, a readable metrics.jsonl (a torn last line reported,
not fatal), and `--resume` must carry on. At the end of each chain of kills the run is resumed to completion
and its weights must equal those of a run that was never interrupted: nothing was lost or done twice.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import mlxstory  # noqa: F401  isort: skip  (loads MKL before mlx.core)
import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlxstory.training.checkpoint import load_model, read_latest
from mlxstory.training.events import StepCompleted
from mlxstory.training.metrics_log import METRICS_FILE, current_history, read_metrics
from mlxstory.training.run_dir import RUN_FILE

from .faults import (
    assert_one_error_line,
    cli,
    fault,
    mlxstory_command,
    run_mlxstory,
    subprocess_env,
    unchecked,
)

ITERATIONS, EVAL_INTERVAL = 20, 4
RANDOM_KILLS = 6
SEED = 512  # its kills land at start-up, before the first checkpoint, and mid-run


def train_args(store: Path, run: Path) -> list[str]:
    return ["train", "--data", str(store), "--preset", "tiny", "--batch-size", "4", "--iterations",
            str(ITERATIONS), "--eval-interval", str(EVAL_INTERVAL), "--out", str(run), "--no-tui"]


def continue_args(store: Path, run: Path) -> list[str]:
    """What a user types next: the same command while the run has no run.json yet, else --resume."""
    if (run / RUN_FILE).exists():
        return ["train", "--resume", str(run), "--no-tui"]
    return train_args(store, run)


def final_weights(run: Path) -> dict[str, np.ndarray]:
    pointer = read_latest(run)
    assert pointer is not None and pointer["step"] == ITERATIONS
    return {k: np.array(v) for k, v in mx.load(str(run / "checkpoints" / pointer["weights"])).items()}


def line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def wait_for_lines(process: subprocess.Popen, metrics: Path, count: int) -> None:
    """Until `metrics` has `count` lines, or the process ended."""
    deadline = time.monotonic() + 300
    while process.poll() is None and line_count(metrics) < count and time.monotonic() < deadline:
        time.sleep(0.002)


@dataclass
class Uninterrupted:
    weights: dict[str, np.ndarray]  # after the last step
    startup_seconds: float  # from launch to the first metrics line: creating the run, loading, compiling


@pytest.fixture(scope="module")
def uninterrupted(small_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Uninterrupted:
    run = tmp_path_factory.mktemp("kill") / "uninterrupted"
    started = time.monotonic()
    process = subprocess.Popen(mlxstory_command(*train_args(small_store, run)), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=subprocess_env())
    wait_for_lines(process, run / METRICS_FILE, 1)
    startup = time.monotonic() - started
    assert process.wait(timeout=300) == 0
    return Uninterrupted(final_weights(run), startup)


def check_after_kill(run: Path) -> int:
    """What the user finds after a kill; returns the checkpoint's step (0: none yet, -1: no run yet)."""
    if not (run / RUN_FILE).exists():  # killed before or while the run directory was made
        return -1
    metrics = run / METRICS_FILE
    text = metrics.read_text() if metrics.exists() else ""
    read = read_metrics(metrics) if metrics.exists() else None
    if text and not text.endswith("\n"):
        assert read.warnings and "torn last line" in read.warnings[-1], read.warnings
    logged = max((e.step for e in (read.events if read else []) if isinstance(e, StepCompleted)), default=0)
    pointer = read_latest(run)
    if pointer is None:
        assert logged <= EVAL_INTERVAL, f"no checkpoint, yet {logged} steps were logged"
        return 0
    loaded = load_model(run)
    assert loaded.step == pointer["step"]
    assert logged - loaded.step <= EVAL_INTERVAL, f"checkpoint at step {loaded.step}, {logged} steps logged"
    assert all(bool(mx.isfinite(v).all()) for _, v in tree_flatten(loaded.model.parameters()))
    return loaded.step


def check_completed(run: Path, uninterrupted: Uninterrupted) -> None:
    """Resumed to the end: same weights as the uninterrupted run, each step once in the history,
    and no debris of killed writes (temp files, half checkpoints) left in checkpoints/."""
    for name, value in final_weights(run).items():
        np.testing.assert_array_equal(value, uninterrupted.weights[name], err_msg=name)
    history = current_history(read_metrics(run / METRICS_FILE).events)
    assert [e.step for e in history if isinstance(e, StepCompleted)] == list(range(1, ITERATIONS + 1))
    names = {p.name for p in (run / "checkpoints").iterdir()} - {"latest.json"}
    stems = {name.split(".")[0] for name in names}
    assert names == {f"{s}{x}" for s in stems for x in (".json", ".safetensors", ".optimizer.safetensors")}


def kill_at_random_moment(command: list[str], run: Path, start_step: int, startup_seconds: float,
                          rng: random.Random) -> str | None:
    """Start `command` and SIGKILL it after a random number of the metrics lines still to come plus a few
    ms, or (0 lines) at a random time within start-up: run creation, loading, compiling. Returns where
    it struck, None if the process finished first."""
    metrics = run / METRICS_FILE
    before = line_count(metrics)
    steps_left = ITERATIONS - start_step
    target = rng.randint(0, steps_left + 2 * steps_left // EVAL_INTERVAL)  # start, steps, evals, checkpoints
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=subprocess_env())
    try:
        if target == 0:
            delay = rng.uniform(0.0, startup_seconds)
            time.sleep(delay)
            where = f"{delay:.2f} s into start-up"
        else:
            wait_for_lines(process, metrics, before + target)
            time.sleep(rng.uniform(0.0, 0.03))
            where = f"after {target} metrics lines"
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        code = process.wait(timeout=30)
        assert code in (0, -signal.SIGKILL), f"exit code {code} before the kill"
        return where if code == -signal.SIGKILL else None
    finally:
        process.kill()
        process.wait()


def test_random_kills_never_lose_more_than_one_eval_interval(small_store: Path, tmp_path: Path,
                                                            uninterrupted: Uninterrupted):
    """RANDOM_KILLS kills after which something was checked; a kill before run.json exists leaves nothing
    to check, so it is noted apart and another kill is drawn."""
    rng = random.Random(SEED)
    runs = [tmp_path / "run-1"]
    steps_left: list[int] = []  # the checkpoint step after each checked kill
    attempts, step = 0, -1
    while len(steps_left) < RANDOM_KILLS:
        attempts += 1
        assert attempts <= 4 * RANDOM_KILLS, f"only {len(steps_left)} checked kills in {attempts - 1} tries"
        command = mlxstory_command(*continue_args(small_store, runs[-1]))
        start = max(step, 0)
        where = kill_at_random_moment(command, runs[-1], start, uninterrupted.startup_seconds, rng)
        if where is None:  # it finished first: check it, then go on with a new run
            check_completed(runs[-1], uninterrupted)
            runs.append(tmp_path / f"run-{len(runs) + 1}")
            step = -1
            continue
        if not (runs[-1] / RUN_FILE).exists():
            unchecked("kill at a random moment")
            print(f"kill ({runs[-1].name}): {where}; no run yet, nothing to check (not counted)")
            continue
        with fault("kill at a random moment"):
            step = check_after_kill(runs[-1])
        steps_left.append(step)
        state = "no checkpoint yet" if step == 0 else f"checkpoint at step {step}"
        print(f"kill {len(steps_left)} ({runs[-1].name}, from step {start}): {where}; left {state}")
    # The seed must exercise the interesting case: a kill with a checkpoint to load and compare.
    assert sum(s > 0 for s in steps_left) >= 2, steps_left
    run = runs[-1]
    result = run_mlxstory(*continue_args(small_store, run))
    assert result.returncode == 0, result.stderr[-2000:]
    check_completed(run, uninterrupted)


# (MLXSTORY_FAULT_AT, checkpoint step expected afterwards): one chain, each process resuming the last.
# `temp` fires before each of a checkpoint's four renames: weights, optimizer, state, latest.json.
CHECKPOINT_FAULTS = [
    ("weights@1", 0),  # first checkpoint (step 4) half written: nothing to resume, so --resume starts over
    ("state@1", 4),  # step 4 complete but no latest.json yet: the newest complete checkpoint stands in
    ("latest@2", 12),  # from 4: 8 saved, 12 saved and pointed at, killed before old ones were pruned
    ("temp@5", 16),  # from 12: 16 saved, 20's weights still in a temp file
    ("temp@4", 16),  # from 16: 20 complete, but its latest.json still a temp file: the pointer stays at 16
]


def test_kills_inside_checkpoint_writes(small_store: Path, tmp_path: Path, uninterrupted: Uninterrupted):
    run = tmp_path / "run"
    for point, expected in CHECKPOINT_FAULTS:
        with fault("kill inside a checkpoint write"):
            result = run_mlxstory(*continue_args(small_store, run), env={"MLXSTORY_FAULT_AT": point})
            assert result.returncode == -signal.SIGKILL, (point, result.stderr[-2000:])
            assert check_after_kill(run) == expected, point

    with fault("torn metrics line"):  # as a power cut mid-write would leave it
        with (run / METRICS_FILE).open("a") as metrics:
            metrics.write('{"event": "step", "step": 17, "lo')
        assert check_after_kill(run) == 16
        result = run_mlxstory(*continue_args(small_store, run))
        assert result.returncode == 0, result.stderr[-2000:]
        warnings = read_metrics(run / METRICS_FILE).warnings
        assert len(warnings) == 1 and "unreadable line skipped" in warnings[0], warnings
    check_completed(run, uninterrupted)


def test_a_kill_while_the_run_is_created_leaves_a_retryable_folder(tmp_path: Path, sample_texts: list[str]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "stories.parquet"
    pq.write_table(pa.table({"text": sample_texts[:300]}), data)
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--preset", "tiny", "--batch-size", "4", "--iterations", "2",
            "--out", str(run), "--no-tui"]
    with fault("kill while the run is created"):
        process = subprocess.Popen(mlxstory_command(*args), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env=subprocess_env())
        try:
            deadline = time.monotonic() + 120
            while not (run / ".creating").exists() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.001)
            process.send_signal(signal.SIGKILL)
            assert process.wait(timeout=30) == -signal.SIGKILL
        finally:
            process.kill()
            process.wait()
        assert not (run / RUN_FILE).exists()
        resumed = cli("train", "--resume", str(run), "--no-tui")
        assert_one_error_line(resumed, "interrupted while being created")
        result = run_mlxstory(*args)  # the same command again
        assert result.returncode == 0, result.stderr[-2000:]
        assert read_latest(run)["step"] == 2 and load_model(run).step == 2
