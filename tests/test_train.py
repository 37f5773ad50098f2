from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import mlxstory  # noqa: F401  isort: skip  (loads MKL before mlx.core)
import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlxstory.data.batches import fixed_batches
from mlxstory.data.sources import SourceTexts
from mlxstory.data.token_store import TokenStore
from mlxstory.formats.config import ModelConfig, TrainConfig, load_preset
from mlxstory.model.gpt import loss_fn
from mlxstory.training.checkpoint import load_model, read_latest
from mlxstory.training.events import CheckpointSaved, EvalCompleted, RunFinished, RunStarted, StepCompleted
from mlxstory.training.metrics_log import read_metrics
from mlxstory.training.run_dir import create_run, open_run
from mlxstory.training.train import EVAL_VAL_STREAM, TrainingControl, train


@pytest.fixture(scope="module")
def small_corpus(sample_texts: list[str]) -> SourceTexts:
    return SourceTexts(sample_texts[:400], "sample-400", "400 TinyStories sample stories")


def configs(**train_overrides) -> tuple[ModelConfig, TrainConfig]:
    """The tiny preset at a test size: 8 windows of 32 tokens per step."""
    model, train_config = load_preset("tiny")
    model = replace(model, vocab_size=384, context_length=32)
    train_config = replace(train_config, contexts_per_batch=8, evaluation_iterations=2, warmup_iterations=2,
                           training_iterations=6, evaluation_interval=3)
    return model, replace(train_config, **train_overrides)


def make_run(path: Path, corpus: SourceTexts, model: ModelConfig, train_config: TrainConfig) -> Path:
    create_run(path, model_config=model, train_config=train_config, preset="tiny", texts=corpus)
    return path


def parameters(model) -> dict[str, np.ndarray]:
    return {name: np.array(value) for name, value in tree_flatten(model.parameters())}


def test_a_short_run_emits_events_writes_metrics_and_a_loadable_checkpoint(tmp_path, small_corpus):
    run = make_run(tmp_path / "run", small_corpus, *configs())
    events = list(train(run))

    kinds = [type(e).__name__ for e in events]
    assert kinds == ["RunStarted"] + ["StepCompleted"] * 3 + ["EvalCompleted", "CheckpointSaved"] \
        + ["StepCompleted"] * 3 + ["EvalCompleted", "CheckpointSaved", "RunFinished"]
    start, done = events[0], events[-1]
    assert isinstance(start, RunStarted) and start.total_steps == 6 and start.tokens_per_step == 8 * 32
    assert isinstance(done, RunFinished) and done.reason == "completed"
    steps = [e for e in events if isinstance(e, StepCompleted)]
    assert [e.step for e in steps] == [1, 2, 3, 4, 5, 6]
    assert all(e.tokens_per_second > 0 and e.grad_norm > 0 and e.peak_memory_bytes > 0 for e in steps)
    assert steps[1].lr == pytest.approx(2e-3)  # warmup of 2 reaches the tiny preset's peak

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == [e.kind for e in events]
    step_record = next(r for r in records if r["event"] == "step")
    assert {"step", "loss", "lr", "tokens_per_second"} <= set(step_record)
    eval_record = next(r for r in records if r["event"] == "eval")
    assert {"step", "train_loss", "val_loss"} <= set(eval_record)

    assert sorted(p.name for p in (run / "checkpoints").glob("*.safetensors")) == [
        "step-000003.optimizer.safetensors", "step-000003.safetensors",
        "step-000006.optimizer.safetensors", "step-000006.safetensors",
    ]
    loaded = load_model(run)
    assert loaded.step == 6 and not loaded.model.training
    assert loaded.tokenizer.vocab_size == 384
    last_eval = [e for e in events if isinstance(e, EvalCompleted)][-1]
    assert done.checkpoint == str(loaded.checkpoint_path)
    # The loaded weights are the trained ones: scored afresh on the run's validation windows (the same
    # seeded draw the trainer evaluates on), they reproduce the final eval's val loss.
    model_config, train_config = configs()
    val_tokens = TokenStore.open(open_run(run).data_path).split_tokens("val")
    windows = fixed_batches(val_tokens, model_config.context_length, train_config.contexts_per_batch,
                            train_config.evaluation_iterations, seed=[train_config.seed, EVAL_VAL_STREAM],
                            split="val")
    val_loss = np.mean([loss_fn(loaded.model, mx.array(x), mx.array(y)).item() for x, y in windows])
    assert val_loss == pytest.approx(last_eval.val_loss, rel=1e-5)


def stop_after(events, step: int, control: TrainingControl):
    for event in events:
        if isinstance(event, StepCompleted) and event.step == step:
            control.request_stop()
        yield event


def test_stop_and_resume_gives_the_same_weights_as_one_uninterrupted_run(tmp_path, small_corpus):
    model_config, train_config = configs(training_iterations=12, evaluation_interval=4)
    model_config = replace(model_config, embedding_dropout=0.1, attention_dropout=0.1,
                           feed_forward_dropout=0.1, residual_dropout=0.1)  # dropout must resume exactly too
    straight = make_run(tmp_path / "straight", small_corpus, model_config, train_config)
    list(train(straight))

    halves = make_run(tmp_path / "halves", small_corpus, model_config, train_config)
    control = TrainingControl()
    first = list(stop_after(train(halves, control=control), 6, control))
    assert isinstance(first[-1], RunFinished) and first[-1].reason == "interrupted"
    assert f"--resume {halves}" in first[-1].message
    assert read_latest(halves)["step"] == 6
    second = list(train(halves, resume=True))
    assert second[0].start_step == 6 and second[-1].reason == "completed"

    expected, got = parameters(load_model(straight).model), parameters(load_model(halves).model)
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-6, err_msg=name)
    # Both attempts' records are in the log; the resumed run's RunStarted says where it restarted.
    starts = [e for e in read_metrics(halves / "metrics.jsonl").events if isinstance(e, RunStarted)]
    assert [e.start_step for e in starts] == [0, 6]


def test_gradient_accumulation_equals_one_batch_of_the_same_windows(tmp_path, small_corpus):
    # Two micro-batches of 4 windows draw exactly the 8 windows one batch of 8 draws.
    model_config, _ = configs()
    whole = make_run(tmp_path / "whole", small_corpus, model_config, configs(training_iterations=3)[1])
    micro = make_run(tmp_path / "micro", small_corpus, model_config,
                     configs(training_iterations=3, contexts_per_batch=4, gradient_accumulation=2)[1])
    whole_steps = [e for e in train(whole) if isinstance(e, StepCompleted)]
    micro_steps = [e for e in train(micro) if isinstance(e, StepCompleted)]
    assert micro_steps[0].loss == pytest.approx(whole_steps[0].loss, rel=1e-5)
    assert micro_steps[-1].grad_norm == pytest.approx(whole_steps[-1].grad_norm, rel=1e-4)
    a, b = parameters(load_model(whole).model), parameters(load_model(micro).model)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], atol=1e-5, err_msg=name)


def test_an_exploding_learning_rate_stops_cleanly_and_keeps_the_last_good_checkpoint(tmp_path, small_corpus):
    model_config, train_config = configs(training_iterations=40, evaluation_interval=2)
    run = make_run(tmp_path / "run", small_corpus, model_config, train_config)
    control = TrainingControl()
    list(stop_after(train(run, control=control), 2, control))
    good = read_latest(run)
    assert good["step"] == 2

    (run / "train.ron").write_text((run / "train.ron").read_text().replace("learning_rate: 0.002",
                                                                           "learning_rate: 1e30"))
    events = list(train(run, resume=True))
    done = events[-1]
    assert done.reason == "diverged"
    assert "diverged" in done.message and "--lr" in done.message
    assert done.checkpoint.endswith("step-000002.safetensors")
    assert read_latest(run)["step"] == 2
    assert not any(isinstance(e, CheckpointSaved) for e in events)
    assert load_model(run).step == 2
    assert all(line.strip() for line in (run / "metrics.jsonl").read_text().splitlines())
    assert read_metrics(run / "metrics.jsonl").warnings == []  # no NaN written as invalid JSON


def test_pause_and_save_now_from_another_thread(tmp_path, small_corpus):
    run = make_run(tmp_path / "run", small_corpus, *configs(evaluation_interval=100))
    control = TrainingControl()
    resumed = threading.Event()

    def resume() -> None:
        resumed.set()
        control.resume()

    watchdog = threading.Timer(30, control.resume)  # a save never served while paused fails, not hangs
    watchdog.start()
    seen = []
    try:
        for event in train(run, control=control):
            seen.append(event)
            if isinstance(event, StepCompleted) and event.step == 2:
                control.pause()
                threading.Timer(0.2, control.request_save).start()  # arrives while the trainer waits, paused
            elif isinstance(event, CheckpointSaved) and event.step == 2:
                threading.Timer(0.05, resume).start()
            elif isinstance(event, StepCompleted) and event.step == 3:
                assert resumed.is_set(), "step 3 ran before resume(): the pause did not hold"
    finally:
        watchdog.cancel()
    kinds = [(type(e).__name__, e.step) for e in seen[2:5]]
    assert kinds == [("StepCompleted", 2), ("CheckpointSaved", 2), ("StepCompleted", 3)]
    saved = [e for e in seen if isinstance(e, CheckpointSaved)]
    assert [(e.step, e.val_loss) for e in saved[:1]] == [(2, None)]  # saved while paused, no eval
    assert seen[-1].reason == "completed" and saved[-1].step == 6


def test_a_new_run_refuses_to_train_over_existing_checkpoints(tmp_path, small_corpus):
    from mlxstory.errors import MlxstoryError

    run = make_run(tmp_path / "run", small_corpus, *configs(training_iterations=3))
    list(train(run))
    with pytest.raises(MlxstoryError, match="--resume"):
        next(train(run))


def test_resuming_a_finished_run_says_how_to_go_further(tmp_path, small_corpus):
    run = make_run(tmp_path / "run", small_corpus, *configs(training_iterations=3))
    list(train(run))
    events = list(train(run, resume=True))
    assert events[-1].reason == "completed" and "--iterations" in events[-1].message


def test_a_run_that_would_pass_over_its_data_too_often_warns_once_with_the_numbers(tmp_path, sample_texts):
    from mlxstory.data.token_store import TokenStore
    from mlxstory.training.events import Warning

    corpus = SourceTexts(sample_texts[:40], "sample-40", "40 stories")
    run = make_run(tmp_path / "run", corpus, *configs(training_iterations=2000))
    train_tokens = len(TokenStore.open(run / "data").split_tokens("train"))
    epochs = 2000 * 8 * 32 / train_tokens
    assert epochs > 10
    info = json.loads((run / "run.json").read_text())
    assert info["train_tokens"] == train_tokens and info["epochs"] == pytest.approx(epochs, rel=1e-4)

    events = train(run)
    start, warning, first_step = next(events), next(events), next(events)
    events.close()  # the warning comes before any step: no need to train 2,000 of them
    assert isinstance(start, RunStarted) and start.train_tokens == train_tokens
    assert start.epochs == pytest.approx(epochs)
    assert isinstance(warning, Warning) and isinstance(first_step, StepCompleted)
    assert f"{epochs:,.1f} times" in warning.message and f"{train_tokens:,}" in warning.message
    assert "--iterations" in warning.message and "more data" in warning.message
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["message"] for r in logged if r["event"] == "warning"] == [warning.message]

    # Fewer --iterations on resume: run.json follows, and there is nothing to warn about.
    resumed = list(train(run, resume=True, overrides={"training_iterations": 3}))
    assert not [e for e in resumed if isinstance(e, Warning)]
    assert resumed[0].epochs == pytest.approx(3 * 8 * 32 / train_tokens) and resumed[0].epochs < 1
    assert json.loads((run / "run.json").read_text())["epochs"] == pytest.approx(resumed[0].epochs, rel=1e-4)
