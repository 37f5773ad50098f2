"""Bad data: sources that cannot make a run are refused with one `error:` line before anything is written;
characters outside the tokenizer's alphabet are the one documented graceful case (`<|unk|>` plus a count).

Reader-level checks (each source type) live in tests/test_sources.py; here the data goes through the
commands: `mlxstory tokenize` and `mlxstory train`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlxstory.data.token_store import TokenStore, split_indices
from mlxstory.formats.config import ModelConfig, save_config

from .faults import assert_one_error_line, cli, fault

STORIES = ["Once upon a time there was a cat.", "The dog ran to the park.", "They played all day."]


def parquet(table: pa.Table) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        pq.write_table(table, folder / "data.parquet")
        return folder / "data.parquet"

    return write


def file(name: str, data: bytes) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        (folder / name).write_bytes(data)
        return folder / name

    return write


def empty_folder(folder: Path) -> Path:
    (folder / "shards").mkdir()
    return folder / "shards"


LATIN_1 = "Once upon a time, a caf\xe9 sold cr\xe8me.\n\nThe end.".encode("latin-1")
BAD_SOURCES = [
    ("empty parquet", parquet(pa.table({"text": pa.array([], pa.string())})), "no stories in"),
    ("only blank stories", parquet(pa.table({"text": ["", "   \n", None]})), "no stories in"),
    ("no string column", parquet(pa.table({"id": [1, 2], "score": [0.5, 0.7]})), "no string column"),
    ("not a parquet file", file("data.parquet", b"PAR1 this is not parquet"), "cannot read parquet file"),
    ("folder without stories", empty_folder, "no .parquet, .txt or .jsonl files in folder"),
    ("non-UTF-8 text file", file("stories.txt", LATIN_1), "is not UTF-8 text (invalid byte at offset 23)"),
    ("non-UTF-8 jsonl", file("stories.jsonl", b'{"text": "caf\xe9"}\n'), "is not UTF-8 text"),
    ("jsonl that is not JSON", file("stories.jsonl", b'{"text": "a"}\n{"text": \n'),
     "stories.jsonl:2: invalid JSON"),
    ("unknown file type", file("stories.csv", b"text\nOnce upon a time\n"), "unknown file type '.csv'"),
]


@pytest.mark.parametrize(("name", "make", "expected"), BAD_SOURCES, ids=[case[0] for case in BAD_SOURCES])
def test_unusable_sources_are_refused_before_anything_is_written(tmp_path: Path, name: str,
                                                                 make: Callable[[Path], Path], expected: str):
    source = make(tmp_path)
    for command in (["tokenize", "--data", str(source), "--out", str(tmp_path / "store")],
                    ["train", "--data", str(source), "--preset", "tiny", "--out", str(tmp_path / "run"),
                     "--no-tui"]):
        with fault(f"bad data via {command[0]}"):
            assert_one_error_line(cli(*command), expected)
            assert not (tmp_path / "store").exists() and not (tmp_path / "run").exists()


def small_model(tmp_path: Path, **fields: int) -> Path:
    path = tmp_path / "model.ron"
    values = {"vocab_size": 24, "embedding_size": 16, "context_length": 64, "head_count": 2, "block_count": 1}
    save_config(ModelConfig(**{**values, **fields}), path)
    return path


def test_a_corpus_shorter_than_one_context_window_leaves_no_half_made_run(tmp_path: Path):
    data = tmp_path / "stories.txt"
    data.write_text("\n\n".join(STORIES))
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--config", str(small_model(tmp_path)), "--out", str(run),
            "--no-tui", "--iterations", "2"]
    with fault("bad data via train"):
        assert_one_error_line(cli(*args), "fewer than one window of context_length+1 = 65",
                              "smaller context_length")
        assert not run.exists()  # so the same command, fixed, can simply be run again
    args[args.index("--config") + 1] = str(small_model(tmp_path, context_length=8))
    result = cli(*args)
    assert result.exit_code == 0, result.stderr


def test_a_vocab_smaller_than_the_alphabet_says_the_smallest_that_fits(tmp_path: Path):
    data = tmp_path / "stories.txt"
    data.write_text("\n\n".join(STORIES))
    with fault("bad data via tokenize"):
        result = cli("tokenize", "--data", str(data), "--vocab-size", "10", "--out", str(tmp_path / "store"))
        assert_one_error_line(result, "unique chars in data", "Ask for a vocab size of at least")
        assert not (tmp_path / "store").exists()
    with fault("bad data via train"):
        result = cli("train", "--data", str(data), "--config", str(small_model(tmp_path, vocab_size=10)),
                     "--out", str(tmp_path / "run"), "--no-tui")
        assert_one_error_line(result, "unique chars in data", "Ask for a vocab size of at least")
        assert not (tmp_path / "run").exists()


def test_characters_outside_the_alphabet_become_unk_with_a_count(tmp_path: Path, sample_texts: list[str],
                                                                 tiny_trained_run: Path):
    """The documented graceful case: encoded as <|unk|>, counted and reported, never a crash."""
    texts = sample_texts[:60]
    for i in range(len(texts)):  # the split hashes each story: find one that is in val once changed
        changed = [*texts[:i], texts[i] + " Жар-птица 🦄 flew by.", *texts[i + 1:]]
        train, val = split_indices([text.strip() for text in changed])
        if i in val:
            texts = changed  # only in a validation story: unseen by the tokenizer
            break
    pq.write_table(pa.table({"text": texts}), tmp_path / "stories.parquet")
    with fault("unknown characters via tokenize"):
        result = cli("tokenize", "--data", str(tmp_path / "stories.parquet"), "--vocab-size", "300",
                     "--out", str(tmp_path / "store"))
        assert result.exit_code == 0, result.stderr
        alphabet = set().union(*(texts[i] for i in train))
        unknown = sum(c not in alphabet for i in val for c in texts[i])
        assert unknown >= len("Жарптица🦄")
        assert TokenStore.open(tmp_path / "store").manifest["splits"]["val"]["unknown_chars"] == unknown
        assert f"{unknown} unknown chars as <|unk|>" in result.stderr

    prompt = "Once upon a time Жар 🦄"
    with fault("unknown characters via generate"):
        result = cli("generate", "--run", str(tiny_trained_run), "--max-tokens", "3", "--seed", "1", prompt)
        assert result.exit_code == 0, result.stderr
        assert result.stdout.startswith(prompt)  # the prompt is echoed as typed, not as <|unk|>
        assert "warning: 4 character(s) outside the tokenizer's alphabet" in result.stderr

    (tmp_path / "odd.txt").write_text("Жар-птица 🦄 and a cat.\n\nThe dog ran to the park.")
    with fault("unknown characters via eval"):
        result = cli("eval", "--run", str(tiny_trained_run), "--data", str(tmp_path / "odd.txt"), "--json")
        assert result.exit_code == 0, result.stderr
        assert "outside the tokenizer's alphabet" in result.stderr
        assert '"bits_per_byte"' in result.stdout
