"""Held-out loss, perplexity and bits per byte over every validation window, deterministically.

Windows do not overlap and cover the whole token stream: full `context_length` windows in batches,
then one shorter window for the tail, so every token is scored exactly once and none is dropped.
Given `start_token` (the `<|endoftext|>` that precedes every story in the training stream), the first
token is scored too; then the scored tokens are exactly the text whose UTF-8 size is `byte_count`,
and bits per byte = total nats / ln 2 / bytes compares models with different vocabularies honestly.
`<|endoftext|>` tokens are scored (ending a story is part of the model) but add no bytes, as the token
store counts story text without separators.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Any

import mlx.core as mx
import numpy as np

from mlxstory.errors import MlxstoryError

Progress = Callable[[int, int], None]  # (windows done, windows in total)


@dataclass
class EvalResult:
    loss: float  # mean nats per scored token
    perplexity: float
    bits_per_byte: float
    tokens: int  # tokens scored
    bytes: int  # UTF-8 bytes of the text those tokens encode

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


_ENCODE_CHUNK = 256  # stories encoded at a time: `max_tokens` stops early on a big source


def encode_texts(
    texts: Iterable[str], tokenizer: Any, *, max_tokens: int | None = None
) -> tuple[np.ndarray, int]:
    """A token stream as the token store builds one (each story followed by `<|endoftext|>`) and the
    UTF-8 bytes of the stories' text, for evaluating on a parquet/txt the run never tokenized.

    With `max_tokens`, only the first `max_tokens` tokens (stories are encoded until there are enough), and
    the bytes of the text those encode (`prefix_bytes`).
    """
    ids: list[int] = []
    byte_count = 0
    texts = iter(texts)
    while max_tokens is None or len(ids) < max_tokens:
        chunk = list(islice(texts, _ENCODE_CHUNK))
        if not chunk:
            break
        for story in tokenizer.encode_batch(chunk):
            ids.extend(story)
            ids.append(tokenizer.eot_id)
        byte_count += sum(len(text.encode("utf-8")) for text in chunk)
    return token_prefix(np.array(ids, dtype=np.int64), byte_count, tokenizer, max_tokens)


def token_prefix(tokens: np.ndarray, byte_count: int, tokenizer: Any,
                 max_tokens: int | None) -> tuple[np.ndarray, int]:
    """The first `max_tokens` of a split and the bytes they encode; the whole split when it is shorter."""
    if max_tokens is None or max_tokens >= len(tokens):
        return tokens, byte_count
    return tokens[:max_tokens], prefix_bytes(tokens[:max_tokens], tokenizer)


def prefix_bytes(tokens: np.ndarray, tokenizer: Any) -> int:
    """UTF-8 bytes of the story text `tokens` encode, counted as the token store counts them:
    `<|endoftext|>` adds none; an `<|unk|>` counts one byte (the character it stands for is lost)."""
    ids = np.asarray(tokens)
    ids = ids[ids != tokenizer.eot_id]
    unknown = int(np.count_nonzero(ids == tokenizer.unk_id))
    return len(tokenizer.decode(ids[ids != tokenizer.unk_id]).encode("utf-8")) + unknown


def _window_batches(
    sequence: np.ndarray, context_length: int, batch_size: int
) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """(inputs, targets) batches of non-overlapping windows; targets are inputs shifted by one."""
    predictions = len(sequence) - 1
    full = predictions // context_length
    inputs = sequence[: full * context_length].reshape(full, context_length)
    targets = sequence[1 : full * context_length + 1].reshape(full, context_length)
    for start in range(0, full, batch_size):
        yield inputs[start : start + batch_size], targets[start : start + batch_size]
    if predictions % context_length:
        start = full * context_length
        yield sequence[None, start:-1], sequence[None, start + 1 :]


def evaluate(
    model: Any,
    tokens: np.ndarray,
    byte_count: int,
    *,
    context_length: int | None = None,
    batch_size: int = 16,
    start_token: int | None = None,
    progress: Progress | None = None,
) -> EvalResult:
    """Score every token of `tokens` (after `start_token`, if given, else after tokens[0]).

    `byte_count` must be the UTF-8 size of the text the scored tokens encode (the token store's
    `split_bytes`, or `encode_texts`); `context_length` defaults to the model's.
    """
    model_context = model.config.context_length
    context_length = context_length or model_context
    if not 1 <= context_length <= model_context:
        raise MlxstoryError(f"context_length must be between 1 and the model's {model_context}, "
                            f"got {context_length}")
    if batch_size < 1:
        raise MlxstoryError(f"batch size must be at least 1, got {batch_size}")
    if byte_count < 1:
        raise MlxstoryError(f"byte count must be positive, got {byte_count}; is the evaluation text empty?")
    sequence = np.asarray(tokens, dtype=np.int64).reshape(-1)
    if start_token is not None:
        sequence = np.concatenate([np.array([start_token], dtype=np.int64), sequence])
    if len(sequence) < 2:
        raise MlxstoryError("nothing to evaluate: the token stream needs at least one token to predict")

    full_windows = (len(sequence) - 1) // context_length
    total_windows = full_windows + int((len(sequence) - 1) % context_length > 0)
    was_training = model.training
    model.eval()
    try:
        total_nats, scored, done = 0.0, 0, 0
        for inputs, targets in _window_batches(sequence, context_length, batch_size):
            total_nats += _sum_nats(model, mx.array(inputs), mx.array(targets))
            scored += targets.size
            done += len(inputs)
            if progress is not None:
                progress(done, total_windows)
    finally:
        model.train(was_training)

    loss = total_nats / scored
    return EvalResult(
        loss=loss,
        perplexity=math.exp(loss),
        bits_per_byte=total_nats / math.log(2) / byte_count,
        tokens=scored,
        bytes=int(byte_count),
    )


def _sum_nats(model: Any, inputs: mx.array, targets: mx.array) -> float:
    """Summed cross-entropy of a batch, accumulated in float64 on the host across batches."""
    logits = model(inputs).astype(mx.float32)
    picked = mx.take_along_axis(logits, targets[..., None], axis=-1).squeeze(-1)
    return float((mx.logsumexp(logits, axis=-1) - picked).sum().item())
