from __future__ import annotations

import math

import mlxstory  # noqa: F401  isort: skip  (loads MKL before mlx.core)
import mlx.core as mx
import numpy as np
import pytest

from mlxstory.data.tokenizer import Tokenizer
from mlxstory.errors import MlxstoryError
from mlxstory.formats.config import ModelConfig
from mlxstory.generation.evaluate import encode_texts, evaluate, prefix_bytes
from mlxstory.model import GPT, cross_entropy

VOCAB = 50
CONTEXT = 8


def small_model(dropout: float = 0.0, seed: int = 0) -> GPT:
    mx.random.seed(seed)
    model = GPT(ModelConfig(
        vocab_size=VOCAB, embedding_size=32, context_length=CONTEXT, head_count=4, block_count=2,
        embedding_dropout=dropout, attention_dropout=dropout, feed_forward_dropout=dropout,
        residual_dropout=dropout,
    ))
    mx.eval(model.parameters())
    return model


def stream(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, size=n).astype(np.uint16)


def test_a_uniform_model_scores_ln_vocab_per_token():
    model = small_model()
    model.head.weight = mx.zeros_like(model.head.weight)  # every logit 0: p = 1/VOCAB for every token
    result = evaluate(model, stream(100), byte_count=250, start_token=0)
    assert result.tokens == 100
    assert result.loss == pytest.approx(math.log(VOCAB), rel=1e-6)
    assert result.perplexity == pytest.approx(VOCAB, rel=1e-5)
    assert result.bits_per_byte == pytest.approx(100 * math.log2(VOCAB) / 250, rel=1e-6)
    assert result.bytes == 250


def test_loss_is_the_mean_cross_entropy_of_the_non_overlapping_windows():
    model = small_model(seed=1)
    tokens = stream(3 * CONTEXT + 1, seed=1)  # exactly three full windows, first token as context
    windows = tokens[:-1].reshape(3, CONTEXT)
    targets = tokens[1:].reshape(3, CONTEXT)
    expected = cross_entropy(model(mx.array(windows)), mx.array(targets)).item()
    assert evaluate(model, tokens, byte_count=10).loss == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("count", [1, CONTEXT - 1, CONTEXT, CONTEXT + 1, 5 * CONTEXT + 3])
def test_every_token_is_scored_exactly_once_tail_included(count):
    model = small_model()
    assert evaluate(model, stream(count), byte_count=1, start_token=0).tokens == count
    if count > 1:
        assert evaluate(model, stream(count), byte_count=1).tokens == count - 1


def test_batch_size_does_not_change_the_result():
    model = small_model(seed=2)
    tokens = stream(10 * CONTEXT + 5, seed=2)
    results = [evaluate(model, tokens, 400, start_token=3, batch_size=b) for b in (1, 3, 64)]
    for result in results[1:]:
        assert result.tokens == results[0].tokens
        assert result.loss == pytest.approx(results[0].loss, rel=1e-6)


def test_deterministic_in_eval_mode_even_from_a_training_model():
    model = small_model(dropout=0.3, seed=3)
    assert model.training
    tokens = stream(6 * CONTEXT, seed=3)
    first = evaluate(model, tokens, 100)
    assert evaluate(model, tokens, 100) == first
    assert model.training
    model.eval()
    assert evaluate(model, tokens, 100) == first


def test_progress_reports_every_window():
    calls: list[tuple[int, int]] = []
    evaluate(small_model(), stream(7 * CONTEXT + 2), 10, batch_size=3, start_token=0,
             progress=lambda done, total: calls.append((done, total)))
    assert calls == [(3, 8), (6, 8), (7, 8), (8, 8)]


def test_shorter_context_than_the_model_is_allowed():
    result = evaluate(small_model(), stream(40), 10, context_length=4, start_token=0)
    assert result.tokens == 40


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tokens": np.array([], dtype=np.uint16)}, "nothing to evaluate"),
        ({"byte_count": 0}, "byte count"),
        ({"context_length": CONTEXT + 1}, "context_length"),
        ({"batch_size": 0}, "batch size"),
    ],
)
def test_bad_inputs_are_user_errors(kwargs, match):
    arguments = {"tokens": stream(20), "byte_count": 10, **kwargs}
    with pytest.raises(MlxstoryError, match=match):
        evaluate(small_model(), arguments.pop("tokens"), arguments.pop("byte_count"), **arguments)


def test_encode_texts_matches_the_token_store_layout(sample_texts):
    texts = sample_texts[:20]
    tokenizer = Tokenizer.train(texts, vocab_size=200)
    tokens, byte_count = encode_texts(texts, tokenizer)
    assert byte_count == sum(len(t.encode("utf-8")) for t in texts)
    assert (tokens == tokenizer.eot_id).sum() == len(texts) and tokens[-1] == tokenizer.eot_id
    stories = tokenizer.decode(tokens.tolist()).split("<|endoftext|>")
    assert stories[:-1] == texts


def test_a_token_prefix_counts_the_bytes_of_the_text_it_encodes(sample_texts):
    texts = [t.strip() for t in sample_texts[:30]]
    tokenizer = Tokenizer.train(texts, vocab_size=200)
    tokens, byte_count = encode_texts(texts, tokenizer)
    first_story = len(tokenizer.encode(texts[0])) + 1  # and its <|endoftext|>, which adds no bytes
    assert prefix_bytes(tokens[:first_story], tokenizer) == len(texts[0].encode("utf-8"))
    assert prefix_bytes(tokens, tokenizer) == byte_count
    # Stopping early gives the same prefix as cutting the whole stream, and its bytes.
    prefix, prefix_byte_count = encode_texts(iter(texts), tokenizer, max_tokens=first_story + 5)
    assert prefix.tolist() == tokens[: first_story + 5].tolist()
    assert prefix_byte_count == len(tokenizer.decode(tokens[:first_story + 5]).replace("<|endoftext|>", "")
                                     .encode("utf-8"))
    assert encode_texts(texts, tokenizer, max_tokens=10**9)[1] == byte_count  # more than there is: all
    unknown = tokenizer.encode("a cat \u2603", on_unknown="ignore")  # the snowman is not in the alphabet
    assert tokenizer.unk_id in unknown and prefix_bytes(np.array(unknown), tokenizer) == len("a cat ") + 1
