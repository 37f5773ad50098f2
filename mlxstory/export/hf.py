"""Export to Hugging Face `transformers`: a GPT-2 (`GPT2LMHeadModel`) folder and a `tokenizers` tokenizer.

The decoder is GPT-2's exactly: pre-LN blocks, learned positions, a final LayerNorm, biases on every
linear, a head without bias (untied), attention scaled by 1/sqrt(head size); only the activation
(relu, the original's) and the feed-forward width are settings. GPT-2 keeps its linear weights as
`Conv1D` [in, out], the transpose of ours. The tokenizer is our BPE written as `tokenizer.json`: our
alphabet and merges in order, our split regex as the pre-tokenizer, unknown characters to `<|unk|>` one
each, a `Fuse` decoder (tokens joined without spaces), and `<|endoftext|>` put in front of every
encoded text, as mlxstory's generation does. Nothing here needs torch or transformers.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mlxstory.data.tokenizer import EOT, UNK, Tokenizer
from mlxstory.errors import TokenizerError
from mlxstory.export.output import check_output_dir, output_dir
from mlxstory.formats.config import ModelConfig

MODEL_FILE = "model.safetensors"
FILES = ("config.json", "generation_config.json", MODEL_FILE, "tokenizer.json", "tokenizer_config.json",
         "special_tokens_map.json", "README.md")

# (ours, GPT-2's, transposed); "{i}" is the block index.
TOP_NAMES = (
    ("token_embedding.weight", "transformer.wte.weight", False),
    ("position_embedding.weight", "transformer.wpe.weight", False),
    ("final_norm.weight", "transformer.ln_f.weight", False),
    ("final_norm.bias", "transformer.ln_f.bias", False),
    ("head.weight", "lm_head.weight", False),
)
BLOCK_NAMES = tuple(
    (f"blocks.{{i}}.{ours}.{kind}", f"transformer.h.{{i}}.{theirs}.{kind}", kind == "weight" and conv)
    for ours, theirs, conv in (("ln1", "ln_1", False), ("ln2", "ln_2", False),
                               ("attention.qkv", "attn.c_attn", True),
                               ("attention.proj", "attn.c_proj", True),
                               ("feed_forward.up", "mlp.c_fc", True),
                               ("feed_forward.down", "mlp.c_proj", True))
    for kind in ("weight", "bias")
)


def gpt2_state(weights: dict[str, np.ndarray], config: ModelConfig) -> dict[str, np.ndarray]:
    """mlxstory weights -> `GPT2LMHeadModel`'s state dict (float32, contiguous)."""
    names = list(TOP_NAMES) + [(o.format(i=i), t.format(i=i), c) for i in range(config.block_count)
                               for o, t, c in BLOCK_NAMES]
    return {theirs: np.ascontiguousarray(weights[ours].T if transposed else weights[ours], dtype=np.float32)
            for ours, theirs, transposed in names}


def gpt2_config(config: ModelConfig, tokenizer: Tokenizer, *, layer_norm_epsilon: float) -> dict[str, Any]:
    """`config.json`. GPT-2 drops out the branch outputs where we drop out the residual stream itself;
    only training in transformers sees the difference, so the feed-forward dropout stands in."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.context_length,
        "n_embd": config.embedding_size,
        "n_layer": config.block_count,
        "n_head": config.head_count,
        "n_inner": config.feed_forward_multiplier * config.embedding_size,
        "activation_function": config.activation,  # "relu" / "gelu": the exact forms in both libraries
        "layer_norm_epsilon": layer_norm_epsilon,
        "embd_pdrop": config.embedding_dropout,
        "attn_pdrop": config.attention_dropout,
        "resid_pdrop": config.feed_forward_dropout,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": False,
        "initializer_range": 0.02,
        "bos_token_id": tokenizer.eot_id,
        "eos_token_id": tokenizer.eot_id,
        "pad_token_id": tokenizer.eot_id,
        "use_cache": True,
        "torch_dtype": "float32",
    }


def generation_config(config: ModelConfig, tokenizer: Tokenizer, known_vocab_size: int | None) -> dict:
    """`generation_config.json`. A gpt-rs import suppresses the special tokens it never learnt."""
    values: dict[str, Any] = {
        "bos_token_id": tokenizer.eot_id,
        "eos_token_id": tokenizer.eot_id,
        "pad_token_id": tokenizer.eot_id,
    }
    if known_vocab_size is not None:
        values["suppress_tokens"] = list(range(known_vocab_size, config.vocab_size))
    return values


def token_strings(tokenizer: Tokenizer) -> list[str]:
    """The text of every id; `tokenizers` keys its vocabulary by text, so two ids must not share one."""
    strings = [tokenizer.token_text(i) for i in range(tokenizer.vocab_size)]
    shared = [text for text, count in Counter(strings).items() if count > 1]
    if shared:
        raise TokenizerError(f"{len(shared)} token text(s) belong to more than one id (e.g. {shared[0]!r}); "
                             "a `tokenizers` BPE cannot hold them, so this tokenizer cannot be exported")
    return strings


def tokenizer_json(tokenizer: Tokenizer, *, start_with_eot: bool = True) -> dict[str, Any]:
    """`tokenizer.json` for the `tokenizers` library that encodes and decodes exactly as `tokenizer`.

    `start_with_eot` puts `<|endoftext|>` before every encoded text (add_special_tokens), the context
    mlxstory's generation starts from; off for a gpt-rs import, which never saw it.
    """
    strings = token_strings(tokenizer)
    added = [{"id": i, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for text, i in tokenizer.special_tokens.items()]
    post_processor = None
    if start_with_eot:
        bos = {"SpecialToken": {"id": EOT, "type_id": 0}}
        a, b = ({"Sequence": {"id": name, "type_id": 0}} for name in "AB")
        post_processor = {
            "type": "TemplateProcessing",
            "single": [bos, a],
            "pair": [bos, a, bos, b],
            "special_tokens": {EOT: {"id": EOT, "ids": [tokenizer.eot_id], "tokens": [EOT]}},
        }
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": tokenizer.split_pattern},
                          "behavior": "Isolated", "invert": False},
        "post_processor": post_processor,
        "decoder": {"type": "Fuse"},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": UNK,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,  # one <|unk|> per unknown character, as ours
            "byte_fallback": False,
            "ignore_merges": False,  # a word found whole in the vocabulary still goes through the merges
            "vocab": {text: i for i, text in enumerate(strings)},
            "merges": [[strings[a], strings[b]] for (a, b), _ in tokenizer.merges],
        },
    }


def tokenizer_config(config: ModelConfig) -> dict[str, Any]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOT,
        "eos_token": EOT,
        "unk_token": UNK,
        "pad_token": EOT,
        "model_max_length": config.context_length,
        "clean_up_tokenization_spaces": False,
    }


def model_card(loaded: Any, *, val_loss: float | None, bits_per_byte: float | None, dataset: str) -> str:
    """A short README.md: what the model is, what it was trained on, how far, how good, how to load it."""
    config = loaded.model_config
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [mlxstory, gpt2, tinystories]",
        "---",
        "",
        "# A small story model trained with mlxstory",
        "",
        f"A {loaded.model.parameter_count():,}-parameter GPT-2-shaped decoder ({config.block_count} blocks, "
        f"{config.head_count} heads, embedding {config.embedding_size}, context {config.context_length}, "
        f"{config.activation}) with its own {config.vocab_size:,}-token BPE tokenizer, trained with "
        "mlxstory and exported with `mlxstory export --format hf`.",
        "",
        f"- data: {dataset}",
        f"- training steps: {loaded.step}",
    ]
    if val_loss is not None:
        lines.append(f"- held-out loss at that step: {val_loss:.4f} nats per token")
    if bits_per_byte is not None:
        lines.append(f"- held-out bits per byte: about {bits_per_byte:.3f} (that loss × the validation "
                     "split's tokens per byte; `mlxstory eval` measures it exactly)")
    lines += [
        "",
        "```python",
        "from transformers import pipeline",
        'generate = pipeline("text-generation", model="path/to/this/folder")',
        'print(generate("Once upon a time", max_new_tokens=40)[0]["generated_text"])',
        "```",
        "",
        f"The tokenizer puts `{EOT}` before the prompt, as mlxstory does. The model has "
        f"{config.context_length} positions: keep prompt + new tokens within them (mlxstory slides its "
        "window instead).",
        "",
    ]
    return "\n".join(lines)


def _run_facts(loaded: Any) -> tuple[float | None, float | None, str]:
    """(held-out loss at the exported step, estimated bits per byte, data description), where known."""
    from mlxstory.data.token_store import TokenStore
    from mlxstory.errors import MlxstoryError
    from mlxstory.training.events import EvalCompleted
    from mlxstory.training.metrics_log import METRICS_FILE, read_metrics
    from mlxstory.training.run_dir import open_run

    try:
        run = open_run(loaded.run_dir)
    except MlxstoryError:
        return None, None, "unknown"
    dataset = run.info.dataset_description or run.info.dataset
    val_loss = None
    if (run.path / METRICS_FILE).is_file():
        evals = [e for e in read_metrics(run.path / METRICS_FILE).events
                 if isinstance(e, EvalCompleted) and e.step == loaded.step]
        val_loss = evals[-1].val_loss if evals and math.isfinite(evals[-1].val_loss) else None
    bits = None
    if val_loss is not None:
        try:
            store = TokenStore.open(run.data_path, verify=False)
            bits = val_loss / math.log(2) * len(store.split_tokens("val")) / store.split_bytes("val")
        except MlxstoryError:
            pass
    return val_loss, bits, dataset


def export_hf(source: str | Path, out: str | Path) -> list[Path]:
    """Write a `transformers` model folder for the run or checkpoint `source` into the new folder `out`."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from mlxstory.training.checkpoint import load_model

    out = Path(out)
    check_output_dir(out)
    loaded = load_model(source)
    config, tokenizer = loaded.model_config, loaded.tokenizer
    known = loaded.model.known_vocab_size
    token_json = tokenizer_json(tokenizer, start_with_eot=known is None)
    weights = {name: np.array(value) for name, value in tree_flatten(loaded.model.parameters())}
    state = gpt2_state(weights, config)
    val_loss, bits, dataset = _run_facts(loaded)
    texts = {
        "config.json": gpt2_config(config, tokenizer, layer_norm_epsilon=loaded.model.final_norm.eps),
        "generation_config.json": generation_config(config, tokenizer, known),
        "tokenizer.json": token_json,
        "tokenizer_config.json": tokenizer_config(config),
        "special_tokens_map.json": {"bos_token": EOT, "eos_token": EOT, "unk_token": UNK, "pad_token": EOT},
    }
    with output_dir(out) as folder:
        mx.save_safetensors(str(folder / MODEL_FILE), {k: mx.array(v) for k, v in state.items()},
                            metadata={"format": "pt"})  # transformers refuses safetensors without it
        for name, value in texts.items():
            text = json.dumps(value, indent=2, ensure_ascii=False) + "\n"
            (folder / name).write_text(text, encoding="utf-8")
        (folder / "README.md").write_text(
            model_card(loaded, val_loss=val_loss, bits_per_byte=bits, dataset=dataset), encoding="utf-8")
    return [out / name for name in FILES]
