"""The PyTorch twin computes what mlxstory computes: same weights and tokens -> same logits, loss and
one AdamW step, so the benchmark compares the same work."""

from __future__ import annotations

import dataclasses

import mlxstory  # noqa: F401  isort: skip  (loads MKL before mlx.core)
import mlx.core as mx
import numpy as np
import pytest
import torch
from mlx.utils import tree_flatten
from mlxstory.benchmarks import torch_twin

from mlxstory.formats.config import ModelConfig, TrainConfig
from mlxstory.model import GPT, loss_fn
from mlxstory.training.optimizer import AdamW
from mlxstory.training.train import make_train_step

CONFIG = ModelConfig(vocab_size=96, embedding_size=32, context_length=16, head_count=4, block_count=2,
                     embedding_dropout=0.0, attention_dropout=0.0, feed_forward_dropout=0.0,
                     residual_dropout=0.0)


@pytest.fixture
def pair(tmp_path):
    """An MLX model with random (not just initial) weights, saved as a checkpoint and loaded into the twin."""
    mx.random.seed(3)
    model = GPT(CONFIG)
    # Non-trivial LayerNorm parameters and biases, so every tensor's mapping is exercised.
    flat = tree_flatten(model.parameters())
    model.load_weights([(name, value + 0.05 * mx.random.normal(value.shape)) for name, value in flat])
    path = tmp_path / "weights.safetensors"
    mx.save_safetensors(str(path), dict(tree_flatten(model.parameters())))
    twin = torch_twin.TorchGPT(CONFIG)
    torch_twin.load_weights(twin, path)
    return model, twin


def batch(seed: int, B: int = 3, T: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, CONFIG.vocab_size, size=(B, T + 1))
    return tokens[:, :-1], tokens[:, 1:]


def test_twin_has_the_same_parameter_names_and_shapes():
    mlx_shapes = {name: tuple(v.shape) for name, v in tree_flatten(GPT(CONFIG).parameters())}
    torch_shapes = {name: tuple(p.shape) for name, p in torch_twin.TorchGPT(CONFIG).named_parameters()}
    assert torch_shapes == mlx_shapes


def test_same_weights_and_tokens_give_the_same_logits_and_loss(pair):
    model, twin = pair
    model.eval()
    twin.eval()
    x, y = batch(0)
    mlx_logits = np.array(model(mx.array(x)))
    with torch.no_grad():
        torch_logits = twin(torch.from_numpy(x))
        torch_loss = torch_twin.cross_entropy(torch_logits, torch.from_numpy(y)).item()
        torch_logits = torch_logits.numpy()
    assert np.abs(mlx_logits - torch_logits).max() < 1e-4
    assert loss_fn(model, mx.array(x), mx.array(y)).item() == pytest.approx(torch_loss, abs=1e-5)


def test_kv_cached_twin_decoding_matches_its_full_forward(pair):
    _, twin = pair
    context = [5, 17, 3]
    tokens = []
    for token in torch_twin.generate_tokens(twin, context):
        tokens.append(token)
        if len(tokens) == 8:
            break
    full = list(context)
    with torch.no_grad():
        for _ in range(8):
            full.append(int(twin(torch.tensor([full]))[0, -1].argmax()))
    assert tokens == full[len(context):]


def test_one_adamw_step_gives_the_same_weights(pair):
    model, twin = pair
    model.train()
    twin.train()
    train_config = dataclasses.replace(TrainConfig(), grad_clip=0.5, weight_decay=1.0, betas=(0.9, 0.95))
    lr = 1e-2
    optimizer = AdamW(model.trainable_parameters(), model.decay_mask(), betas=train_config.betas,
                      weight_decay=train_config.weight_decay)
    step = make_train_step(model, optimizer, train_config)
    before = {name: np.array(v) for name, v in tree_flatten(model.parameters())}
    x, y = batch(1)
    loss, norm = step(mx.array(x[None]), mx.array(y[None]), mx.array(lr, dtype=mx.float32))
    mx.eval(loss, norm, model.parameters())

    torch_optimizer = torch_twin.make_optimizer(twin, train_config, lr)
    torch_loss, torch_norm = torch_twin.train_step(
        twin, torch_optimizer, torch.from_numpy(x), torch.from_numpy(y), train_config.grad_clip)

    assert loss.item() == pytest.approx(torch_loss.item(), abs=1e-5)
    assert norm.item() == pytest.approx(torch_norm.item(), rel=1e-4)
    assert norm.item() > train_config.grad_clip  # the clip was active
    after = dict(tree_flatten(model.parameters()))
    C = CONFIG.embedding_size
    for name, parameter in twin.named_parameters():
        mine, theirs = np.array(after[name]), parameter.detach().numpy()
        if name.endswith("attention.qkv.bias"):
            # The key bias shifts every score of a row equally, which softmax cancels: its true
            # gradient is 0, both frameworks see rounding noise, and Adam scales noise up to +-lr.
            mine, theirs = np.delete(mine, np.s_[C:2 * C]), np.delete(theirs, np.s_[C:2 * C])
        # AdamW's first step moves a weight by about lr (and decay by lr * 1.0 * |w|, ~5e-4); the two
        # agree to ~1e-3 of the step, except where a tiny gradient makes Adam's ratio touchy.
        difference = np.abs(mine - theirs)
        assert difference.max() < 1e-4, name
        assert np.mean(difference < 1e-5) > 0.99, name
        assert np.abs(np.array(after[name]) - before[name]).max() > lr / 2, f"{name} did not move"


def test_mlxstory_bench_json_has_the_contract_fields(tmp_path):
    """`mlxstory bench --json`: one JSON document on stdout, one row per framework and preset."""
    import json

    from typer.testing import CliRunner

    from mlxstory.cli import app

    result = CliRunner().invoke(app, ["bench", "--json", "--presets", "tiny", "--steps", "2", "--warmup", "1",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    rows = {(r["framework"], r["path"] == "plain"): r for r in document["results"]}
    # On the CPU, MLX's plain (device-agnostic, as on Metal) path gets a row of its own.
    assert set(rows) == {("mlx", False), ("pytorch", False), ("mlx", True)}
    for row in rows.values():
        assert row["device"] == "cpu" and row["preset"] == "tiny"
        assert row["train_tokens_per_second"] > 0 and row["generate_tokens_per_second"] > 0
        assert row["train_ms_per_step"] == pytest.approx(32 * 64 / row["train_tokens_per_second"] * 1000)
        assert row["peak_memory_bytes"] > 0 and row["rss_growth_bytes"] > 0  # each measured in a child
        assert row["peak_memory_kind"]
    assert "resident-set growth of a child process" in rows[("pytorch", False)]["peak_memory_kind"]
    assert document["ratios"]["tiny"]["train_median"] == pytest.approx(
        rows[("mlx", False)]["train_tokens_per_second"] / rows[("pytorch", False)]["train_tokens_per_second"])
    folder = tmp_path / document["machine_tag"]
    assert {p.name for p in folder.iterdir()} == {"results.json", "results.md", "chart.png"}
    assert "| tiny | mlx | cpu |" in (folder / "results.md").read_text()
