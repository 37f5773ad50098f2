"""Corrupt or mismatched files: every command that reads them answers with one `error:` line and exit 1,
and leaves every file of the run exactly as it was (bytes and modification times).

Checks of single loaders (library level) live in tests/test_checkpoint.py and tests/test_token_store.py;
here the same damage goes through the commands a user types: generate, eval and train --resume.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mlxstory.training.checkpoint import read_latest

from .faults import assert_one_error_line, cli, fault, snapshot


def weights(run: Path) -> Path:
    return run / "checkpoints" / read_latest(run)["weights"]


def optimizer(run: Path) -> Path:
    return run / "checkpoints" / read_latest(run)["optimizer"]


def state(run: Path) -> Path:
    return run / "checkpoints" / read_latest(run)["state"]


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(8).bytes(path.stat().st_size))


def change_model_ron(run: Path, old: str, new: str) -> None:
    text = (run / "model.ron").read_text()
    assert old in text
    (run / "model.ron").write_text(text.replace(old, new))


def other_tokenizer(run: Path) -> None:
    from mlxstory.data.tokenizer import Tokenizer

    texts = ["Once upon a time there was a cat.", "The dog ran to the park and played."] * 20
    Tokenizer.train(texts, vocab_size=40).save(run / "tokenizer.ron")


def manifest_dtype(run: Path, dtype: str) -> None:
    manifest = json.loads((run / "data" / "manifest.json").read_text())
    manifest["dtype"] = dtype
    (run / "data" / "manifest.json").write_text(json.dumps(manifest, indent=2))


def wrong_checksum(run: Path) -> None:
    manifest = json.loads((run / "data" / "manifest.json").read_text())
    manifest["tokens_sha256"] = hashlib.sha256(b"something else").hexdigest()
    (run / "data" / "manifest.json").write_text(json.dumps(manifest, indent=2))


COMMANDS: dict[str, Callable[[Path], list[str]]] = {
    "generate": lambda run: ["generate", "--run", str(run), "--max-tokens", "3", "--seed", "1", "Once"],
    "eval": lambda run: ["eval", "--run", str(run)],
    # With overrides: a resume that fails must not have recorded them in train.ron either.
    "train --resume": lambda run: ["train", "--resume", str(run), "--iterations", "9", "--lr", "0.002",
                                   "--no-tui"],
}
GENERATE, EVAL, RESUME = COMMANDS

# (damage, what it does to a copy of the run, the commands that must refuse it, words the error must hold)
CASES: list[tuple[str, Callable[[Path], None], tuple[str, ...], str]] = [
    ("truncated weights", lambda run: truncate(weights(run)), (GENERATE, EVAL, RESUME),
     "is not a readable safetensors file"),
    ("random-byte weights", lambda run: random_bytes(weights(run)), (GENERATE, EVAL, RESUME),
     "is not a readable safetensors file"),
    ("empty weights", lambda run: weights(run).write_bytes(b""), (GENERATE, EVAL, RESUME),
     "is not a readable safetensors file"),
    ("truncated optimizer state", lambda run: truncate(optimizer(run)), (RESUME,),
     "optimizer state"),
    ("torn trainer state", lambda run: state(run).write_text('{"step": '), (RESUME,),
     "unreadable trainer state"),
    ("garbage latest.json", lambda run: (run / "checkpoints" / "latest.json").write_text("[1, 2]"),
     (GENERATE, EVAL, RESUME), "unreadable checkpoint pointer"),
    ("weights for another model size",
     lambda run: change_model_ron(run, "embedding_size: 64", "embedding_size: 32"),
     (GENERATE, EVAL, RESUME), "token_embedding.weight has shape (512, 64) but model.ron needs (512, 32)"),
    ("weights for fewer blocks", lambda run: change_model_ron(run, "block_count: 2", "block_count: 3"),
     (GENERATE, EVAL, RESUME), "missing weight blocks.2"),
    ("tokenizer.ron of another vocab", other_tokenizer, (GENERATE, EVAL, RESUME),
     "tokenizer.ron has 40 tokens but model.ron says vocab_size 512"),
    ("token store truncated mid-file", lambda run: truncate(run / "data" / "tokens.bin"), (EVAL, RESUME),
     "tokens.bin is truncated"),
    ("manifest with a wrong checksum", wrong_checksum, (EVAL, RESUME), "does not match its sha256"),
    ("manifest with an object dtype", lambda run: manifest_dtype(run, "O"), (EVAL, RESUME),
     "dtype object for vocab size 512, expected uint16"),
    ("manifest with a narrower dtype", lambda run: manifest_dtype(run, "int8"), (EVAL, RESUME),
     "dtype int8 for vocab size 512"),
    ("unparsable tokenizer.ron", lambda run: (run / "tokenizer.ron").write_text("MlxstoryTokenizer(\n  alph"),
     (GENERATE, EVAL, RESUME), "tokenizer.ron:"),
]


@pytest.mark.parametrize(("damage", "apply", "commands", "expected"), CASES, ids=[case[0] for case in CASES])
def test_damaged_run_files_are_one_error_line_and_nothing_is_written(
    tiny_trained_run: Path, tmp_path: Path, damage: str, apply: Callable[[Path], None],
    commands: tuple[str, ...], expected: str,
):
    run = tmp_path / "run"
    shutil.copytree(tiny_trained_run, run)
    apply(run)
    before = snapshot(run)
    for command in commands:
        with fault(f"damaged file via {command}"):
            assert_one_error_line(cli(*COMMANDS[command](run)), expected)
            assert snapshot(run) == before, f"{command} changed files after: {damage}"
