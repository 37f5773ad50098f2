"""`mlxstory train` through the CLI: the scripted contract, resume, refusals, offline fallback, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlxstory.cli import app
from mlxstory.data import hub, sources
from mlxstory.training.checkpoint import read_latest

FAST = ["--preset", "tiny", "--batch-size", "4", "--no-tui"]


def invoke(*args: str):
    return CliRunner().invoke(app, ["train", *args])


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_the_scripted_contract_then_resume_to_more_steps(tmp_path: Path, sample_parquet: Path):
    run = tmp_path / "run"
    result = invoke("--data", str(sample_parquet), *FAST, "--iterations", "4", "--eval-interval", "2",
                    "--out", str(run))
    assert result.exit_code == 0, result.output
    assert f'mlxstory generate --run {run} "Once upon a time"' in result.stderr
    assert f"mlxstory dashboard {run}" in result.stderr
    lines = records(run)
    steps = [r for r in lines if r["event"] == "step"]
    evals = [r for r in lines if r["event"] == "eval"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4] and [r["step"] for r in evals] == [2, 4]
    assert all(isinstance(r[k], float) for r in steps for k in ("loss", "lr", "tokens_per_second"))
    assert {p.name for p in run.glob("checkpoints/*.safetensors")} >= {"step-000004.safetensors"}
    assert json.loads((run / "run.json").read_text())["preset"] == "tiny"

    result = invoke("--resume", str(run), "--iterations", "6", "--no-tui")
    assert result.exit_code == 0, result.output
    assert read_latest(run)["step"] == 6
    assert "training_iterations: 6" in (run / "train.ron").read_text()
    assert [r["step"] for r in records(run) if r["event"] == "step"][-2:] == [5, 6]


def test_an_existing_run_is_never_overwritten(tmp_path: Path, sample_parquet: Path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("keep me")
    result = invoke("--data", str(sample_parquet), *FAST, "--iterations", "2", "--out", str(run))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "already exists" in result.stderr
    assert [p.name for p in run.iterdir()] == ["notes.txt"] and (run / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--device", "tpu"], "--device must be cpu or gpu"),
        (["--iterations", "0"], "--iterations must be at least 1, got 0"),
        (["--lr", "-1"], "--lr must be a positive learning rate, got -1.0"),
        (["--lr", "nan"], "--lr must be a positive learning rate, got nan"),
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--data", "missing.parquet"], "data source not found"),
        (["--resume", "nowhere"], "does not exist"),
        (["--resume", "nowhere", "--data", "x.parquet"], "--data cannot be combined with --resume"),
    ],
)
def test_bad_input_is_one_error_line(tmp_path: Path, args: list[str], expected: str):
    result = invoke(*args, "--no-tui", *([] if "--resume" in args else ["--out", str(tmp_path / "r")]))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and expected in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_without_data_and_offline_it_says_so_and_trains_on_the_demo_corpus(tmp_path: Path, monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(dataset: object) -> Path:
        raise LocalEntryNotFoundError("outgoing traffic has been disabled")

    monkeypatch.setattr(hub, "download", offline)
    run = tmp_path / "run"
    result = invoke(*FAST, "--iterations", "2", "--out", str(run))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "demo corpus" in warnings[0] and "tinystories-10k" in warnings[0]
    info = json.loads((run / "run.json").read_text())
    assert info["dataset"] == "demo" and "demo corpus" in info["notes"][0]

    strict = invoke("--data", "tinystories-10k", *FAST, "--out", str(tmp_path / "strict"))
    assert strict.exit_code == 1 and "--data" in strict.stderr


@pytest.mark.parametrize(("preset", "name"), [("mac", "tinystories"), ("tiny", "tinystories-10k")])
def test_without_data_a_preset_trains_on_its_default_hub_dataset(
    tmp_path: Path, monkeypatch, sample_parquet: Path, preset: str, name: str
):
    from hub_fakes import FakeHub, use_offline_cache

    from mlxstory.cli.train_command import choose_data

    text = tmp_path / "TinyStories-train.txt"
    text.write_text("One story.\n<|endoftext|>\nAnother story.\n<|endoftext|>\n", "utf-8")
    FakeHub(monkeypatch, tmp_path / "cache", {
        "roneneldan/TinyStories": {"TinyStories-train.txt": text},
        "flpelerin/tinystories-10k": {"data/train.parquet": sample_parquet},
    })
    texts = choose_data(None, preset)["texts"]
    assert texts.name == name and texts.fallback_reason is None
    assert len(texts.read_all().texts) == (2 if preset == "mac" else 2450)  # streamed: read it here

    use_offline_cache(monkeypatch, tmp_path / "empty-cache")  # same offline rule as ever: demo, and why
    texts = choose_data(None, preset)["texts"]
    assert texts.name == "demo" and texts.fallback_reason.startswith(f"{name} is not cached")


def test_a_run_over_too_little_data_warns_once_with_the_numbers(tmp_path: Path, sample_texts: list[str]):
    data = tmp_path / "few.txt"
    data.write_text("\n<|endoftext|>\n".join(sample_texts[:8]), "utf-8")
    run = tmp_path / "run"
    result = invoke("--data", str(data), *FAST, "--iterations", "150", "--out", str(run))
    assert result.exit_code == 0, result.output
    info = json.loads((run / "run.json").read_text())
    assert info["epochs"] == pytest.approx(150 * 4 * 64 / info["train_tokens"]) and info["epochs"] > 10
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"{info['epochs']:,.1f} times" in warnings[0]
    assert f"{info['train_tokens']:,}" in warnings[0] and "fewer --iterations" in warnings[0]
    start = records(run)[0]
    assert (start["train_tokens"], start["epochs"]) == (info["train_tokens"], pytest.approx(info["epochs"]))
    assert [r["event"] for r in records(run)].count("warning") == 1


def test_a_diverging_run_exits_non_zero_with_the_reason(tmp_path: Path, sample_parquet: Path):
    run = tmp_path / "run"
    result = invoke("--data", str(sample_parquet), *FAST, "--iterations", "50", "--lr", "1e30",
                    "--out", str(run))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith("error: training diverged at step")


def test_ctrl_c_finishes_the_step_saves_and_names_the_resume_command(tmp_path: Path, sample_parquet: Path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "mlxstory", "train", "--data", str(sample_parquet), *FAST,
               "--iterations", "100000", "--out", str(run)]
    log = tmp_path / "stderr.txt"
    with log.open("wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 180
        metrics = run / "metrics.jsonl"
        while not (metrics.exists() and '"event": "step"' in metrics.read_text()):
            assert time.monotonic() < deadline and process.poll() is None, log.read_text()[-2000:]
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=180)
    finally:
        process.kill()
    output = log.read_text()
    assert process.returncode == 0, output[-2000:]
    assert f"mlxstory train --resume {run}" in output
    last_step = [r["step"] for r in records(run) if r["event"] == "step"][-1]
    assert read_latest(run)["step"] == last_step
    assert records(run)[-1]["event"] == "done" and records(run)[-1]["reason"] == "interrupted"


def test_a_token_store_from_mlxstory_tokenize_is_used_as_is(tmp_path: Path, sample_texts: list[str]):
    from mlxstory.data.token_store import build_token_store
    from mlxstory.formats.config import ModelConfig, load_config

    store = tmp_path / "store"
    build_token_store(store, sources.SourceTexts(sample_texts[:300], "sample-300", "300 stories"), 300)
    run = tmp_path / "run"
    result = invoke("--data", str(store), *FAST, "--iterations", "1", "--out", str(run))
    assert result.exit_code == 0, result.output
    assert load_config(ModelConfig, run / "model.ron").vocab_size == 300  # follows the store's tokenizer
    assert "vocab_size set to the tokenizer's 300 (config asked for 512)" in result.stderr
    assert not (run / "data").exists()
    assert json.loads((run / "run.json").read_text())["dataset"] == "sample-300"
