"""Data-parallel training: real two-process groups on 127.0.0.1 with MLX's ring backend.

The groups run `mlxstory train` through tests/distributed_worker.py, which can save each rank's final
parameters and kill a rank mid-run; one group is started by `mlx.launch` itself, the others with the
same environment it sets (MLX_RANK, MLX_HOSTFILE) so each rank's output can be read on its own.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import mlxstory  # noqa: F401  isort: skip  (loads MKL before mlx.core)
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlxstory.data.batches import BatchSampler
from mlxstory.training.checkpoint import load_model, read_latest
from mlxstory.training.distributed import init_group, launched
from mlxstory.training.metrics_log import read_metrics
from mlxstory.training.run_dir import create_run, open_run
from mlxstory.training.train import train

WORKER = Path(__file__).with_name("distributed_worker.py")
LAUNCH = Path(sys.executable).with_name("mlx.launch")
FAST = ["--preset", "tiny", "--batch-size", "4", "--eval-interval", "2", "--no-tui"]
TIMEOUT = 120  # a hung group fails the test instead of the suite


def free_ports(count: int) -> int:
    """The first of `count` consecutive free local ports (mlx.launch's ring uses start, start+1, ...)."""
    for _ in range(50):
        start = int(np.random.default_rng().integers(20_000, 60_000))
        sockets = []
        try:
            for port in range(start, start + count):
                sockets.append(socket.socket())
                sockets[-1].bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free local ports")


def worker_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLX_", "OMPI_", "PMI_"))}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def start_ranks(args: list[str], cwds: list[Path], **extra: str) -> list[subprocess.Popen]:
    """Two ranks of `mlxstory <args>`, each with the environment mlx.launch gives a ring rank; rank r
    runs in cwds[r] (two folders: like two machines without a shared folder)."""
    port = free_ports(2)
    hostfile = cwds[0] / "hosts.json"
    hostfile.write_text(json.dumps([[f"127.0.0.1:{port}"], [f"127.0.0.1:{port + 1}"]]))
    return [subprocess.Popen([sys.executable, str(WORKER), *args], cwd=cwds[rank], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=worker_env(MLX_RANK=str(rank), MLX_HOSTFILE=str(hostfile), **extra))
            for rank in range(2)]


def finish(ranks: list[subprocess.Popen]) -> list[str]:
    """Each rank's stderr, after checking that every rank succeeded."""
    outputs = [rank.communicate(timeout=TIMEOUT)[1] for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 0], outputs
    return outputs


def launch(args: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    port = free_ports(2)
    command = [str(LAUNCH), "-n", "2", "--starting-port", str(port), sys.executable, str(WORKER), *args]
    return subprocess.run(command, cwd=cwd, env=worker_env(**extra), capture_output=True, text=True,
                          timeout=TIMEOUT)


def load_dump(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as archive:
        return dict(archive)


@pytest.fixture(scope="module")
def stories(tmp_path_factory: pytest.TempPathFactory, sample_texts: list[str]) -> Path:
    path = tmp_path_factory.mktemp("data") / "stories.jsonl"
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in sample_texts[:300]))
    return path


def test_only_a_launcher_makes_a_group(tmp_path):
    assert not launched({})
    assert launched({"MLX_RANK": "1", "MLX_HOSTFILE": "/tmp/hosts.json"})
    assert launched({"OMPI_COMM_WORLD_SIZE": "4"})
    assert init_group({}) is None  # a plain `mlxstory train` never starts a backend
    (tmp_path / "hosts").write_text("\n")  # what `mlx.launch -n 1` hands its one process
    assert init_group({"MLX_RANK": "0", "MLX_HOSTFILE": str(tmp_path / "hosts")}) is None


@pytest.mark.parametrize("micro_batches", [1, 3])
def test_ranks_slice_the_windows_one_process_draws_at_the_group_batch(micro_batches: int):
    tokens = np.arange(1000, dtype=np.uint16)
    whole = BatchSampler(tokens, 8, 6, seed=[5, 0, 0]).next(micro_batches)
    parts = [BatchSampler(tokens, 8, 3, seed=[5, 0, 0], rank=rank, world_size=2).next(micro_batches)
             for rank in range(2)]
    for i in range(2):  # inputs, targets: (micro, 2 x 3, T) == rank 0's 3 then rank 1's 3
        np.testing.assert_array_equal(np.concatenate([p[i] for p in parts], axis=1), whole[i])
    # One process draws what it always drew: the first micro * batch starts of its generator.
    starts = np.random.default_rng([5, 0, 0]).integers(0, len(tokens) - 8, size=micro_batches * 6)
    np.testing.assert_array_equal(whole[0][:, :, 0].reshape(-1), starts)


def test_two_ranks_keep_identical_weights_and_match_one_process_at_twice_the_batch(tmp_path, stories):
    run, dumps = tmp_path / "run", tmp_path / "dumps"
    first = launch(["train", "--data", str(stories), *FAST, "--iterations", "4", "--out", str(run)], tmp_path)
    assert (run / "checkpoints" / "latest.json").is_file(), first.stderr
    second = launch(["train", "--resume", str(run), "--iterations", "6", "--no-tui"], tmp_path,
                    MLXSTORY_TEST_DUMP=str(dumps))
    assert read_latest(run)["step"] == 6, second.stderr

    # Rank 0 alone talks and writes: one start line per launch, the group's size and tokens per step.
    for result in (first, second):
        assert result.stderr.count("x 2 ranks") == 1, result.stderr
        assert "Traceback" not in result.stderr and "error:" not in result.stderr, result.stderr
    assert json.loads((run / "run.json").read_text())["world_size"] == 2
    starts = [e for e in read_metrics(run / "metrics.jsonl").events if e.kind == "start"]
    assert [(e.start_step, e.world_size, e.tokens_per_step) for e in starts] == [(0, 2, 512), (4, 2, 512)]

    # Averaged gradients keep the ranks' weights bit-identical (through a resume too).
    rank0, rank1 = load_dump(dumps / "rank-0.npz"), load_dump(dumps / "rank-1.npz")
    assert rank0.keys() == rank1.keys() and len(rank0) > 10
    for name in rank0:
        np.testing.assert_array_equal(rank1[name], rank0[name], err_msg=name)

    # One process at batch 8 on the same windows, 6 steps straight, reaches the same weights.
    group_run = open_run(run)
    single = create_run(tmp_path / "single", model_config=group_run.model_config, preset="tiny",
                        train_config=replace(group_run.train_config, contexts_per_batch=8),
                        store_dir=group_run.data_path)
    events = list(train(single.path))
    assert events[0].tokens_per_step == 512 and events[-1].reason == "completed"
    expected = {name: np.array(v) for name, v in tree_flatten(load_model(single.path).model.parameters())}
    assert expected.keys() == rank0.keys()
    for name in expected:
        np.testing.assert_allclose(rank0[name], expected[name], rtol=1e-4, atol=2e-5, err_msg=name)


def test_machines_without_a_shared_folder_get_the_run_from_rank_0(tmp_path, stories):
    one, two, dumps = tmp_path / "one", tmp_path / "two", tmp_path / "dumps"
    one.mkdir(), two.mkdir()
    finish(start_ranks(["train", "--data", str(stories), *FAST, "--iterations", "2", "--out", "run"],
                       [one, two]))
    # Rank 1 received what training reads (configs, tokenizer, token store) and wrote nothing itself.
    for name in ("run.json", "model.ron", "train.ron", "tokenizer.ron", "data/tokens.bin",
                 "data/manifest.json"):
        assert (two / "run" / name).read_bytes() == (one / "run" / name).read_bytes(), name
    assert not (two / "run" / "metrics.jsonl").exists() and not (two / "run" / "checkpoints").exists()

    # A resume sends rank 0's latest checkpoint along; both ranks continue from it in step.
    errors = finish(start_ranks(["train", "--resume", "run", "--iterations", "3", "--no-tui"], [one, two],
                                MLXSTORY_TEST_DUMP=str(dumps)))
    assert errors[1] == "" and "from step 2" in errors[0]
    assert read_latest(two / "run")["step"] == 2 and read_latest(one / "run")["step"] == 3
    rank0, rank1 = load_dump(dumps / "rank-0.npz"), load_dump(dumps / "rank-1.npz")
    for name in rank0:
        np.testing.assert_array_equal(rank1[name], rank0[name], err_msg=name)

    # A folder on rank 1's machine holding another run's checkpoints is never trained over.
    shutil.copytree(two / "run", two / "other")
    ranks = start_ranks(["train", "--data", str(stories), *FAST, "--iterations", "2", "--out", "other"],
                        [one, two])
    errors = [rank.communicate(timeout=TIMEOUT)[1] for rank in ranks]
    assert [rank.returncode for rank in ranks] == [1, 1]
    assert errors[1].startswith("error: rank 1: other on this machine holds another run's checkpoints;")
    assert errors[0].endswith("error: rank 0: another rank could not take a copy of other "
                              "(its error says why)\n")
    assert errors[1].count("\n") == 1 and read_latest(one / "other") is None


def test_a_rank_that_dies_stops_the_other_with_one_error_line(tmp_path, stories):
    run = tmp_path / "run"
    ranks = start_ranks(["train", "--data", str(stories), *FAST, "--iterations", "8", "--out", str(run)],
                        [tmp_path, tmp_path], MLXSTORY_TEST_DIE="1@3")
    ranks[1].wait(timeout=TIMEOUT)
    died = time.monotonic()
    _, err = ranks[0].communicate(timeout=TIMEOUT)
    assert ranks[1].returncode == -9
    assert ranks[0].returncode == 1 and time.monotonic() - died < 20
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: rank 0 of 2 lost contact with the others"), err
    assert f"--resume {run}" in last
    # What was saved before the loss stays usable: the step-2 checkpoint, and the log says why it ended.
    assert read_latest(run)["step"] == 2
    assert read_metrics(run / "metrics.jsonl").events[-1].reason == "error"


def test_when_rank_0_cannot_make_the_run_every_rank_stops(tmp_path, stories):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    ranks = start_ranks(["train", "--data", str(stories), *FAST, "--out", str(taken)], [tmp_path, tmp_path])
    (_, err0), (_, err1) = (rank.communicate(timeout=TIMEOUT) for rank in ranks)
    assert [rank.returncode for rank in ranks] == [1, 1]
    assert err0.startswith("error: --out") and "already exists" in err0 and err0.count("\n") == 1
    assert err1 == "error: rank 1: rank 0 could not prepare the run (its error says why)\n"
    assert (taken / "notes.txt").read_text() == "keep me"
