from __future__ import annotations

import ctypes
import random

import mlxstory  # noqa: F401  isort: skip  (loads MKL before mlx.core)
import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_map

from mlxstory import cpu_speedups
from mlxstory.data.tokenizer import Tokenizer, UnknownCharWarning
from mlxstory.errors import MlxstoryError
from mlxstory.formats.config import ModelConfig
from mlxstory.generation.generate import KVDecoder, generate, generate_tokens, stream_generate
from mlxstory.generation.sampling import make_sampler
from mlxstory.model import GPT, fast_path

CONTEXT = 16
# fp32 on the CPU (and Metal); MLX's CUDA backend multiplies fp32 in TF32 by default, so the cached
# path's GEMVs and the full forward's GEMMs round differently there (measured: 1.1e-4 on an H200).
LOGITS_ATOL = 1e-5 if mx.default_device() == mx.cpu else 5e-4


@pytest.fixture(scope="module")
def tokenizer(sample_texts: list[str]) -> Tokenizer:
    return Tokenizer.train(sample_texts[:100], vocab_size=256)


def small_model(vocab_size: int, seed: int = 0, dropout: float = 0.0, activation: str = "relu") -> GPT:
    mx.random.seed(seed)
    config = ModelConfig(
        vocab_size=vocab_size, embedding_size=32, context_length=CONTEXT, head_count=4, block_count=2,
        embedding_dropout=dropout, attention_dropout=dropout, feed_forward_dropout=dropout,
        residual_dropout=dropout, activation=activation,
    )
    model = GPT(config)
    mx.eval(model.parameters())
    return model


def trained_looking_model(activation: str = "relu", seed: int = 1) -> GPT:
    """Every parameter moved off its initial value: biases non-zero, LayerNorms not the identity.

    The decoder folds LayerNorm scales and every bias into other weights; a fresh model (zero biases,
    unit scales) would hide a mistake in that folding.
    """
    model = small_model(64, seed=seed, activation=activation)
    model.update(tree_map(lambda p: p + 0.3 * mx.random.normal(p.shape), model.parameters()))
    mx.eval(model.parameters())
    model.eval()
    return model


@pytest.fixture(scope="module")
def model(tokenizer: Tokenizer) -> GPT:
    # Left in training mode with dropout on: generation must switch to eval mode to be deterministic.
    return small_model(tokenizer.vocab_size, dropout=0.2)


def full_logits(model: GPT, window: list[int]) -> np.ndarray:
    return np.array(model(mx.array([window]))[0, -1])


@pytest.mark.parametrize(
    ("slide_keep", "activation"), [(5, "relu"), (CONTEXT // 2, "gelu"), (CONTEXT, "relu")]
)
def test_cached_logits_equal_full_recompute_before_and_after_slides(slide_keep, activation):
    model = trained_looking_model(activation)
    decoder = KVDecoder(model, slide_keep=slide_keep)
    rng = random.Random(0)
    history = [rng.randrange(64) for _ in range(3)]
    logits = decoder.prefill(history)
    np.testing.assert_allclose(np.array(logits[0]), full_logits(model, history), atol=LOGITS_ATOL)
    for _ in range(3 * CONTEXT):
        token = rng.randrange(64)
        history.append(token)
        logits = decoder.step(token)
        # The cache holds exactly the last len(window) tokens, and its logits are theirs.
        assert decoder.window == history[-len(decoder.window):]
        np.testing.assert_allclose(np.array(logits[0]), full_logits(model, decoder.window), atol=LOGITS_ATOL)
    assert decoder.slides >= 2


@pytest.mark.parametrize(
    ("embedding_size", "head_count", "block_count", "multiplier", "context"),
    [(8, 1, 1, 1, 5), (24, 6, 3, 2, 9), (48, 3, 2, 4, 7)],
)
def test_cached_logits_equal_full_recompute_for_other_shapes(embedding_size, head_count, block_count,
                                                             multiplier, context):
    """Head counts, depths and widths other than the fixture's, through prefill, steps and a slide."""
    mx.random.seed(11)
    config = ModelConfig(
        vocab_size=40, embedding_size=embedding_size, context_length=context, head_count=head_count,
        block_count=block_count, feed_forward_multiplier=multiplier, embedding_dropout=0.0,
        attention_dropout=0.0, feed_forward_dropout=0.0, residual_dropout=0.0,
    )
    model = GPT(config)
    model.update(tree_map(lambda p: p + 0.3 * mx.random.normal(p.shape), model.parameters()))
    model.eval()
    decoder = KVDecoder(model, slide_keep=max(1, context // 2))
    rng = random.Random(embedding_size)
    decoder.prefill([rng.randrange(40) for _ in range(2)])
    for _ in range(2 * context):
        logits = decoder.step(rng.randrange(40))
        np.testing.assert_allclose(np.array(logits[0]), full_logits(model, decoder.window), atol=LOGITS_ATOL)
    assert decoder.slides >= 1


def test_slide_keeps_the_last_slide_keep_tokens():
    model = small_model(64)
    model.eval()
    decoder = KVDecoder(model, slide_keep=6)
    decoder.prefill(list(range(CONTEXT)))
    decoder.step(40)
    assert decoder.window == [*range(CONTEXT - 5, CONTEXT), 40]
    assert decoder.slides == 1


def test_default_slide_keeps_half_the_context():
    assert KVDecoder(small_model(64)).slide_keep == CONTEXT // 2


@pytest.mark.parametrize("keep", [0, CONTEXT + 1])
def test_slide_keep_out_of_range_is_a_user_error(keep):
    with pytest.raises(MlxstoryError, match="slide_keep"):
        KVDecoder(small_model(64), slide_keep=keep)


def test_keeping_the_full_context_reproduces_the_original_recompute_token_for_token():
    model = small_model(64, seed=2)
    model.eval()

    def tokens(mode: str, **kwargs) -> list[int]:
        stream = generate_tokens(model, [1, 2, 3], sampler=make_sampler(0.0), key=mx.random.key(0),
                                 mode=mode, **kwargs)
        return [next(stream) for _ in range(3 * CONTEXT)]

    reference = tokens("recompute")
    assert tokens("cached", slide_keep=CONTEXT) == reference
    # The default (half-window) slide agrees until the first slide, then may condition on less.
    assert tokens("cached")[: CONTEXT - 3] == reference[: CONTEXT - 3]


def test_sampling_in_the_pipelined_step_draws_what_the_recompute_draws():
    """The cached path samples inside its compiled step, a token ahead; the keys must split the same way."""
    model = small_model(64, seed=3)
    model.eval()

    def tokens(mode: str) -> list[int]:
        stream = generate_tokens(model, [1, 2, 3], sampler=make_sampler(1.0, top_k=20), key=mx.random.key(7),
                                 mode=mode, slide_keep=CONTEXT)
        return [next(stream) for _ in range(3 * CONTEXT)]

    assert tokens("cached") == tokens("recompute")


def test_generation_runs_mkl_at_one_thread_and_restores_it(model, tokenizer):
    library = cpu_speedups.REPORT.blas_library
    if not library or "mkl" not in library:
        pytest.skip("MKL is not the BLAS here")
    mkl = ctypes.CDLL(library)
    with fast_path.blas_threads(2):
        stream = stream_generate(model, tokenizer, "Tom", max_tokens=3, seed=0, stop_at_eot=False)
        during = [mkl.MKL_Get_Max_Threads() for _ in stream]
        after = mkl.MKL_Get_Max_Threads()
    assert during == [1, 1, 1]
    assert after == 2


def test_same_seed_same_text_and_seeds_matter(model, tokenizer):
    kwargs = dict(max_tokens=40, temperature=1.0, stop_at_eot=False)
    first = generate(model, tokenizer, "Once upon a time", seed=3, **kwargs)
    assert first == generate(model, tokenizer, "Once upon a time", seed=3, **kwargs)
    assert first != generate(model, tokenizer, "Once upon a time", seed=4, **kwargs)


def test_greedy_is_deterministic_and_restores_training_mode(model, tokenizer):
    assert model.training
    texts = {generate(model, tokenizer, "The cat", max_tokens=30, temperature=0.0, seed=s) for s in (1, 2)}
    assert len(texts) == 1
    assert model.training


def test_max_tokens_is_respected(model, tokenizer):
    responses = list(stream_generate(model, tokenizer, "Tom", max_tokens=25, seed=0, stop_at_eot=False))
    assert len(responses) == 25
    assert [r.generated_tokens for r in responses] == list(range(1, 26))
    assert [r.finish_reason for r in responses] == [None] * 24 + ["length"]
    assert responses[-1].prompt_tokens == len(tokenizer.encode("Tom"))
    assert responses[-1].tokens_per_second > 0


def test_pieces_join_to_the_decoded_tokens(model, tokenizer):
    responses = list(stream_generate(model, tokenizer, "Lily", max_tokens=50, seed=5, stop_at_eot=False))
    tokens = [r.token for r in responses]
    assert "".join(r.text for r in responses) == tokenizer.decode(tokens)
    assert all(r.text == tokenizer.decode([r.token]) for r in responses)  # one whole token each


def eot_loving_model(tokenizer: Tokenizer) -> GPT:
    """A model whose every prediction is <|endoftext|>: the final norm outputs ones, the head picks eot."""
    model = small_model(tokenizer.vocab_size)
    model.final_norm.weight = mx.zeros_like(model.final_norm.weight)
    model.final_norm.bias = mx.ones_like(model.final_norm.bias)
    head = np.zeros(model.head.weight.shape, dtype=np.float32)
    head[tokenizer.eot_id] = 1.0
    model.head.weight = mx.array(head)
    return model


def test_stops_at_end_of_text(tokenizer):
    model = eot_loving_model(tokenizer)
    responses = list(stream_generate(model, tokenizer, "Once", max_tokens=10, temperature=0.0))
    assert len(responses) == 1
    first = responses[0]
    assert (first.token, first.text, first.finish_reason) == (tokenizer.eot_id, "", "stop")


def test_no_stop_runs_through_end_of_text(tokenizer):
    model = eot_loving_model(tokenizer)
    responses = list(
        stream_generate(model, tokenizer, "Once", max_tokens=3, temperature=0.0, stop_at_eot=False)
    )
    assert [r.token for r in responses] == [tokenizer.eot_id] * 3
    assert "".join(r.text for r in responses) == "<|endoftext|>" * 3
    assert responses[-1].finish_reason == "length"


def test_unknown_prompt_characters_warn_and_still_generate(model, tokenizer):
    # Three unknown characters, two of them the same: the warning counts characters, not kinds.
    with pytest.warns(UnknownCharWarning) as caught:
        text = generate(model, tokenizer, "Once upon a time ☃ ☃ ✈", max_tokens=10, seed=0, stop_at_eot=False)
    assert [str(w.message).split(" character(s) ")[0] for w in caught] == ["3"]
    assert len(tokenizer.encode(text, on_unknown="ignore")) >= 1


def test_empty_prompt_starts_a_story(model, tokenizer):
    responses = list(stream_generate(model, tokenizer, "", max_tokens=5, seed=0, stop_at_eot=False))
    assert len(responses) == 5 and responses[0].prompt_tokens == 0


def test_generation_runs_past_the_context_window(model, tokenizer):
    text = generate(model, tokenizer, "Once upon a time", max_tokens=3 * CONTEXT, seed=1, stop_at_eot=False)
    assert len(tokenizer.encode(text, on_unknown="ignore")) >= 3 * CONTEXT // 2  # merges may rejoin pieces


def test_bad_arguments_are_user_errors(model, tokenizer):
    with pytest.raises(MlxstoryError, match="max_tokens"):
        list(stream_generate(model, tokenizer, "Tom", max_tokens=0))
    with pytest.raises(MlxstoryError, match="temperature"):
        list(stream_generate(model, tokenizer, "Tom", temperature=-1.0))
    with pytest.raises(MlxstoryError, match="mode"):
        next(generate_tokens(model, [1], sampler=make_sampler(0.0), key=mx.random.key(0), mode="fast"))


def test_a_decoder_decodes_with_the_weights_it_was_made_with():
    """The dashboard samples from a model that keeps training: each story is told by the weights of
    the moment it started, and the next story by the newer ones."""
    model = small_model(64, seed=4)
    model.eval()
    old_logits = full_logits(model, [1, 2, 3, 4])
    before = KVDecoder(model)
    before.prefill([1, 2, 3])
    model.update(small_model(64, seed=5).parameters())
    after = KVDecoder(model)
    after.prefill([1, 2, 3])
    np.testing.assert_allclose(np.array(after.step(4)[0]), full_logits(model, [1, 2, 3, 4]), atol=LOGITS_ATOL)
    np.testing.assert_allclose(np.array(before.step(4)[0]), old_logits, atol=LOGITS_ATOL)


def test_the_generation_benchmark_prints_both_speeds_and_the_machine_state(capsys):
    """`python -m benchmarks.bench_generate`: one JSON document with the fields the README quotes."""
    import json

    from benchmarks import bench_generate

    bench_generate.main(["--preset", "tiny", "--tokens", "80", "--repeats", "1"])
    result = json.loads(capsys.readouterr().out)
    assert result["preset"] == "tiny" and result["new_tokens"] == 80 and result["slide_keep"] == 32
    cached, recompute = result["cached_tokens_per_second"], result["recompute_tokens_per_second"]
    assert cached > 0 and recompute > 0
    assert result["speedup"] == pytest.approx(cached / recompute, rel=0.01)
    assert all(value > 0 for value in result["dispatch_us_per_op"].values())
