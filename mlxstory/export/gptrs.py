"""The original gpt-rs's model files, both ways: tch `VarStore` safetensors, `transformer_config.ron` and
the dataset RON that holds its tokenizer.

gpt-rs (src/model.rs) builds the same decoder under the VarStore path `transformer`, with one linear per
attention head, all weights `[out, in]` like MLX's, and no special tokens in its vocabulary. So the
mapping is exact: our fused `qkv` is gpt-rs's per-head query/key/value stacked, and our vocabulary is
gpt-rs's plus `<|endoftext|>` and `<|unk|>` (ids n and n+1), whose rows gpt-rs does not have.

An imported model's checkpoint records `known_vocab_size` = n in its metadata: generation then starts
without `<|endoftext|>` and never samples an id >= n (see generation/generate.py). Its special-token rows
are zero. Training continued in mlxstory learns them from the token stream; its checkpoints are ordinary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mlxstory.data.gptrs_dataset import read_gptrs_dataset, write_gptrs_dataset
from mlxstory.data.tokenizer import DO_NOT_MERGE, Tokenizer
from mlxstory.errors import CheckpointError
from mlxstory.export.output import ExportError, check_output_dir, output_dir
from mlxstory.formats import ron
from mlxstory.formats.config import ConfigError, ModelConfig, TrainConfig, load_config, save_config

ROOT = "transformer."  # gpt-rs: model::transformer(&(var_store.root() / "transformer"), ...)
WEIGHTS_FILE = "transformer.safetensors"
CONFIG_FILE = "transformer_config.ron"
DATASET_FILE = "dataset.ron"
# gpt-rs's TransformerConfig, in its order (ours adds `activation`, which gpt-rs lacks: always relu).
CONFIG_FIELDS = ("vocab_size", "embedding_size", "context_length", "head_count", "block_count",
                 "feed_forward_multiplier", "embedding_dropout", "attention_dropout", "feed_forward_dropout",
                 "residual_dropout")
FRESH_OPTIMIZER_NOTE = ("imported from gpt-rs: training continues from these weights with a fresh optimizer "
                        "state (AdamW moments zero, warmup from step 0)")

# (ours, gpt-rs's) for everything but attention's q/k/v; "{i}" is the block index.
TOP_NAMES = (
    ("token_embedding.weight", "token_embedding.weight"),
    ("position_embedding.weight", "position_embedding.weight"),
    ("final_norm.weight", "layer_norm.weight"),
    ("final_norm.bias", "layer_norm.bias"),
    ("head.weight", "linear_head.weight"),
)
BLOCK_NAMES = tuple(
    (f"blocks.{{i}}.{ours}.{kind}", f"blocks.{{i}}.{theirs}.{kind}")
    for ours, theirs in (("ln1", "layer_norm_1"), ("ln2", "layer_norm_2"),
                         ("attention.proj", "multi_attention_head.projection"),
                         ("feed_forward.up", "feed_forward.input"),
                         ("feed_forward.down", "feed_forward.output"))
    for kind in ("weight", "bias")
)
QKV = ("query", "key", "value")  # the thirds of our qkv, in order
VOCAB_ROWS = ("token_embedding.weight", "head.weight")  # gpt-rs has no rows for our special tokens


def gptrs_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every variable gpt-rs makes for `config` (its vocab_size: chars + merges), with its shape."""
    V, C, T = config.vocab_size, config.embedding_size, config.context_length
    H, F = config.head_count, config.feed_forward_multiplier * config.embedding_size
    hs = C // H
    shapes = {ROOT + "token_embedding.weight": (V, C), ROOT + "position_embedding.weight": (T, C),
              ROOT + "layer_norm.weight": (C,), ROOT + "layer_norm.bias": (C,),
              ROOT + "linear_head.weight": (V, C)}
    for i in range(config.block_count):
        block = f"{ROOT}blocks.{i}."
        for norm in ("layer_norm_1", "layer_norm_2"):
            shapes[block + norm + ".weight"] = shapes[block + norm + ".bias"] = (C,)
        for h in range(H):
            for part in QKV:
                shapes[f"{block}multi_attention_head.heads.{h}.{part}.weight"] = (hs, C)
                shapes[f"{block}multi_attention_head.heads.{h}.{part}.bias"] = (hs,)
        shapes[block + "multi_attention_head.projection.weight"] = (C, C)
        shapes[block + "multi_attention_head.projection.bias"] = (C,)
        shapes[block + "feed_forward.input.weight"] = (F, C)
        shapes[block + "feed_forward.input.bias"] = (F,)
        shapes[block + "feed_forward.output.weight"] = (C, F)
        shapes[block + "feed_forward.output.bias"] = (C,)
    return shapes


def to_gptrs(weights: dict[str, np.ndarray], config: ModelConfig, vocab_size: int) -> dict[str, np.ndarray]:
    """mlxstory weights (names as in `GPT.parameters()`) -> gpt-rs variables; keeps the first
    `vocab_size` rows of the vocabulary matrices (gpt-rs's own ids, no special tokens)."""
    out: dict[str, np.ndarray] = {}
    C, H = config.embedding_size, config.head_count
    hs = C // H
    for ours, theirs in TOP_NAMES:
        value = weights[ours]
        out[ROOT + theirs] = value[:vocab_size] if ours in VOCAB_ROWS else value
    for i in range(config.block_count):
        for ours, theirs in BLOCK_NAMES:
            out[ROOT + theirs.format(i=i)] = weights[ours.format(i=i)]
        for kind in ("weight", "bias"):
            qkv = weights[f"blocks.{i}.attention.qkv.{kind}"]  # [3C, C] / [3C]: q, k, v; heads within each
            for p, part in enumerate(QKV):
                for h in range(H):
                    start = p * C + h * hs
                    name = f"{ROOT}blocks.{i}.multi_attention_head.heads.{h}.{part}.{kind}"
                    out[name] = qkv[start:start + hs]
    return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in out.items()}


def from_gptrs(variables: dict[str, np.ndarray], config: ModelConfig) -> dict[str, np.ndarray]:
    """gpt-rs variables -> mlxstory weights for `config` (our vocab_size: gpt-rs's plus the special
    tokens, whose rows are zero)."""
    out: dict[str, np.ndarray] = {}
    H = config.head_count
    for ours, theirs in TOP_NAMES:
        value = np.asarray(variables[ROOT + theirs], dtype=np.float32)
        if ours in VOCAB_ROWS:
            missing = config.vocab_size - value.shape[0]
            value = np.concatenate([value, np.zeros((missing, value.shape[1]), np.float32)])
        out[ours] = value
    for i in range(config.block_count):
        for ours, theirs in BLOCK_NAMES:
            out[ours.format(i=i)] = np.asarray(variables[ROOT + theirs.format(i=i)], dtype=np.float32)
        for kind in ("weight", "bias"):
            out[f"blocks.{i}.attention.qkv.{kind}"] = np.concatenate([
                np.asarray(variables[f"{ROOT}blocks.{i}.multi_attention_head.heads.{h}.{part}.{kind}"],
                           dtype=np.float32)
                for part in QKV for h in range(H)
            ])
    return out


def check_gptrs_variables(variables: dict[str, tuple[int, ...]], config: ModelConfig, weights: Path,
                          config_path: Path | str) -> None:
    """The weights' names and shapes must be exactly those gpt-rs makes for the config: one error naming
    the first that differs and the config field that decides it."""
    expected = gptrs_shapes(config)
    missing = sorted(set(expected) - set(variables))
    if missing:
        raise ExportError(f"{weights}: missing gpt-rs variable {missing[0]} ({len(missing)} missing); the "
                          f"weights do not fit {config_path} (block_count {config.block_count}, head_count "
                          f"{config.head_count}?) or are not gpt-rs weights")
    extra = sorted(set(variables) - set(expected))
    if extra:
        raise ExportError(f"{weights}: unexpected variable {extra[0]} ({len(extra)} unexpected); the weights "
                          f"were saved from another config than {config_path} (block_count, head_count?)")
    for name, shape in expected.items():
        if tuple(variables[name]) != shape:
            raise ExportError(f"{weights}: {name} has shape {tuple(variables[name])} but {config_path} needs "
                              f"{shape}; the config does not match the weights ({_deciding_fields(name)})")


def _deciding_fields(name: str) -> str:
    if "token_embedding" in name or "linear_head" in name:
        return "vocab_size, embedding_size"
    if "position_embedding" in name:
        return "context_length, embedding_size"
    if "feed_forward" in name:
        return "embedding_size, feed_forward_multiplier"
    if ".heads." in name:
        return "embedding_size, head_count"
    return "embedding_size"


def gptrs_config_value(config: ModelConfig, vocab_size: int) -> ron.Struct:
    """`transformer_config.ron` as gpt-rs reads it (its fields only; vocab_size = its token count)."""
    values = {name: getattr(config, name) for name in CONFIG_FIELDS}
    values["vocab_size"] = vocab_size
    return ron.Struct(values)


def own_vocab_size(tokenizer: Tokenizer) -> int:
    """Ids gpt-rs has: the alphabet and the merges, not the special tokens after them."""
    return len(tokenizer.alphabet) + len(tokenizer.merges)


# -- export -------------------------------------------------------------------------------------------


def export_gptrs(source: str | Path, out: str | Path, *, with_stories: bool = False) -> list[Path]:
    """Write the three files gpt-rs's `generate` reads (weights, transformer_config.ron, a dataset RON with
    the tokenizer; its stories only `with_stories`) into the new folder `out`; returns their paths."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from mlxstory.training.checkpoint import load_model

    out = Path(out)
    check_output_dir(out)
    loaded = load_model(source)
    config, tokenizer = loaded.model_config, loaded.tokenizer
    if config.activation != "relu":
        raise ExportError(f"this model uses activation {config.activation!r}; gpt-rs only has relu, so it "
                          "would compute something else; export it with --format hf instead")
    if set(tokenizer.do_not_merge) != set(DO_NOT_MERGE):
        raise ExportError(f"this tokenizer's do-not-merge set is {tokenizer.do_not_merge!r}; gpt-rs's is "
                          "always '\\n\"', so gpt-rs would encode differently; export with --format hf")
    stories = _store_stories(loaded.run_dir, tokenizer) if with_stories else []
    n = own_vocab_size(tokenizer)
    weights = {name: np.array(value) for name, value in tree_flatten(loaded.model.parameters())}
    variables = to_gptrs(weights, config, n)
    with output_dir(out) as folder:
        mx.save_safetensors(str(folder / WEIGHTS_FILE), {k: mx.array(v) for k, v in variables.items()})
        (folder / CONFIG_FILE).write_text(ron.dumps(gptrs_config_value(config, n), pretty=True) + "\n")
        write_gptrs_dataset(folder / DATASET_FILE, tokenizer, stories)
    return [out / WEIGHTS_FILE, out / CONFIG_FILE, out / DATASET_FILE]


def _store_stories(run_dir: Path, tokenizer: Tokenizer) -> list[list[int]]:
    """Every story of the run's token store (train, then val), without separators."""
    from mlxstory.data.token_store import TokenStore
    from mlxstory.training.run_dir import open_run

    store = TokenStore.open(open_run(run_dir).data_path)
    if (store.tokenizer.alphabet, store.tokenizer.merges) != (tokenizer.alphabet, tokenizer.merges):
        raise ExportError(f"the token store of {run_dir} was made with another tokenizer than the run's; "
                          "export without --with-stories")
    stories = []
    for split in ("train", "val"):
        tokens = store.split_tokens(split)
        stories += [tokens[start:end - 1].tolist() for start, end in store.story_spans(split)]
    return stories


# -- import -------------------------------------------------------------------------------------------


@dataclass
class ImportedRun:
    path: Path
    step: int
    stories: int  # stories in the run's token store (0: the dataset held none)
    notes: list[str]


def import_gptrs(
    weights: str | Path,
    dataset: str | Path,
    config: str | Path,
    out: str | Path,
    *,
    train_config: str | Path | None = None,
) -> ImportedRun:
    """Make the run directory `out` from gpt-rs's weights, dataset RON and transformer_config.ron.

    The run has the dataset's tokenizer, its stories as a token store (for `eval` and more training), and
    one checkpoint (step 0, fresh optimizer state) that `generate`, `eval`, `dashboard` and
    `train --resume` accept. `train_config` (gpt-rs's train_config.ron, or ours) sets train.ron.
    """
    import mlx.core as mx

    from mlxstory.data.token_store import TokenStore
    from mlxstory.model.gpt import GPT
    from mlxstory.training.checkpoint import KNOWN_VOCAB_KEY, TrainerState, load_arrays, save_checkpoint
    from mlxstory.training.optimizer import AdamW
    from mlxstory.training.run_dir import DATA_DIR, RunInfo, write_info
    from mlxstory.training.train import train_sampler_seed

    weights, dataset, config, out = Path(weights), Path(dataset), Path(config), Path(out)
    check_output_dir(out, "--out")
    data = read_gptrs_dataset(dataset)
    tokenizer = data.tokenizer
    try:
        theirs = load_config(ModelConfig, config)
        train_settings = load_config(TrainConfig, train_config) if train_config else TrainConfig()
    except ConfigError as error:
        raise ExportError(str(error)) from None
    n = own_vocab_size(tokenizer)
    if theirs.vocab_size != n:
        raise ExportError(f"{config}: vocab_size {theirs.vocab_size}, but {dataset} has {n} tokens "
                          f"({len(tokenizer.alphabet)} characters + {len(tokenizer.merges)} merges); the "
                          "config and the dataset belong to different models")
    try:
        arrays, _ = load_arrays(weights, "gpt-rs weights")
    except CheckpointError as error:
        raise ExportError(str(error)) from None
    check_gptrs_variables({k: tuple(v.shape) for k, v in arrays.items()}, theirs, weights, config)
    ours = replace(theirs, vocab_size=tokenizer.vocab_size)
    model = GPT(ours)
    variables = {k: np.array(v.astype(mx.float32)) for k, v in arrays.items()}
    model.load_weights([(k, mx.array(v)) for k, v in from_gptrs(variables, ours).items()])
    optimizer = AdamW(model.trainable_parameters(), model.decay_mask(), betas=train_settings.betas,
                      weight_decay=train_settings.weight_decay)
    # train()'s batch sampler before its first step
    sampler = np.random.default_rng(train_sampler_seed(train_settings.seed)).bit_generator.state
    state = TrainerState(step=0, sampler=sampler, seed=train_settings.seed)

    notes = [FRESH_OPTIMIZER_NOTE]
    texts = [tokenizer.decode(story) for story in data.stories if story]
    if len(texts) < 2:
        notes.append(f"{dataset} holds {len(texts)} stories: no token store; eval needs --data SOURCE, "
                     "and more training a new run")
    with output_dir(out, "--out") as folder:
        tokenizer.save(folder / "tokenizer.ron")
        save_config(ours, folder / "model.ron")
        save_config(train_settings, folder / "train.ron")
        if len(texts) >= 2:
            TokenStore.create(folder / DATA_DIR, texts, tokenizer, source=str(dataset))
        info = RunInfo(preset="gpt-rs", dataset=str(dataset), data_dir=DATA_DIR,
                       dataset_description=f"gpt-rs dataset {dataset} ({len(texts):,} stories)",
                       created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), notes=notes)
        write_info(folder, info)
        save_checkpoint(folder, model, optimizer.flat_state(), state,
                        extra_metadata={KNOWN_VOCAB_KEY: str(n), "source": f"gpt-rs {weights.name}"})
    return ImportedRun(out, 0, len(texts) if len(texts) >= 2 else 0, notes)

