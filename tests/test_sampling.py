from __future__ import annotations

import math

import mlxstory  # noqa: F401  isort: skip  (loads MKL before mlx.core)
import mlx.core as mx
import numpy as np
import pytest

from mlxstory.errors import MlxstoryError
from mlxstory.generation.sampling import apply_top_k, apply_top_p, make_sampler

NEG = -math.inf


def _log_probs(*probs: float) -> mx.array:
    return mx.log(mx.array([list(probs)]))


def test_top_k_keeps_the_k_largest_logits():
    out = apply_top_k(mx.array([[1.0, 3.0, 2.0, 0.0]]), 2)
    assert out.tolist() == [[NEG, 3.0, 2.0, NEG]]


def test_top_k_zero_or_vocab_size_is_off():
    logits = mx.array([[1.0, 3.0, 2.0]])
    assert apply_top_k(logits, 0).tolist() == logits.tolist()
    assert apply_top_k(logits, 3).tolist() == logits.tolist()


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = _log_probs(0.15, 0.5, 0.05, 0.3)
    kept = np.isfinite(np.array(apply_top_p(logits, 0.7)))[0]
    assert kept.tolist() == [False, True, False, True]  # 0.5 + 0.3 >= 0.7
    kept = np.isfinite(np.array(apply_top_p(logits, 0.85)))[0]
    assert kept.tolist() == [True, True, False, True]


def test_top_p_always_keeps_the_most_likely_token():
    kept = np.isfinite(np.array(apply_top_p(_log_probs(0.15, 0.5, 0.05, 0.3), 0.01)))[0]
    assert kept.tolist() == [False, True, False, False]


def test_top_p_works_per_row():
    logits = mx.concatenate([_log_probs(0.9, 0.05, 0.05), _log_probs(0.4, 0.35, 0.25)])
    kept = np.isfinite(np.array(apply_top_p(logits, 0.7))).tolist()
    assert kept == [[True, False, False], [True, True, False]]


def test_temperature_zero_is_argmax_whatever_the_key():
    sampler = make_sampler(0.0, top_k=5, top_p=0.5)
    logits = mx.array([[0.1, 2.0, 1.9], [5.0, 0.0, 4.0]])
    for seed in range(3):
        assert sampler(logits, mx.random.key(seed)).tolist() == [1, 0]


def test_same_key_same_tokens_and_keys_matter():
    sampler = make_sampler(1.0)
    logits = mx.zeros((64, 50))
    a = sampler(logits, mx.random.key(7)).tolist()
    assert a == sampler(logits, mx.random.key(7)).tolist()
    assert a != sampler(logits, mx.random.key(8)).tolist()


def test_samples_follow_the_distribution_at_temperature_one():
    rows = 4000
    logits = mx.broadcast_to(_log_probs(0.7, 0.2, 0.1), (rows, 3))
    tokens = np.array(make_sampler(1.0)(logits, mx.random.key(0)))
    freq = np.bincount(tokens, minlength=3) / rows
    assert np.allclose(freq, [0.7, 0.2, 0.1], atol=0.03)


def test_low_temperature_sharpens_the_distribution():
    rows = 2000
    logits = mx.broadcast_to(_log_probs(0.6, 0.4), (rows, 2))
    tokens = np.array(make_sampler(0.25)(logits, mx.random.key(1)))
    # (0.6/0.4)^4 = 5.06: the favourite now wins about 83% of draws
    assert 0.78 < (tokens == 0).mean() < 0.88


def test_filters_never_sample_outside_what_they_keep():
    rows = 2000
    logits = mx.broadcast_to(_log_probs(0.1, 0.4, 0.2, 0.3), (rows, 4))
    top2 = np.array(make_sampler(1.0, top_k=2)(logits, mx.random.key(2)))
    assert set(np.unique(top2)) == {1, 3}
    nucleus = np.array(make_sampler(1.0, top_p=0.65)(logits, mx.random.key(3)))
    assert set(np.unique(nucleus)) == {1, 3}


def test_a_vanishing_temperature_is_greedy_and_keeps_to_the_filters():
    # Dividing these logits by 1e-39 would overflow every one of them to -inf (argmax: token 0,
    # which top-k removed); below 1e-6 the sampler is the argmax.
    logits = mx.array([[-3.0, -1.0, -2.0]])
    for temperature in (1e-39, 1e-7):
        sampler = make_sampler(temperature, top_k=2)
        assert [sampler(logits, mx.random.key(seed)).item() for seed in range(5)] == [1] * 5


@pytest.mark.parametrize(
    "kwargs", [{"temperature": -0.1}, {"temperature": float("nan")}, {"top_k": -1}, {"top_p": 0.0},
               {"top_p": 1.5}]
)
def test_bad_settings_are_user_errors(kwargs):
    with pytest.raises(MlxstoryError):
        make_sampler(**{"temperature": 1.0, **kwargs})
