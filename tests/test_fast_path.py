"""The CPU fast path trains the same model: equal loss and gradients with dropout off, and dropout
with the plain path's statistics when on."""

from __future__ import annotations

import dataclasses

import mlxstory  # noqa: F401  isort: skip  (loads MKL before mlx.core)
import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlxstory.formats.config import ModelConfig
from mlxstory.model import GPT, fast_path, loss_fn

CONFIG = ModelConfig(vocab_size=128, embedding_size=32, context_length=16, head_count=4, block_count=2,
                     embedding_dropout=0.1, attention_dropout=0.1, feed_forward_dropout=0.1,
                     residual_dropout=0.1)


def assert_same_loss_and_gradients(
    loss: mx.array, grads: dict, plain_loss: mx.array, plain_grads: dict
) -> None:
    """The plain path's loss and every parameter's gradient, to fp32 rounding."""
    assert loss.item() == pytest.approx(plain_loss.item(), abs=1e-5)
    fast = dict(tree_flatten(grads))
    for name, grad in tree_flatten(plain_grads):
        np.testing.assert_allclose(np.array(fast[name]), np.array(grad), atol=2e-6, rtol=1e-4, err_msg=name)


def batch(seed: int, B: int = 4) -> tuple[mx.array, mx.array]:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, CONFIG.vocab_size, size=(B, CONFIG.context_length + 1))
    return mx.array(tokens[:, :-1]), mx.array(tokens[:, 1:])


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("mode", ["eval", "train-without-dropout"])
def test_loss_and_gradients_equal_the_plain_path(mode, activation):
    config = dataclasses.replace(CONFIG, activation=activation)
    if mode == "train-without-dropout":
        config = dataclasses.replace(config, embedding_dropout=0.0, attention_dropout=0.0,
                                     feed_forward_dropout=0.0, residual_dropout=0.0)
    mx.random.seed(0)
    model = GPT(config)
    model.train(mode != "eval")
    x, y = batch(1)
    plain_loss, plain_grads = nn.value_and_grad(model, loss_fn)(model, x, y)
    fast_value_and_grad = nn.value_and_grad(model, fast_path.fast_loss_fn)
    # Compiled, as the training step runs it: the JIT-fused kernels are what must agree.
    fast_loss, fast_grads = mx.compile(lambda x, y: fast_value_and_grad(model, x, y))(x, y)
    assert_same_loss_and_gradients(fast_loss, fast_grads, plain_loss, plain_grads)


def test_fast_logits_equal_the_model_in_eval_mode():
    mx.random.seed(1)
    model = GPT(CONFIG)
    model.eval()
    x, _ = batch(2)
    np.testing.assert_allclose(np.array(fast_path.fast_forward(model, x)), np.array(model(x)), atol=1e-5)


def test_hashed_dropout_keeps_one_minus_p_and_rescales():
    x = mx.ones((256, 1024))
    seed = mx.array([12345, 678], dtype=mx.uint32)
    out = np.array(fast_path.hashed_dropout(x, 0.1, seed))
    kept = out != 0
    assert kept.mean() == pytest.approx(0.9, abs=0.003)
    assert np.allclose(out[kept], 1 / 0.9)
    # No structure along rows or columns: every row and column keeps about 90%.
    assert np.abs(kept.mean(axis=1) - 0.9).max() < 0.1
    assert np.abs(kept.mean(axis=0) - 0.9).max() < 0.1


def test_hashed_dropout_masks_depend_on_the_seed_only():
    x = mx.ones((64, 64))
    a = mx.array([1, 2], dtype=mx.uint32)
    b = mx.array([1, 3], dtype=mx.uint32)
    mask_a = np.array(fast_path.hashed_dropout(x, 0.5, a)) != 0
    assert np.array_equal(mask_a, np.array(fast_path.hashed_dropout(x, 0.5, a)) != 0)
    agreement = (mask_a == (np.array(fast_path.hashed_dropout(x, 0.5, b)) != 0)).mean()
    assert agreement == pytest.approx(0.5, abs=0.05)  # independent masks agree half the time


def test_training_loss_with_dropout_has_the_plain_paths_distribution():
    """Same weights and batch, 40 dropout draws each: the mean losses agree within noise."""
    mx.random.seed(2)
    model = GPT(CONFIG)
    model.train()
    x, y = batch(3)
    plain, fast = [], []
    for seed in range(40):
        mx.random.seed(seed)
        plain.append(loss_fn(model, x, y).item())
        mx.random.seed(seed)
        fast.append(fast_path.fast_loss_fn(model, x, y).item())
    model.eval()
    no_dropout = loss_fn(model, x, y).item()
    spread = np.std(plain) + np.std(fast)
    assert spread > 0  # dropout is active in both
    assert abs(np.mean(plain) - np.mean(fast)) < 4 * spread / np.sqrt(40)
    assert np.mean(fast) != pytest.approx(no_dropout, abs=1e-6)


def test_fast_path_is_chosen_for_the_cpu_only():
    assert fast_path.training_loss_fn(mx.cpu) is fast_path.fast_loss_fn
    assert fast_path.training_loss_fn(mx.gpu) is loss_fn


@pytest.mark.parametrize("batch_size", [4, 5, 64])
def test_batch_split_over_cpu_streams_gives_the_whole_batch_mean(monkeypatch, batch_size):
    """Two CPU streams each take part of the batch; the weighted mean is the whole batch's loss and
    gradient (uneven parts too), inside `mx.compile` as the training step runs it."""
    monkeypatch.setenv("MLXSTORY_CPU_STREAMS", "2")
    config = dataclasses.replace(CONFIG, embedding_dropout=0.0, attention_dropout=0.0,
                                 feed_forward_dropout=0.0, residual_dropout=0.0)
    mx.random.seed(4)
    model = GPT(config)
    model.train()
    x, y = batch(5, B=batch_size)
    plain_loss, plain_grads = nn.value_and_grad(model, loss_fn)(model, x, y)
    split = fast_path.training_value_and_grad(model, mx.cpu)
    loss, grads = mx.compile(lambda x, y: split(model, x, y))(x, y)
    assert_same_loss_and_gradients(loss, grads, plain_loss, plain_grads)
