"""Streaming sources, word counts from many batches, worker processes and the hashed split, on real files."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mlxstory.cli import app
from mlxstory.data import tokenizer as tokenizer_module
from mlxstory.data.sources import SourceTexts, load_texts, open_files, open_source
from mlxstory.data.token_store import TokenStore, build_token_store, split_indices
from mlxstory.data.tokenizer import Tokenizer, WordCounts
from mlxstory.errors import DataError


@pytest.fixture(scope="module")
def stories(sample_texts: list[str]) -> list[str]:
    return [text.strip() for text in sample_texts[:400]]


def streamed(path: Path, chunk_bytes: int) -> tuple[list[str], list[int]]:
    """Stories of `path` read in chunks of about `chunk_bytes`, and each chunk's payload size."""
    source = open_source(path)
    chunks = list(source.chunks(chunk_bytes))
    return [story for chunk in chunks for story in chunk.stories()], [chunk.size for chunk in chunks]


# -- streaming sources ------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["marker", "blank lines", "crlf and bom"])
def test_txt_in_small_chunks_gives_the_stories_of_the_whole_file(tmp_path: Path, stories: list[str],
                                                                  layout: str) -> None:
    path = tmp_path / "stories.txt"
    if layout == "marker":
        path.write_text("".join(f"{s}\n<|endoftext|>\n" for s in stories), "utf-8")
    else:
        flat = [re.sub(r"\n\s*\n", "\n", s) for s in stories]  # blank lines separate stories here
        text = "\n\n \n".join(flat) + "\n"
        path.write_bytes(("\ufeff" + text.replace("\n", "\r\n")).encode() if layout == "crlf and bom"
                         else text.encode())
    whole = load_texts(path).texts  # the whole file at once, as before streaming
    assert len(whole) == 400
    chunked, sizes = streamed(path, 5_000)
    assert chunked == whole
    assert len(sizes) > 50 and sum(sizes) == path.stat().st_size  # progress covers every byte once
    assert max(sizes) < 5_000 + max(len(s.encode()) for s in stories) + 40  # a chunk is about chunk_bytes


def test_jsonl_in_chunks_and_an_error_names_the_file_line(tmp_path: Path, stories: list[str]) -> None:
    path = tmp_path / "stories.jsonl"
    lines = [json.dumps({"text": s}) for s in stories]
    path.write_text("\n".join(lines) + "\n", "utf-8")
    assert streamed(path, 3_000)[0] == stories
    lines[350] = "{broken"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    with pytest.raises(DataError, match=r"stories.jsonl:351: invalid JSON"):
        streamed(path, 3_000)


def test_a_bad_byte_far_into_a_txt_file_reports_its_file_offset(tmp_path: Path, stories: list[str]) -> None:
    path = tmp_path / "stories.txt"
    head = "".join(f"{s}<|endoftext|>" for s in stories).encode()
    path.write_bytes(head + b"caf\xe9<|endoftext|>")
    with pytest.raises(DataError, match=f"invalid byte at offset {len(head) + 3}"):
        streamed(path, 4_000)


def test_parquet_is_read_by_record_batch(tmp_path: Path, sample_texts: list[str]) -> None:
    path = tmp_path / "stories.parquet"
    pq.write_table(pa.table({"text": sample_texts}), path, row_group_size=500)
    source = open_source(path)
    chunks = list(source.chunks(100_000))
    assert source.unit == "rows" and source.total == 2450 and sum(c.size for c in chunks) == 2450
    assert len(chunks) > 10  # about 100 kB of text each, not the whole file
    assert [s for c in chunks for s in c.stories()] == [t.strip() for t in sample_texts if t.strip()]


def test_small_parquet_row_groups_are_read_by_the_worker(tmp_path: Path, sample_texts: list[str]) -> None:
    path = tmp_path / "stories.parquet"
    pq.write_table(pa.table({"text": sample_texts}), path, row_group_size=20)  # ~16 kB a row group
    chunks = list(open_source(path).chunks(100_000))
    assert len(chunks) > 10 and sum(c.size for c in chunks) == 2450
    assert all(isinstance(c.payload, tuple) for c in chunks)  # row groups to read, nothing decoded yet
    assert [s for c in chunks for s in c.stories()] == [t.strip() for t in sample_texts if t.strip()]
    path.write_bytes(path.read_bytes()[:1000] + b"\0" * 5000 + path.read_bytes()[6000:])  # damaged data
    with pytest.raises(DataError, match=r"^cannot read parquet file .*: .*is it a parquet file\?$"):
        chunks[0].stories()


def test_a_folder_of_shards_is_read_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "part-2.txt").write_text("third<|endoftext|>fourth", "utf-8")
    (tmp_path / "a-part-1.txt").write_text("first\n\nsecond\n", "utf-8")
    assert load_texts(tmp_path).texts == ["first", "second", "third", "fourth"]
    (tmp_path / "c.jsonl").write_text('{"text": "x"}\n', "utf-8")
    with pytest.raises(DataError, match="mixes jsonl and text files"):
        open_source(tmp_path)


def test_open_files_takes_a_list_of_local_files(tmp_path: Path, stories: list[str]) -> None:
    shards = []
    for k in range(3):
        shards.append(tmp_path / f"shard-{k}.parquet")
        pq.write_table(pa.table({"text": stories[k * 100 : (k + 1) * 100]}), shards[-1])
    source = open_files(shards, "hf:someone/stories")
    assert source.name == "hf:someone/stories" and source.total == 300
    assert source.read_all().texts == stories[:300]


# -- the tokenizer: counts from many batches, arrays out -----------------------------------------------


def test_counts_from_separate_batches_train_the_same_tokenizer(stories: list[str]) -> None:
    counts = WordCounts()
    for first in range(0, len(stories), 37):  # as worker processes would count them
        part = WordCounts()
        part.add(stories[first : first + 37])
        counts.update(part)
    counts.add(stories[:5])
    counts.add(stories[:5], times=-1)  # taking a story away again (the split's fix-up does)
    assert Tokenizer.from_word_counts(counts, 600).merges == Tokenizer.train(stories, 600).merges


def test_encode_stories_is_encode_batch_with_separators(stories: list[str]) -> None:
    tokenizer = Tokenizer.train(stories[:100], 400)
    texts = stories[100:200] + ["an \u00e9 unknown char", ""]
    tokens, ends = tokenizer.encode_stories(texts, "uint16")
    encoded = tokenizer.encode_batch(texts, on_unknown="ignore")
    expected = [i for ids in encoded for i in [*ids, tokenizer.eot_id]]
    assert tokens.dtype == np.uint16 and tokens.tolist() == expected
    assert ends[-1] == len(expected) and tokens[ends - 1].tolist() == [tokenizer.eot_id] * len(texts)


# Odd batches: runs of spaces, leading and trailing spaces, empty stories, quotes and newlines (do-not-merge
# characters), a character the tokenizer never saw, and a lone surrogate (no UTF-8, so the Python path).
ODD_TEXTS = st.lists(st.text(alphabet=' ab"\nc\u00e9', max_size=30) | st.just("a \ud800 b"), max_size=8)
ODD_TOKENIZER = Tokenizer.train(['a ab "abc"\n cab ba', "bb a  c\n\nab"], 16)


@settings(max_examples=300, deadline=None)
@given(ODD_TEXTS)
def test_encode_stories_agrees_with_encode_on_odd_batches(texts: list[str]) -> None:
    tokens, ends = ODD_TOKENIZER.encode_stories(texts, "uint32")
    expected = [[*ODD_TOKENIZER.encode(text, on_unknown="ignore"), ODD_TOKENIZER.eot_id] for text in texts]
    assert tokens.tolist() == [i for ids in expected for i in ids]
    assert ends.tolist() == np.cumsum([len(ids) for ids in expected], dtype=np.int64).tolist()


@settings(max_examples=300, deadline=None)
@given(ODD_TEXTS)
def test_word_counts_are_the_chunks_of_each_story(texts: list[str]) -> None:
    counts = WordCounts()
    counts.add(texts)
    assert +counts.heads == Counter(text.split(" ")[0] for text in texts)
    assert +counts.spaced == Counter(chunk for text in texts for chunk in text.split(" "))


def test_big_batches_are_taken_in_halves_with_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = ['a ab "abc"', " cab  ba ", "", "a \ud800 b", "bb a\n\nab"] * 7
    whole, counts = ODD_TOKENIZER.encode_stories(texts, "uint32"), WordCounts()
    counts.add(texts)
    monkeypatch.setattr(tokenizer_module, "_BATCH_CHARS", 12)  # a few stories a batch
    halves, counted = ODD_TOKENIZER.encode_stories(texts, "uint32"), WordCounts()
    counted.add(texts)
    assert [a.tolist() for a in halves] == [a.tolist() for a in whole]
    assert (counted.heads, counted.spaced) == (counts.heads, counts.spaced)


# -- building a store: workers, split, sample ---------------------------------------------------------


def store_files(path: Path) -> dict[str, bytes]:
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["created"]
    files = {name: (path / name).read_bytes() for name in ("tokens.bin", "stories.npy", "tokenizer.ron")}
    return {**files, "manifest": json.dumps(manifest).encode()}


def test_one_or_two_workers_write_the_same_store(tmp_path: Path, stories: list[str]) -> None:
    path = tmp_path / "stories.txt"
    path.write_text("".join(f"{s}<|endoftext|>" for s in stories * 3), "utf-8")
    source = replace(open_source(path), chunk_bytes=20_000)  # many chunks in flight, done in any order
    one = build_token_store(tmp_path / "one", source, 500, workers=1)
    two = build_token_store(tmp_path / "two", source, 500, workers=2)
    assert store_files(one.path) == store_files(two.path)
    assert one.manifest["total"]["stories"] == 1200


def test_streamed_store_has_the_merges_and_ids_of_the_in_memory_path(tmp_path: Path,
                                                                     stories: list[str]) -> None:
    path = tmp_path / "stories.jsonl"
    path.write_text("".join(json.dumps({"text": s}) + "\n" for s in stories), "utf-8")
    store = build_token_store(tmp_path / "store", open_source(path), 700, seed=3)
    train_idx, val_idx = split_indices(stories, 0.1, seed=3)
    reference = Tokenizer.train([stories[i] for i in train_idx], 700)
    assert store.tokenizer.merges == reference.merges and store.tokenizer.alphabet == reference.alphabet
    eot = reference.eot_id
    expected = [t for i in [*train_idx, *val_idx] for t in [*reference.encode(stories[i]), eot]]
    assert np.fromfile(store.path / "tokens.bin", dtype=np.uint16).tolist() == expected
    assert TokenStore.open(store.path).stories_in_source_order()[7] == reference.encode(stories[7])


def test_manifest_records_the_split_method(tmp_path: Path, stories: list[str]) -> None:
    store = build_token_store(tmp_path / "s", SourceTexts(stories, "sample", "sample"), 400, seed=9)
    split = store.manifest["split"]
    assert store.manifest["format_version"] == 2 and split["seed"] == 9 and "blake2b" in split["method"]
    # The recorded rule alone re-derives every story's split.
    key = b"9"
    is_val = [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=16, key=key).digest()[:8], "little")
              < split["val_below"] for s in stories]
    assert store.split_story_count("val") == sum(is_val)


def test_tokenizer_sample_is_deterministic_and_about_the_size_asked(tmp_path: Path,
                                                                      sample_texts: list[str]) -> None:
    texts = [t.strip() for t in sample_texts]
    source = SourceTexts(texts, "sample", "sample")
    a = build_token_store(tmp_path / "a", source, 500, tokenizer_sample=400_000)
    b = build_token_store(tmp_path / "b", source, 500, tokenizer_sample=400_000)
    full = build_token_store(tmp_path / "full", source, 500)
    assert a.tokenizer.merges == b.tokenizer.merges != full.tokenizer.merges
    drawn = a.manifest["tokenizer_sample"]
    assert 300_000 < drawn["bytes"] < 500_000 and 0 < drawn["stories"] < a.split_story_count("train")
    for split in ("train", "val"):  # the same split: the sample only changes what the tokenizer learns from
        assert a.split_story_count(split) == full.split_story_count(split)
        assert a.split_bytes(split) == full.split_bytes(split)
    assert "tokenizer_sample" not in full.manifest


def test_a_store_of_format_version_1_still_opens(tmp_path: Path, stories: list[str]) -> None:
    """Written as mlxstory wrote stores before the hashed split: a seeded permutation, format 1."""
    out = tmp_path / "v1"
    out.mkdir()
    tokenizer = Tokenizer.train(stories, 400)
    order = np.random.default_rng(1337).permutation(len(stories))
    val, train = np.sort(order[:40]), np.sort(order[40:])
    rows, tokens = [], []
    for index in [*train, *val]:
        ids = [*tokenizer.encode(stories[index], on_unknown="ignore"), tokenizer.eot_id]
        rows.append((index, len(tokens), len(tokens) + len(ids)))
        tokens += ids
    np.array(tokens, dtype=np.uint16).tofile(out / "tokens.bin")
    np.save(out / "stories.npy", np.array(rows, dtype=np.int64))
    tokenizer.save(out / "tokenizer.ron")
    n_train_tokens = rows[len(train)][1]

    def digest(name: str) -> str:
        return hashlib.sha256((out / name).read_bytes()).hexdigest()

    def split(ids: np.ndarray, start: int, count: int) -> dict:
        return {"stories": len(ids), "tokens": count, "bytes": sum(len(stories[i].encode()) for i in ids),
                "token_start": start, "unknown_chars": 0}

    manifest = {
        "format": "mlxstory-token-store", "format_version": 1, "created": "2025-01-01T00:00:00+00:00",
        "source": "old", "source_description": "old", "tokenizer_file": "tokenizer.ron",
        "tokens_file": "tokens.bin", "stories_file": "stories.npy", "vocab_size": 400,
        "eot_id": tokenizer.eot_id, "dtype": "uint16", "tokens_file_bytes": 2 * len(tokens),
        "tokens_sha256": digest("tokens.bin"), "stories_sha256": digest("stories.npy"),
        "split": {"seed": 1337, "val_fraction": 0.1, "method": "numpy default_rng(seed).permutation of story "
                  "indices; the first round(n * val_fraction) go to val; each split keeps source order"},
        "splits": {"train": split(train, 0, n_train_tokens),
                   "val": split(val, n_train_tokens, len(tokens) - n_train_tokens)},
        "total": {"stories": 400, "tokens": len(tokens), "bytes": sum(len(s.encode()) for s in stories)},
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    store = TokenStore.open(out)
    assert store.split_story_count("val") == 40
    first, end = store.story_spans("val")[0]
    assert store.tokenizer.decode(store.split_tokens("val")[first : end - 1]) == stories[val[0]]


# -- the CLI ------------------------------------------------------------------------------------------


def test_tokenize_cli_workers_and_sample(tmp_path: Path, stories: list[str]) -> None:
    data = tmp_path / "stories.txt"
    data.write_text("\n\n".join(re.sub(r"\n\s*\n", "\n", s) for s in stories), "utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["tokenize", "--data", str(data), "--out", str(tmp_path / "s"),
                                 "--vocab-size", "400", "--workers", "1", "--tokenizer-sample", "200K"])
    assert result.exit_code == 0, result.output
    assert TokenStore.open(tmp_path / "s").manifest["tokenizer_sample"]["bytes"] > 100_000
    for option, value, expected in [("--workers", "0", "--workers must be at least 1"),
                                    ("--tokenizer-sample", "lots", "--tokenizer-sample must be a size")]:
        args = ["tokenize", "--data", str(data), "--out", str(tmp_path / "x"), option, value]
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and result.stderr.startswith("error: ") and expected in result.stderr
        assert result.stderr.count("\n") == 1 and not (tmp_path / "x").exists()
