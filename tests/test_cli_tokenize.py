"""`mlxstory tokenize` end to end through the CLI, on real stories."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mlxstory.cli import app
from mlxstory.data import hub
from mlxstory.data.token_store import TokenStore, split_indices
from mlxstory.data.tokenizer import Tokenizer


@pytest.fixture()
def small_parquet(tmp_path: Path, sample_texts: list[str]) -> Path:
    path = tmp_path / "small.parquet"
    pq.write_table(pa.table({"text": sample_texts[:300]}), path)
    return path


def invoke(*args: str):
    return CliRunner().invoke(app, ["tokenize", *args])


def test_tokenize_writes_a_store_that_opens(
    tmp_path: Path, small_parquet: Path, sample_texts: list[str]
) -> None:
    out = tmp_path / "store"
    result = invoke("--data", str(small_parquet), "--vocab-size", "300", "--out", str(out))
    assert result.exit_code == 0, result.output
    store = TokenStore.open(out)
    n_train, n_val = store.split_story_count("train"), store.split_story_count("val")
    assert f"{n_train} train / {n_val} val stories" in result.stderr and "vocab 300" in result.stderr
    assert n_train + n_val == 300 and 15 <= n_val <= 45  # about a tenth, drawn per story
    assert store.tokenizer.vocab_size == 300 and store.source == str(small_parquet)
    # The same result made without the CLI: a tokenizer trained on the default split's train stories
    # (the trainer test_tokenizer checks against the original's), and those stories encoded with it.
    texts = [text.strip() for text in sample_texts[:300]]
    train_idx, _ = split_indices(texts, 0.1, 1337)
    expected = Tokenizer.train([texts[i] for i in train_idx], vocab_size=300)
    assert store.tokenizer.merges == expected.merges and store.tokenizer.alphabet == expected.alphabet
    ids = [token for i in train_idx for token in (*expected.encode(texts[i]), expected.eot_id)]
    assert store.split_tokens("train").tolist() == ids


def test_tokenize_options_reach_the_split(tmp_path: Path, small_parquet: Path) -> None:
    args = ["--data", str(small_parquet), "--vocab-size", "300"]
    assert invoke(*args, "--out", str(tmp_path / "a"), "--val-fraction", "0.2", "--seed", "5").exit_code == 0
    assert invoke(*args, "--out", str(tmp_path / "b"), "--val-fraction", "0.2", "--seed", "6").exit_code == 0
    a, b = TokenStore.open(tmp_path / "a"), TokenStore.open(tmp_path / "b")
    assert 40 <= a.split_story_count("val") <= 80 and 40 <= b.split_story_count("val") <= 80
    assert a.manifest["split"]["seed"] == 5 and a.manifest["split"]["val_fraction"] == 0.2
    assert a.manifest["tokens_sha256"] != b.manifest["tokens_sha256"]


def test_full_sample_with_vocab_512(tmp_path: Path, sample_parquet: Path, sample_texts: list[str]) -> None:
    out = tmp_path / "full"
    result = invoke("--data", str(sample_parquet), "--vocab-size", "512", "--out", str(out))
    assert result.exit_code == 0, result.output
    store = TokenStore.open(out)
    texts = [text.strip() for text in sample_texts]
    train_idx, val_idx = split_indices(texts, 0.1, 1337)
    counts = store.split_story_count("train"), store.split_story_count("val")
    assert counts == (len(train_idx), len(val_idx))
    assert 2450 * 0.08 < len(val_idx) < 2450 * 0.12
    assert store.manifest["total"]["bytes"] == sum(len(text.encode()) for text in texts)
    # The tokenizer saw only the train stories: val characters outside them become <|unk|>.
    train_chars = set("".join(texts[i] for i in train_idx))
    unseen = sum(c not in train_chars for i in val_idx for c in texts[i])
    assert set(store.tokenizer.alphabet) == train_chars
    assert store.manifest["splits"]["val"]["unknown_chars"] == unseen


def test_demo_source(tmp_path: Path) -> None:
    result = invoke("--data", "demo", "--vocab-size", "300", "--out", str(tmp_path / "demo"))
    assert result.exit_code == 0, result.output
    assert TokenStore.open(tmp_path / "demo").manifest["source"] == "demo"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--data", "missing.parquet"], "data source not found"),
        (["--data", "SMALL", "--vocab-size", "10"], "but the requested token count was 10"),
        (["--data", "SMALL", "--val-fraction", "1.5"], "--val-fraction must be between 0 and 1"),
    ],
)
def test_bad_input_is_one_error_line(
    tmp_path: Path, small_parquet: Path, args: list[str], expected: str
) -> None:
    args = [str(small_parquet) if arg == "SMALL" else arg for arg in args]
    result = invoke(*args, "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and expected in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_offline_hub_names_data_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(dataset: object) -> Path:
        raise LocalEntryNotFoundError("outgoing traffic has been disabled")

    monkeypatch.setattr(hub, "download", offline)
    result = invoke("--data", "tinystories-10k", "--out", str(tmp_path / "out"))
    assert result.exit_code == 1 and "--data" in result.stderr and "tinystories-10k" in result.stderr
    assert not (tmp_path / "out").exists()


def seed_without_unknown_val_chars(texts: list[str]) -> str:
    """gpt-rs has no <|unk|>: a seed whose val stories use only characters of the train stories."""
    for seed in range(100):
        train, val = split_indices(texts, 0.1, seed)
        if set("".join(texts[i] for i in val)) <= set("".join(texts[i] for i in train)):
            return str(seed)
    raise AssertionError("no such seed")


def test_gptrs_dataset_files_move_both_ways(tmp_path: Path, small_parquet: Path,
                                            sample_texts: list[str]) -> None:
    exported = tmp_path / "dataset.ron"
    seed = seed_without_unknown_val_chars([text.strip() for text in sample_texts[:300]])
    first = invoke("--data", str(small_parquet), "--vocab-size", "300", "--out", str(tmp_path / "a"),
                   "--gptrs-out", str(exported), "--seed", seed)
    assert first.exit_code == 0, first.output
    assert exported.read_text().startswith("(char_to_id: {")
    # Read back as a data source: the gpt-rs tokenizer is kept, not retrained, and the stories survive.
    second = invoke("--data", str(exported), "--out", str(tmp_path / "b"), "--seed", seed)
    assert second.exit_code == 0, second.output
    a, b = TokenStore.open(tmp_path / "a"), TokenStore.open(tmp_path / "b")
    assert b.tokenizer.merges == a.tokenizer.merges and b.tokenizer.alphabet == a.tokenizer.alphabet
    assert list(b.split_tokens("train")) == list(a.split_tokens("train"))
    assert b.split_bytes("val") == a.split_bytes("val")


def test_a_broken_gptrs_dataset_is_one_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "dataset.ron"
    bad.write_text("(char_to_id: {'a': 0}, id_to_char: {0: 'a'}, mergings: [], encoded_data: [[0, 7]])")
    result = invoke("--data", str(bad), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "error:" in result.stderr and str(bad) in result.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()
