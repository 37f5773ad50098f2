"""Where a training step's memory goes on MLX's plain (device-agnostic) path, measured, not estimated.

    python -m benchmarks.memory [--preset mac] [--batch-size 32] [--speed-steps 3] [--out FILE]

Each row is one compiled training step (forward, backward, clip, AdamW, as `make_train_step`) whose
`mx.get_peak_memory` is read after `mx.reset_peak_memory`: the plain path as it is, and as it was
before issue 14 (`reference_loss_fn`) with one memory saving at a time, so each saving's share is a
difference of two measured peaks. Allocator peaks do not depend on the machine's load; the speed
ratio (new / old tokens/s) is measured with the two steps interleaved, and the load is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import mlxstory  # noqa: F401  isort: skip  (loads MKL before mlx.core)
import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlxstory.formats.config import ModelConfig, load_preset
from mlxstory.model.gpt import GPT, causal_mask, cross_entropy, draw_keep, loss_fn, relu
from mlxstory.training.optimizer import AdamW

from .frameworks import training_step

GIB = 2**30
LIMIT_GIB = 2.0  # the target for the `mac` preset's full-batch step


def reference_features(model: GPT, tokens: mx.array, *, kept_attention: bool = True,
                       autodiff_relu: bool = True) -> mx.array:
    """`model.features` as the plain path computed it before issue 14: autodiff keeps the attention
    weights (and their dropout) and the ReLU inputs. Same parameters, same random draws."""
    config = model.config
    B, T = tokens.shape
    x = model.embedding_dropout(model.token_embedding(tokens) + model.position_embedding(mx.arange(T)))
    attention_dropout, residual_dropout, feed_forward_dropout = (
        nn.Dropout(p).train(model.training)
        for p in (config.attention_dropout, config.residual_dropout, config.feed_forward_dropout))
    for block in model.blocks:
        attention, feed_forward = block.attention, block.feed_forward
        H, hs = attention.head_count, attention.head_size
        kept = residual_dropout(x)  # the draws in the forward pass's order
        if kept_attention:
            q, k, v = mx.split(attention.qkv(block.ln1(x)), 3, axis=-1)
            q, k, v = (a.reshape(B, T, H, hs).transpose(0, 2, 1, 3) for a in (q, k, v))
            if config.attention_dropout > 0 and model.training:
                scores = (q * attention.scale) @ k.transpose(0, 1, 3, 2)
                weights = mx.softmax(scores + causal_mask(T), axis=-1)
                y = attention_dropout(weights) @ v
            else:
                y = mx.fast.scaled_dot_product_attention(q, k, v, scale=attention.scale, mask="causal")
            x = kept + attention.proj(y.transpose(0, 2, 1, 3).reshape(B, T, -1))
        else:
            keep = draw_keep(attention.keep_probability, (B, H, T, T), model.training)
            x = kept + attention(block.ln1(x), keep)
        kept = residual_dropout(x)
        activation = feed_forward.activation
        if autodiff_relu and activation is relu:
            activation = nn.relu
        h = feed_forward.down(activation(feed_forward.up(block.ln2(x))))
        x = kept + feed_forward_dropout(h)
    return model.final_norm(x)


def reference_loss_fn(model: GPT, inputs: mx.array, targets: mx.array) -> mx.array:
    """The plain path's loss before issue 14: full-batch logits, every intermediate kept."""
    return cross_entropy(model.head(reference_features(model, inputs)), targets)


def variant_loss_fn(*, kept_attention: bool, autodiff_relu: bool, full_logits: bool):
    """The reference with some of the savings: one factor at a time gives each saving's share."""
    from mlxstory.model.gpt import head_cross_entropy

    def loss(model: GPT, inputs: mx.array, targets: mx.array) -> mx.array:
        features = reference_features(model, inputs, kept_attention=kept_attention,
                                      autodiff_relu=autodiff_relu)
        if full_logits:
            return cross_entropy(model.head(features), targets)
        return head_cross_entropy(features, model.head.weight, targets)

    return loss


class Step:
    """One plain-path training step of `config` at `batch_size` rows, with the given loss."""

    def __init__(self, config: ModelConfig, batch_size: int, loss, *, compiled: bool = True,
                 recompute_blocks: bool = False, seed: int = 0):
        mx.random.seed(seed)
        self.model = model = GPT(config)
        model.train()
        model.recompute_blocks = recompute_blocks
        _, train_config = load_preset("mac")
        self.optimizer = optimizer = AdamW(model.trainable_parameters(), model.decay_mask(),
                                           betas=train_config.betas, weight_decay=train_config.weight_decay)
        self.step = training_step(model, optimizer, nn.value_and_grad(model, loss), 1.0, compiled)
        rng = np.random.default_rng(seed)
        tokens = rng.integers(0, config.vocab_size, (batch_size, config.context_length + 1)).astype(np.int32)
        self.inputs, self.targets = mx.array(tokens[:, :-1]), mx.array(tokens[:, 1:])
        self.lr = mx.array(1e-4, dtype=mx.float32)
        self.tokens = batch_size * config.context_length
        mx.eval(model.parameters(), self.inputs, self.targets)

    def run(self) -> float:
        loss, norm = self.step(self.inputs, self.targets, self.lr)
        mx.eval(loss, norm, self.model.parameters(), self.optimizer.state)
        return loss.item()

    def peak(self) -> int:
        """Peak bytes of one step once the AdamW moments exist (the second step onwards)."""
        self.run()
        mx.reset_peak_memory()
        self.run()
        return int(mx.get_peak_memory())


def measure_peak(config: ModelConfig, batch_size: int, loss, **options) -> int:
    step = Step(config, batch_size, loss, **options)
    peak = step.peak()
    del step
    mx.clear_cache()
    return peak


def breakdown(config: ModelConfig, batch_size: int) -> dict:
    """Peaks of the plain path before and after, and of the reference with one saving at a time."""
    rows = {}

    def measure(name: str, cfg: ModelConfig, loss, **options) -> None:
        started = time.perf_counter()
        rows[name] = measure_peak(cfg, batch_size, loss, **options)
        print(f"{name}: {rows[name] / GIB:.3f} GiB ({time.perf_counter() - started:.0f} s)", file=sys.stderr,
              flush=True)

    old = dict(kept_attention=True, autodiff_relu=True, full_logits=True)
    one_block = replace(config, block_count=1)
    measure("before", config, reference_loss_fn)
    measure("before, not compiled", config, reference_loss_fn, compiled=False)
    measure("before, one block", one_block, reference_loss_fn)
    measure("before + recomputed attention", config, variant_loss_fn(**{**old, "kept_attention": False}))
    measure("before + output-only ReLU", config, variant_loss_fn(**{**old, "autodiff_relu": False}))
    measure("before + chunked loss", config, variant_loss_fn(**{**old, "full_logits": False}))
    measure("after", config, loss_fn)
    measure("after, not compiled", config, loss_fn, compiled=False)
    measure("after, one block", one_block, loss_fn)
    measure("after + recompute_blocks", config, loss_fn, recompute_blocks=True)
    for name, limit in (("one op at a time", 1), (f"memory limit {LIMIT_GIB:g} GiB", int(LIMIT_GIB * GIB))):
        # 1 byte: MLX waits for each op before the next, no run-ahead allocations: what the step needs.
        previous = mx.set_memory_limit(limit)
        try:
            if limit == 1:
                measure(f"before, {name}", config, reference_loss_fn)
            measure(f"after, {name}", config, loss_fn)
            measure(f"after + recompute_blocks, {name}", config, loss_fn, recompute_blocks=True)
        finally:
            mx.set_memory_limit(previous)
    return rows


def state_bytes(config: ModelConfig) -> dict:
    """Parameters, their gradients and AdamW's two moments: what any step holds at the least."""
    parameters = GPT(config).parameter_count() * 4
    return {"parameters": parameters, "gradients": parameters, "adamw_moments": 2 * parameters}


def speed_ratio(config: ModelConfig, batch_size: int, steps: int) -> dict:
    """Tokens/s of the plain path after / before, the compiled steps interleaved (rotating order) after
    one warm-up each; "after, memory limit" runs with MLX's memory limit at LIMIT_GIB."""
    limited = f"after, memory limit {LIMIT_GIB:g} GiB"
    sides = {"before": (Step(config, batch_size, reference_loss_fn), None),
             "after": (Step(config, batch_size, loss_fn), None),
             limited: (Step(config, batch_size, loss_fn), int(LIMIT_GIB * GIB)),
             "after + recompute_blocks": (Step(config, batch_size, loss_fn, recompute_blocks=True), None)}

    def run(name: str) -> float:
        step, limit = sides[name]
        previous = mx.set_memory_limit(limit) if limit else None
        started = time.perf_counter()
        step.run()
        seconds = time.perf_counter() - started
        if previous is not None:
            mx.set_memory_limit(previous)
        return seconds

    names = list(sides)
    for name in names:
        run(name)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(steps):
        for name in names[i % len(names):] + names[:i % len(names)]:
            times[name].append(run(name))
    median = {name: statistics.median(t) for name, t in times.items()}
    tokens = batch_size * config.context_length
    return {"steps_each": steps, "seconds_per_step_median": median,
            "tokens_per_second": {name: tokens / s for name, s in median.items()},
            "over_before": {name: median["before"] / s for name, s in median.items()}}


def micro_batch_check(config: ModelConfig, batch_size: int, micro: int, steps: int) -> dict:
    """The full batch as `micro` serial micro-batches on the plain path (what `--max-memory` plans), as
    `make_train_step` builds it: its peak, and its tokens/s over the full-batch step before issue 14,
    interleaved."""
    from unittest import mock

    from mlxstory.model import fast_path
    from mlxstory.training.train import make_train_step

    _, train_config = load_preset("mac")
    before = Step(config, batch_size, reference_loss_fn)
    with mock.patch.object(fast_path, "use_fast_path", lambda device=None: False):
        mx.random.seed(0)
        model = GPT(config)
        model.train()
        optimizer = AdamW(model.trainable_parameters(), model.decay_mask(), betas=train_config.betas,
                          weight_decay=train_config.weight_decay)
        step = make_train_step(model, optimizer, replace(train_config, contexts_per_batch=batch_size // micro,
                                                         gradient_accumulation=micro))
    shape = (micro, batch_size // micro, config.context_length)
    inputs, targets = before.inputs.reshape(shape), before.targets.reshape(shape)
    lr = mx.array(1e-4, dtype=mx.float32)

    def after() -> None:
        mx.eval(step(inputs, targets, lr), model.parameters(), optimizer.state)

    sides = {"before": before.run, f"after, {micro} micro-batches": after}
    for run in sides.values():
        run()
    mx.reset_peak_memory()
    after()
    peak = int(mx.get_peak_memory())
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(steps):
        for name in (list(sides) if i % 2 == 0 else list(sides)[::-1]):
            started = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - started)
    median = {name: statistics.median(t) for name, t in times.items()}
    return {"micro_batches": micro, "rows": batch_size // micro, "peak_bytes": peak, "steps_each": steps,
            "seconds_per_step_median": median,
            "over_before": {name: median["before"] / s for name, s in median.items()}}


def plain_plans(config: ModelConfig, budgets_gib: list[float]) -> dict:
    """What `--max-memory` would choose for each budget on a device that trains the plain path (Metal,
    CUDA): the planner's probes run with the plain path forced, here on the CPU."""
    from unittest import mock

    from mlxstory.model import fast_path
    from mlxstory.training import memory

    _, train_config = load_preset("mac")
    with mock.patch.object(fast_path, "use_fast_path", lambda device=None: False):
        models = {recompute: memory.probe(config, recompute) for recompute in (False, True)}
    plans = {"models": {str(k): vars(m) for k, m in models.items()}}
    for budget in budgets_gib:
        try:
            plan = memory.choose(train_config, int(budget * GIB), f"{budget:g} GiB", models)
            plans[f"{budget:g} GiB"] = {"micro_batches": plan.micro_batches, "rows": plan.rows,
                                        "recompute_blocks": plan.recompute_blocks,
                                        "estimated_peak_bytes": plan.peak_bytes, "line": plan.describe()}
        except memory.MemoryBudgetError as error:
            plans[f"{budget:g} GiB"] = {"error": str(error)}
    return plans


def loadavg() -> list[float]:
    return list(os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mac")
    parser.add_argument("--batch-size", type=int, default=None, help="rows per step (default: the preset's)")
    parser.add_argument("--speed-steps", type=int, default=3, help="interleaved timed steps each (0: none)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON document here")
    parser.add_argument("--speed-only", action="store_true", help="skip the peaks; only the speed ratios")
    parser.add_argument("--micro-batches", type=int, default=0, help="only: the full batch as N serial "
                        "micro-batches on the plain path, its peak and speed over before")
    parser.add_argument("--plans", default="", help="GiB budgets, comma-separated: what --max-memory picks "
                        "on the plain path (as on Metal)")
    args = parser.parse_args(argv)
    mx.set_default_device(mx.cpu if not mx.is_available(mx.gpu) else mx.gpu)
    config, train_config = load_preset(args.preset)
    batch_size = args.batch_size or train_config.contexts_per_batch
    document = {
        "command": "python -m benchmarks.memory " + " ".join(argv if argv is not None else sys.argv[1:]),
        "preset": args.preset, "batch_size": batch_size, "context_length": config.context_length,
        "device": str(mx.default_device()), "mlx": mx.__version__,
        "method": "mx.get_peak_memory of the second compiled training step (forward, backward, clip, AdamW) "
                  "after mx.reset_peak_memory; one process, one configuration after another",
        "state_bytes": state_bytes(config), "load_average_before": loadavg(),
    }
    if not args.speed_only:
        document["peak_bytes"] = breakdown(config, batch_size)
    if args.plans:
        document["plain_path_plans"] = plain_plans(config, [float(b) for b in args.plans.split(",")])
    if args.micro_batches:
        document["micro_batch_check"] = micro_batch_check(config, batch_size, args.micro_batches,
                                                          max(args.speed_steps, 2))
        args.speed_steps = 0
    if args.speed_steps:
        document["speed"] = speed_ratio(config, batch_size, args.speed_steps)
    document["load_average_after"] = loadavg()
    text = json.dumps(document, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
