"""Memory savings keep the math: the plain path's loss and gradients equal the formulation before them
(dropout included, same seed), and a step fitted to a memory budget stays within it."""

from __future__ import annotations

import dataclasses

import mlxstory  # noqa: F401  isort: skip  (loads MKL before mlx.core)
import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

import mlxstory.model.gpt as gpt
from benchmarks.memory import Step, reference_loss_fn
from mlxstory.data.batches import BatchSampler
from mlxstory.formats.config import ModelConfig, TrainConfig
from mlxstory.model.gpt import GPT, cross_entropy, head_cross_entropy, loss_fn
from mlxstory.training import memory
from mlxstory.training.optimizer import AdamW
from mlxstory.training.train import make_train_step

CONFIG = ModelConfig(vocab_size=96, embedding_size=32, context_length=16, head_count=4, block_count=2,
                     embedding_dropout=0.1, attention_dropout=0.1, feed_forward_dropout=0.1,
                     residual_dropout=0.1)


def batch(config: ModelConfig, B: int = 4, seed: int = 1) -> tuple[mx.array, mx.array]:
    tokens = np.random.default_rng(seed).integers(0, config.vocab_size, size=(B, config.context_length + 1))
    return mx.array(tokens[:, :-1].astype(np.int32)), mx.array(tokens[:, 1:].astype(np.int32))


def loss_and_grads(model: GPT, fn, x, y, *, compiled: bool, seed: int = 7):
    mx.random.seed(seed)  # the same dropout draws for every formulation
    value_and_grad = nn.value_and_grad(model, fn)
    def step(a, b):
        return value_and_grad(model, a, b)

    if compiled:  # as the training step: the random key goes in and out
        step = mx.compile(step, inputs=[mx.random.state], outputs=[mx.random.state])
    loss, grads = step(x, y)
    mx.eval(loss, grads)
    return loss.item(), dict(tree_flatten(grads)), np.array(mx.random.state[0])


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("compiled", [False, True])
def test_loss_and_gradients_equal_the_formulation_before_with_dropout(activation, recompute, compiled):
    config = dataclasses.replace(CONFIG, activation=activation)
    mx.random.seed(0)
    model = GPT(config)
    model.train()
    x, y = batch(config)
    before_loss, before_grads, before_key = loss_and_grads(model, reference_loss_fn, x, y, compiled=False)
    model.recompute_blocks = recompute
    loss, grads, key = loss_and_grads(model, loss_fn, x, y, compiled=compiled)
    assert loss == pytest.approx(before_loss, abs=1e-5)
    for name, grad in before_grads.items():
        np.testing.assert_allclose(np.array(grads[name]), np.array(grad), atol=2e-6, rtol=1e-4, err_msg=name)
    assert (key == before_key).all()  # the same number of draws: later steps see the same stream
    other_loss, _, _ = loss_and_grads(model, loss_fn, x, y, compiled=compiled, seed=8)
    assert other_loss != pytest.approx(loss, abs=1e-6)  # dropout is on: another seed, other masks


def test_eval_mode_logits_and_loss_are_unchanged():
    mx.random.seed(2)
    model = GPT(CONFIG)
    model.eval()
    x, y = batch(CONFIG, seed=3)
    assert loss_fn(model, x, y).item() == pytest.approx(cross_entropy(model(x), y).item(), abs=1e-6)
    assert reference_loss_fn(model, x, y).item() == pytest.approx(loss_fn(model, x, y).item(), abs=1e-6)


def test_the_chunked_loss_equals_the_full_one_with_a_ragged_last_chunk(monkeypatch):
    monkeypatch.setattr(gpt, "LOSS_CHUNK_ELEMENTS", 7 * 50)  # 7 rows a chunk; 60 rows -> 8 chunks, last 4
    features = mx.random.normal((3, 20, 16), key=mx.random.key(0))
    weight = mx.random.normal((50, 16), key=mx.random.key(1))
    targets = mx.random.randint(0, 50, (3, 20), key=mx.random.key(2))

    def full(f, w):
        return cross_entropy(f @ w.T, targets)

    def chunked(f, w):
        return head_cross_entropy(f, w, targets)

    expected, expected_grads = mx.value_and_grad(full, argnums=(0, 1))(features, weight)
    value, grads = mx.value_and_grad(chunked, argnums=(0, 1))(features, weight)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    for got, want in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(np.array(got), np.array(want), atol=1e-6, rtol=1e-5)


def one_op_at_a_time_peak(fn) -> int:
    """Peak bytes of evaluating `fn()` with MLX waiting on each op (no run-ahead): what it must hold."""
    limit = mx.set_memory_limit(1)
    try:
        mx.clear_cache()
        base = mx.get_active_memory()
        mx.reset_peak_memory()
        mx.eval(fn())
        return mx.get_peak_memory() - base
    finally:
        mx.set_memory_limit(limit)


def test_the_loss_never_holds_the_whole_batch_of_logits(monkeypatch):
    monkeypatch.setattr(gpt, "LOSS_CHUNK_ELEMENTS", 2**18)  # 1 MiB chunks
    features = mx.random.normal((2048, 32), key=mx.random.key(0))
    weight = mx.random.normal((4096, 32), key=mx.random.key(1))
    targets = mx.random.randint(0, 4096, (2048,), key=mx.random.key(2))
    mx.eval(features, weight, targets)
    logits_bytes = 2048 * 4096 * 4  # 32 MiB
    grad = mx.value_and_grad(lambda f, w: head_cross_entropy(f, w, targets), argnums=(0, 1))
    assert one_op_at_a_time_peak(lambda: grad(features, weight)) < logits_bytes / 4
    full = mx.value_and_grad(lambda f, w: cross_entropy(f @ w.T, targets), argnums=(0, 1))
    assert one_op_at_a_time_peak(lambda: full(features, weight)) > 2 * logits_bytes


def test_a_plain_step_needs_less_memory_than_before_and_less_again_when_recomputing():
    config = dataclasses.replace(CONFIG, context_length=64, block_count=4)

    def peak(fn, recompute=False) -> int:
        step = Step(config, 8, fn, recompute_blocks=recompute)
        step.run()
        return one_op_at_a_time_peak(lambda: step.step(step.inputs, step.targets, step.lr))

    before, after, recomputed = peak(reference_loss_fn), peak(loss_fn), peak(loss_fn, recompute=True)
    assert after < 0.8 * before
    assert recomputed < 0.8 * after


def test_micro_batches_draw_the_same_windows_as_the_whole_batch():
    tokens = np.arange(5000, dtype=np.int32)
    whole = BatchSampler(tokens, 16, 8, seed=[1, 0, 0]).next(1)[0].reshape(-1, 16)
    split = BatchSampler(tokens, 16, 2, seed=[1, 0, 0]).next(4)[0].reshape(-1, 16)
    np.testing.assert_array_equal(whole, split)


# peak = fixed + per_row * rows (+ 2 * parameter_bytes for the gradient sum of micro-batches)
MODELS = {False: memory.MemoryModel(fixed=100, per_row=10, parameter_bytes=5),
          True: memory.MemoryModel(fixed=100, per_row=1, parameter_bytes=5)}


@pytest.mark.parametrize(("budget", "micro", "recompute"),
                         [(500, 1, False), (300, 2, False), (130, 16, False), (119, 4, True)])
def test_the_plan_is_the_fewest_micro_batches_then_recomputation(budget, micro, recompute, monkeypatch):
    monkeypatch.setattr(memory, "PLAN_SHARE", 1.0)
    plan = memory.choose(TrainConfig(contexts_per_batch=32), budget, "test", MODELS)
    assert (plan.micro_batches, plan.rows, plan.recompute_blocks) == (micro, 32 // micro, recompute)
    assert plan.peak_bytes <= budget
    assert f"{micro} micro-batch" in plan.describe() and "test" in plan.describe()


def test_a_budget_nothing_fits_is_one_clear_error():
    with pytest.raises(memory.MemoryBudgetError, match="raise --max-memory or choose a smaller model"):
        memory.choose(TrainConfig(contexts_per_batch=32), 50, "--max-memory", MODELS)


def test_a_step_fitted_to_a_budget_stays_within_it():
    """Probe, plan, then train a compiled step (as `mlxstory train`) under MLX's memory limit."""
    config = dataclasses.replace(CONFIG, context_length=64, block_count=3)
    train_config = TrainConfig(contexts_per_batch=16)
    whole = memory.probe(config, False)
    budget = int(whole.peak(16, 1) * 0.6)  # the whole batch at once does not fit
    fitted, plan = memory.fit(config, train_config, budget, "test")
    assert plan.micro_batches > 1 or plan.recompute_blocks
    assert fitted.contexts_per_batch * fitted.gradient_accumulation == 16
    mx.random.seed(0)
    model = GPT(config)
    model.train()
    optimizer = AdamW(model.trainable_parameters(), model.decay_mask())
    step = make_train_step(model, optimizer, fitted)
    x, y = batch(config, B=16)
    shape = (fitted.gradient_accumulation, fitted.contexts_per_batch, config.context_length)
    x, y = x.reshape(shape), y.reshape(shape)
    limit = mx.set_memory_limit(budget)
    try:
        for _ in range(2):  # the second step has AdamW's moments
            mx.eval(model.parameters(), optimizer.state)
            mx.clear_cache()
            mx.reset_peak_memory()
            mx.eval(step(x, y, mx.array(1e-3)), model.parameters(), optimizer.state)
        assert mx.get_peak_memory() <= budget
    finally:
        mx.set_memory_limit(limit)


def test_the_default_budget_leaves_the_os_room():
    budget, source = memory.default_budget()
    assert 0 < budget < memory.total_memory_bytes()
    assert source


def test_train_max_memory_splits_the_batch_and_says_so_in_one_line(tmp_path, sample_parquet):
    from typer.testing import CliRunner

    from mlxstory.cli import app
    from mlxstory.formats.config import load_preset
    from mlxstory.training.run_dir import open_run

    whole = memory.probe(load_preset("tiny")[0], False).peak(8, 1)
    budget_gib = 0.7 * whole / memory.GIB  # the 8-window batch at once does not fit
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--data", str(sample_parquet), "--preset", "tiny",
                                      "--batch-size", "8", "--iterations", "1", "--no-tui", "--out", str(run),
                                      "--max-memory", f"{budget_gib:.6f}"])
    assert result.exit_code == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if line.startswith("memory: ")]
    assert len(said) == 1 and "micro-batches of" in said[0], result.stderr
    train_config = open_run(run).train_config
    assert train_config.gradient_accumulation > 1
    assert train_config.contexts_per_batch * train_config.gradient_accumulation == 8


def test_max_memory_sizes_the_model_with_a_token_stores_vocab(tmp_path, sample_parquet):
    """A store of vocab 4,096 doubles the `tiny` step (preset vocab 512): the plan must see that."""
    from dataclasses import replace

    from typer.testing import CliRunner

    from mlxstory.cli import app
    from mlxstory.formats.config import load_preset
    from mlxstory.training.run_dir import open_run

    store = tmp_path / "store"
    runner = CliRunner()
    made = runner.invoke(app, ["tokenize", "--data", str(sample_parquet), "--vocab-size", "4096",
                               "--out", str(store), "--workers", "1"])
    assert made.exit_code == 0, made.stderr
    tiny = load_preset("tiny")[0]
    at_store_vocab = memory.probe(replace(tiny, vocab_size=4096), False)
    # Halfway between the whole batch and 4 micro-batches at vocab 4,096: only micro-batches fit there,
    # while at the preset's vocab 512 the whole batch fits with room to spare.
    budget = (at_store_vocab.peak(8, 1) + at_store_vocab.peak(2, 4)) / 2 / memory.PLAN_SHARE
    assert memory.probe(tiny, False).peak(8, 1) < 0.7 * memory.PLAN_SHARE * budget
    budget_gib = budget / memory.GIB
    result = runner.invoke(app, ["train", "--data", str(store), "--preset", "tiny", "--batch-size", "8",
                                 "--iterations", "1", "--no-tui", "--out", str(tmp_path / "run"),
                                 "--max-memory", f"{budget_gib:.6f}"])
    assert result.exit_code == 0, result.stderr
    run = open_run(tmp_path / "run")
    assert run.model_config.vocab_size == 4096
    assert run.train_config.gradient_accumulation > 1, result.stderr


@pytest.mark.parametrize(("value", "expected"), [
    ("0", "--max-memory must be a positive number of GiB"),
    ("0.000001", "raise --max-memory or choose a smaller model"),
])
def test_train_max_memory_bad_values_are_one_error_line(tmp_path, sample_parquet, value, expected):
    from typer.testing import CliRunner

    from mlxstory.cli import app

    result = CliRunner().invoke(app, ["train", "--data", str(sample_parquet), "--preset", "tiny", "--no-tui",
                                      "--out", str(tmp_path / "r"), "--max-memory", value])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and expected in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "r").exists()
