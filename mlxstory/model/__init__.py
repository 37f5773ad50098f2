"""The model: the decoder (`gpt`), its KV-cached decoding form (`folded_decoder`) and the fused CPU loss
(`fast_path`, used for training only when MLX runs on the CPU; Metal and CUDA train the plain model)."""

from mlxstory.model.gpt import (
    GPT,
    Block,
    CausalSelfAttention,
    FeedForward,
    causal_mask,
    cross_entropy,
    loss_fn,
)

__all__ = ["GPT", "Block", "CausalSelfAttention", "FeedForward", "causal_mask", "cross_entropy", "loss_fn"]
