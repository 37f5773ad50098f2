"""One rank of a test group: `python tests/distributed_worker.py train ...` runs `mlxstory train ...` as
`python -m mlxstory` would (started by mlx.launch, or with MLX_RANK / MLX_HOSTFILE set by the test).

For the tests only, two environment variables reach inside the run without hooks in the package:
  MLXSTORY_TEST_DUMP=DIR   after the command, save this rank's parameters to DIR/rank-<r>.npz
  MLXSTORY_TEST_DIE=R@N    rank R kills itself (SIGKILL, like a machine that vanishes) after step N
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import mlxstory  # noqa: F401  isort: skip  (loads MKL before mlx.core)
import numpy as np
from mlx.utils import tree_flatten

import mlxstory.training.train as training
from mlxstory.cli.app import run_app
from mlxstory.training.events import StepCompleted

RANK = int(os.environ.get("MLX_RANK", "0"))
models = []
make_train_step, train = training.make_train_step, training.train


def capturing_make_train_step(model, *args, **kwargs):
    models.append(model)
    return make_train_step(model, *args, **kwargs)


def dying_train(*args, **kwargs):
    rank, _, step = os.environ.get("MLXSTORY_TEST_DIE", "").partition("@")
    for event in train(*args, **kwargs):
        yield event
        if rank and int(rank) == RANK and isinstance(event, StepCompleted) and event.step == int(step):
            os.kill(os.getpid(), signal.SIGKILL)


def dump(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    weights = {name: np.array(value) for name, value in tree_flatten(models[-1].parameters())}
    np.savez(folder / f"rank-{RANK}.npz", **weights)


if __name__ == "__main__":
    training.make_train_step, training.train = capturing_make_train_step, dying_train
    try:
        run_app(sys.argv[1:])
    finally:
        if os.environ.get("MLXSTORY_TEST_DUMP") and models:
            dump(Path(os.environ["MLXSTORY_TEST_DUMP"]))
