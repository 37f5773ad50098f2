"""The token store on real stories: exact round trips, a deterministic split, and damage detected on open."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlxstory.data.sources import SourceTexts
from mlxstory.data.token_store import TokenStore, build_token_store, split_indices
from mlxstory.data.tokenizer import Tokenizer
from mlxstory.errors import DataError


@pytest.fixture(scope="module")
def stories(sample_texts: list[str]) -> list[str]:
    return [text.strip() for text in sample_texts[:300]]


@pytest.fixture(scope="module")
def tokenizer(stories: list[str]) -> Tokenizer:
    return Tokenizer.train(stories, vocab_size=400)


@pytest.fixture()
def store(tmp_path: Path, stories: list[str], tokenizer: Tokenizer) -> TokenStore:
    return TokenStore.create(tmp_path / "store", stories, tokenizer, source="sample-300")


def decoded_stories(store: TokenStore, split: str) -> list[str]:
    tokens = store.split_tokens(split)
    spans = store.story_spans(split)
    assert all(tokens[end - 1] == store.tokenizer.eot_id for _, end in spans)
    return [store.tokenizer.decode(tokens[start : end - 1].tolist()) for start, end in spans]


def test_every_story_round_trips_in_its_split(store: TokenStore, stories: list[str]) -> None:
    train, val = decoded_stories(store, "train"), decoded_stories(store, "val")
    train_idx, val_idx = split_indices(stories)
    assert train == [stories[i] for i in train_idx] and val == [stories[i] for i in val_idx]  # source order
    assert len(train) + len(val) == 300 and 15 <= len(val) <= 45
    assert not set(train) & set(val)
    # Each split is the stories joined by eot: nothing but stories and separators in the stream.
    eot = store.tokenizer.eot_id
    assert int(np.count_nonzero(store.split_tokens("val") == eot)) == len(val)
    assert store.split_story_count("train") == len(train) and store.split_story_count("val") == len(val)


def test_split_bytes_count_the_utf8_text_of_the_split(store: TokenStore) -> None:
    for split in ("train", "val"):
        text_bytes = sum(len(story.encode("utf-8")) for story in decoded_stories(store, split))
        assert store.split_bytes(split) == text_bytes


def test_manifest_records_source_split_and_counts(store: TokenStore, tokenizer: Tokenizer) -> None:
    manifest = json.loads((store.path / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["source"] == "sample-300"
    assert manifest["dtype"] == "uint16" and manifest["vocab_size"] == tokenizer.vocab_size == 400
    assert manifest["split"]["seed"] == 1337 and manifest["split"]["val_fraction"] == 0.1
    assert manifest["splits"]["val"]["token_start"] == manifest["splits"]["train"]["tokens"]
    assert manifest["total"]["tokens"] * 2 == (store.path / "tokens.bin").stat().st_size
    assert sorted(p.name for p in store.path.iterdir()) == [
        "manifest.json", "stories.npy", "tokenizer.ron", "tokens.bin"]  # no temp files left behind
    assert TokenStore.open(store.path).tokenizer.merges == tokenizer.merges


def test_split_tokens_are_a_read_only_memory_map(store: TokenStore) -> None:
    tokens = TokenStore.open(store.path).split_tokens("train")
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
    with pytest.raises(ValueError):
        tokens[0] = 1


def test_split_is_deterministic_per_seed() -> None:
    texts = [f"story {i}" for i in range(1000)]
    first, second = split_indices(texts, 0.1, seed=1337), split_indices(texts, 0.1, seed=1337)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    train, val = first
    assert 70 <= len(val) <= 130 and sorted(np.concatenate([train, val]).tolist()) == list(range(1000))
    assert not np.array_equal(val, split_indices(texts, 0.1, seed=7)[1])
    # By content: a story's split does not depend on where it stands or what else is in the source.
    shuffled = texts[500:] + texts[:500] + ["a story added later"]
    moved = {shuffled[i] for i in split_indices(shuffled, 0.1, seed=1337)[1]} - {"a story added later"}
    assert moved == {texts[i] for i in val}


def test_equal_stories_share_a_split() -> None:
    texts = [f"story {i % 50}" for i in range(500)]  # every story ten times
    _, val = split_indices(texts, 0.3)
    val_texts = {texts[i] for i in val}
    assert len(val) == 10 * len(val_texts) and 0 < len(val_texts) < 50


@pytest.mark.parametrize("fraction", [0.01, 0.99])
def test_tiny_sources_still_get_both_splits(fraction: float) -> None:
    train, val = split_indices(["one", "two", "three"], fraction)
    assert len(train) >= 1 and len(val) >= 1 and len(train) + len(val) == 3


def test_same_inputs_give_identical_files(tmp_path: Path, stories: list[str], tokenizer: Tokenizer) -> None:
    a = TokenStore.create(tmp_path / "a", stories, tokenizer, source="s")
    b = TokenStore.create(tmp_path / "b", stories, tokenizer, source="s")
    c = TokenStore.create(tmp_path / "c", stories, tokenizer, source="s", seed=1)
    assert a.manifest["tokens_sha256"] == b.manifest["tokens_sha256"] != c.manifest["tokens_sha256"]


def test_large_vocab_uses_uint32(tmp_path: Path) -> None:
    # 300 characters and 65,600 two-character merges: ids above 65,535 must survive the store.
    alphabet = [chr(0x100 + i) for i in range(300)]
    pairs = [(a, b) for a in range(300) for b in range(300)][:65_600]
    big = Tokenizer(alphabet, [(pair, 300 + k) for k, pair in enumerate(pairs)])
    texts = ["".join(alphabet[i] + alphabet[j] for i, j in pairs[k::997]) for k in range(20)]
    store = TokenStore.create(tmp_path / "big", texts, big, source="synthetic")
    assert store.manifest["dtype"] == "uint32" and int(store.split_tokens("train").max()) > 65_535
    assert sorted(decoded_stories(store, "train") + decoded_stories(store, "val")) == sorted(texts)


def test_val_characters_unknown_to_the_tokenizer_are_counted(tmp_path: Path) -> None:
    texts = [f"the cat sat {i}" for i in range(9)] + ["a \u00e9 story"]
    tokenizer = Tokenizer.train(texts[:9], vocab_size=30)
    store = TokenStore.create(tmp_path / "s", texts, tokenizer, source="x", val_fraction=0.5)
    total = sum(store.manifest["splits"][s]["unknown_chars"] for s in ("train", "val"))
    assert total == 4  # "é", "o", "r" and "y" never occur in the training text
    assert "unknown chars" in store.summary()


def test_fallback_source_is_recorded(tmp_path: Path, stories: list[str], tokenizer: Tokenizer) -> None:
    source = SourceTexts(stories, "demo", "demo: generated", fallback_reason="hub unreachable")
    store = TokenStore.create(tmp_path / "s", stories, tokenizer, source=source)
    assert store.source == "demo" and store.manifest["source_fallback_reason"] == "hub unreachable"


def test_build_trains_the_tokenizer_on_train_stories_only(tmp_path: Path) -> None:
    # Only the last story holds a "z": the alphabet has it exactly when that story is in train.
    texts = [f"story number {i} is here" for i in range(20)] + ["zzz"]
    seed_for = {20 in split_indices(texts, 0.2, seed)[1]: seed for seed in range(20)}
    for z_in_val, seed in seed_for.items():
        store = build_token_store(tmp_path / str(seed), SourceTexts(texts, "t", "t"), 40, val_fraction=0.2,
                                  seed=seed)
        assert ("z" in store.tokenizer.alphabet) == (not z_in_val)
        assert ("<|unk|>" * 3 in decoded_stories(store, "val")) == z_in_val  # "zzz", never trained on
    assert set(seed_for) == {True, False}


def damage_message(store: TokenStore, damage) -> str:
    damage(store.path)
    with pytest.raises(DataError) as error:
        TokenStore.open(store.path)
    message = str(error.value)
    assert "\n" not in message and "mlxstory tokenize" in message
    return message


def test_truncated_tokens_file_is_detected(store: TokenStore) -> None:
    def truncate(root: Path) -> None:
        data = (root / "tokens.bin").read_bytes()
        (root / "tokens.bin").write_bytes(data[:-2])

    message = damage_message(store, truncate)
    assert "tokens.bin" in message and "truncated" in message


def test_changed_token_is_detected_by_checksum(store: TokenStore) -> None:
    def flip(root: Path) -> None:
        data = bytearray((root / "tokens.bin").read_bytes())
        data[100] ^= 1
        (root / "tokens.bin").write_bytes(bytes(data))

    message = damage_message(store, flip)
    assert "tokens.bin" in message and "sha256" in message


@pytest.mark.parametrize("file", ["tokens.bin", "stories.npy", "tokenizer.ron"])
def test_missing_file_is_detected(store: TokenStore, file: str) -> None:
    assert file in damage_message(store, lambda root: (root / file).unlink())


def test_missing_or_broken_manifest(store: TokenStore, tmp_path: Path) -> None:
    assert "manifest.json" in damage_message(store, lambda root: (root / "manifest.json").write_text("{"))
    with pytest.raises(DataError, match="no token store at .*nowhere"):
        TokenStore.open(tmp_path / "nowhere")


@pytest.mark.parametrize(("texts", "fraction", "expected"), [(["one"], 0.1, "at least 2 stories"),
                                                              (["a", "a", "a"], 0.1, "the same text"),
                                                              (["a", "b"], 0.0, "between 0 and 1"),
                                                              (["a", "b"], 1.0, "between 0 and 1")])
def test_impossible_split_is_an_error(texts: list[str], fraction: float, expected: str) -> None:
    with pytest.raises(DataError, match=expected):
        split_indices(texts, fraction)
