"""Story generation: a KV-cached decoder with a sliding window, and the streaming seam every caller uses.

Three layers, as in mlx-lm: `generate_tokens` yields token ids forever; `stream_generate` adds the
tokenizer, stopping, incremental decoding and timing, and yields `GenerationResponse`s; `generate`
just joins the text. The CLI, the dashboard and the benchmark all go through `stream_generate` /
`generate_tokens`.

Positions are absolute (learned position embeddings, at most `context_length` of them), so the cache
cannot simply drop its oldest entry: every cached key and value depends on its position. When the
window is full, `KVDecoder` *slides*: it keeps the last `slide_keep` tokens (default half the context),
re-runs them from position 0 to rebuild the cache, and carries on. With `slide_keep == context_length`
every token after the first full window sees exactly the last `context_length` tokens, as the
original's full recompute does, at the cost of one window forward per token; half the context pays that
cost once per `context_length / 2` tokens, while each token still sees at least half a window.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import mlx.core as mx

from mlxstory.errors import MlxstoryError
from mlxstory.generation.sampling import Sampler, greedy, limit_vocab, make_sampler
from mlxstory.model import folded_decoder
from mlxstory.model.fast_path import blas_threads

DecodeMode = Literal["cached", "recompute"]
FinishReason = Literal["stop", "length"]


class KVDecoder:
    """Incremental decoding at batch 1 with a fixed-size KV cache that slides when full.

    Runs `folded_decoder.prefill` / `decode` on a snapshot of the model's weights taken at construction
    (make a new decoder after the weights change). Two compiled functions: the prefill (traced once per
    prompt length and once for the slide length) and the one-token step, which samples too (with
    `sampler`), so `generate` needs one graph per token.
    """

    def __init__(self, model: Any, *, slide_keep: int | None = None, sampler: Sampler = greedy) -> None:
        self.context_length = model.config.context_length
        self.slide_keep = slide_keep if slide_keep is not None else max(1, self.context_length // 2)
        if not 1 <= self.slide_keep <= self.context_length:
            raise MlxstoryError(
                f"slide_keep must be between 1 and context_length {self.context_length}, "
                f"got {self.slide_keep}"
            )
        self.sampler = sampler
        self.window: list[int] = []  # the tokens whose keys and values are in the cache, in position order
        self.slides = 0
        self._weights = folded_decoder.fold(model)
        self._cache = folded_decoder.empty_cache(model)
        self._prefill = mx.compile(folded_decoder.bind(folded_decoder.prefill, model))
        self._step = compiled_decode_step(folded_decoder.bind(folded_decoder.decode, model), sampler)

    def prefill(self, ids: list[int]) -> mx.array:
        """Start over from `ids` (the last context_length of them); logits (1, V) for the next token."""
        if not ids:
            raise MlxstoryError("cannot generate from an empty context; give at least one token")
        ids = list(ids[-self.context_length :])
        logits, self._cache = self._prefill(self._weights, mx.array(ids), self._cache)
        self.window = ids
        return logits

    def step(self, token: int) -> mx.array:
        """Append `token` (sliding first if the window is full); logits (1, V) for the token after it."""
        if len(self.window) == self.context_length:
            self.slides += 1
            return self.prefill((self.window + [token])[-self.slide_keep :])
        logits, _, _ = self._advance(mx.array([token]), mx.random.key(0))
        self.window.append(token)
        return logits

    def _advance(self, token: mx.array, key: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        """Feed `token` (1,) at the next free slot: (logits (1, V), next token (1,), next key), lazy."""
        logits, sampled, key, self._cache = self._step(
            self._weights, token, mx.array([len(self.window)]), self._cache, key
        )
        return logits, sampled, key

    def generate(self, context: list[int], key: mx.array) -> Iterator[int]:
        """Sampled token ids following `context`, forever.

        Pipelined: the step for the token after next is queued (`mx.async_eval`) before the next
        token is read back, so building one graph overlaps computing the other. Slides read the token
        first. Tokens are drawn with `draw`, as in `generate_tokens`' recompute mode.
        """
        token, key = draw(self.sampler, self.prefill(context), key)
        while True:
            if len(self.window) == self.context_length:
                value = token.item()
                yield value
                self.slides += 1
                logits = self.prefill((self.window + [value])[-self.slide_keep :])
                token, key = draw(self.sampler, logits, key)
                continue
            _, following, key = self._advance(token, key)
            mx.async_eval(following, key)
            value = token.item()
            self.window.append(value)
            yield value
            token = following


def draw(sampler: Sampler, logits: mx.array, key: mx.array) -> tuple[mx.array, mx.array]:
    """The next token, (1,) int32, from `logits` (1, V), and the key for the token after it.

    One split of the key per token, wherever the token is drawn (both modes, the compiled step, after
    a slide), so a seed gives the same text whichever path draws it.
    """
    key, subkey = mx.random.split(key)
    return sampler(logits, subkey).astype(mx.int32).reshape(1), key


def compiled_decode_step(decode: Callable[..., tuple], sampler: Sampler = greedy) -> Callable[..., tuple]:
    """`step(weights, token (1,), position (1,), cache, key) -> (logits (1, V), next token (1,), key,
    cache)`, compiled: `decode` (`folded_decoder.decode`, bound), then the sampler on a split of `key`.

    Every shape is the same at every position, so MLX traces it once per decoder.
    """

    def step(
        weights: folded_decoder.FoldedWeights, token: mx.array, position: mx.array, cache: list[mx.array],
        key: mx.array,
    ) -> tuple[mx.array, mx.array, mx.array, list[mx.array]]:
        logits, cache = decode(weights, token, position, cache)
        sampled, key = draw(sampler, logits, key)
        return logits, sampled, key, cache

    return mx.compile(step)


def generate_tokens(
    model: Any,
    context: list[int],
    *,
    sampler: Sampler,
    key: mx.array,
    mode: DecodeMode = "cached",
    slide_keep: int | None = None,
) -> Iterator[int]:
    """Token ids following `context`, forever; the caller decides when to stop.

    "cached" uses `KVDecoder`; "recompute" is the original's method, a forward over the last
    `context_length` tokens for every new token (kept for the benchmark and as a reference).
    Each token draws from its own split of `key`, in both modes, so a seed fixes the text.
    """
    if not context:
        raise MlxstoryError("cannot generate from an empty context; give at least one token")
    if mode not in ("cached", "recompute"):
        raise MlxstoryError(f"unknown decode mode {mode!r}; use 'cached' or 'recompute'")
    with blas_threads(1):  # both modes: batch-1 products gain nothing from more (see fast_path)
        if mode == "cached":
            yield from KVDecoder(model, slide_keep=slide_keep, sampler=sampler).generate(list(context), key)
            return
        context_length = model.config.context_length
        tokens = list(context)
        while True:
            sampled, key = draw(sampler, model(mx.array([tokens[-context_length:]]))[:, -1, :], key)
            token = sampled.item()
            yield token
            tokens.append(token)


@dataclass
class GenerationResponse:
    """One generated token and the state of the run so far (the unit the stream yields)."""

    text: str  # new text this token adds (empty for a stopping <|endoftext|>)
    token: int
    prompt_tokens: int
    generated_tokens: int
    prompt_tokens_per_second: float
    tokens_per_second: float  # generated tokens / seconds since the stream started (prompt included)
    peak_memory: float  # GB, as MLX reports it
    finish_reason: FinishReason | None = None  # set on the last response only


def random_seed() -> int:
    """A fresh seed for when the user gave none (print it, so the text can be reproduced)."""
    return int.from_bytes(os.urandom(4), "little")


def stream_generate(
    model: Any,
    tokenizer: Any,
    prompt: str,
    *,
    max_tokens: int = 256,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    sampler: Sampler | None = None,
    seed: int | None = None,
    stop_at_eot: bool = True,
    mode: DecodeMode = "cached",
    slide_keep: int | None = None,
) -> Iterator[GenerationResponse]:
    """Generate a continuation of `prompt`, one `GenerationResponse` per token.

    The context starts with `<|endoftext|>`, as every story does in the training stream, so an empty
    prompt starts a new story. Prompt characters outside the tokenizer's alphabet become `<|unk|>`
    with an `UnknownCharWarning` (the tokenizer's policy). Text pieces are the new suffix of the decoded
    generated ids, so joined they are exactly `tokenizer.decode(generated ids)`. Stops after
    `max_tokens` ("length") or, with `stop_at_eot`, at `<|endoftext|>` ("stop", not counted as text).

    A model that knows only ids below `model.known_vocab_size` (an imported gpt-rs model: no special
    tokens) starts from the prompt alone, as gpt-rs does, and never samples the ids it lacks.
    """
    if max_tokens < 1:
        raise MlxstoryError(f"max_tokens must be at least 1, got {max_tokens}")
    sampler = sampler or make_sampler(temperature, top_k, top_p)
    prompt_ids = tokenizer.encode(prompt)
    first = [tokenizer.eot_id]
    known = getattr(model, "known_vocab_size", None)
    if known is not None:
        sampler, first = limit_vocab(sampler, known), []
        if not prompt_ids:
            raise MlxstoryError("this model was imported from gpt-rs and has no <|endoftext|> to start a "
                                'story from; give a prompt, e.g. "Once upon a time"')
    key = mx.random.key(random_seed() if seed is None else seed)
    was_training = model.training
    model.eval()
    try:
        start = time.perf_counter()
        generated: list[int] = []
        text = ""
        prompt_tps = 0.0
        stream = generate_tokens(
            model, [*first, *prompt_ids], sampler=sampler, key=key, mode=mode, slide_keep=slide_keep
        )
        for token in stream:
            now = time.perf_counter()
            if not generated:
                prompt_tps = len(prompt_ids) / max(now - start, 1e-9)
            generated.append(token)
            finish: FinishReason | None = None
            if stop_at_eot and token == tokenizer.eot_id:
                piece, finish = "", "stop"
            else:
                full = tokenizer.decode(generated)
                piece, text = full[len(text) :], full
                if len(generated) >= max_tokens:
                    finish = "length"
            yield GenerationResponse(
                text=piece,
                token=token,
                prompt_tokens=len(prompt_ids),
                generated_tokens=len(generated),
                prompt_tokens_per_second=prompt_tps,
                tokens_per_second=len(generated) / max(now - start, 1e-9),
                peak_memory=mx.get_peak_memory() / 1e9,
                finish_reason=finish,
            )
            if finish is not None:
                break
    finally:
        model.train(was_training)


def generate(model: Any, tokenizer: Any, prompt: str, **kwargs: Any) -> str:
    """The generated continuation of `prompt` (without the prompt); see `stream_generate`."""
    return "".join(response.text for response in stream_generate(model, tokenizer, prompt, **kwargs))
