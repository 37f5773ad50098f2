from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlxstory.data.tokenizer import EOT, UNK, Tokenizer, UnknownCharWarning, split_pattern
from mlxstory.errors import TokenizerError


def naive_train(texts: list[str], vocab_size: int, do_not_merge: str = '\n"', n_special: int = 2):
    """The original gpt-rs trainer, transcribed: every merge recounts all pairs of every story (overlapping
    windows), skipping pairs with a do-not-merge char and pairs whose right token starts with a space;
    ties go to the largest (left, right). Stories are strings of chr(id); str.replace merges left to right,
    non-overlapping, exactly like the original's splice loop."""
    alphabet = sorted(set("".join(texts)))
    sep = vocab_size  # joins the stories and never pairs, so nothing merges across them
    seq = chr(sep).join("".join(chr(alphabet.index(c)) for c in t) for t in texts)
    never = [alphabet.index(c) for c in do_not_merge if c in alphabet] + [sep]
    space_starting = [alphabet.index(" ")] if " " in alphabet else []
    merges = []
    for z in range(len(alphabet), vocab_size - n_special):
        ids = np.frombuffer(seq.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        left, right = ids[:-1], ids[1:]
        allowed = ~np.isin(left, never) & ~np.isin(right, never + space_starting)
        counts = np.bincount(left[allowed] * (sep + 1) + right[allowed], minlength=(sep + 1) ** 2)
        if counts.max() == 0:
            break
        best = np.flatnonzero(counts == counts.max())[-1]  # ties: the largest (left, right)
        a, b = divmod(int(best), sep + 1)
        merges.append(((a, b), z))
        seq = seq.replace(chr(a) + chr(b), chr(z))
        if a in space_starting:
            space_starting.append(z)
    return alphabet, merges


def test_hand_worked_example_exact_ids() -> None:
    # alphabet: ' '=0 g=1 h=2 p=3 u=4. Words "hug", " hug", " pug": (u,g) x3 -> 5 "ug"; (h,ug) x2 -> 6 "hug";
    # then (p,ug), (' ',hug), (' ',p) all once: the largest pair wins, (3,5) -> 7 "pug"; then (0,7) beats
    # (0,6): 8 " pug"; last 9 " hug". Specials follow: eot 10, unk 11.
    tok = Tokenizer.train(["hug hug pug"], vocab_size=12)
    assert Tokenizer.train("hug hug pug", vocab_size=12).merges == tok.merges  # one str is one story
    assert tok.alphabet == [" ", "g", "h", "p", "u"]
    assert tok.merges == [((4, 1), 5), ((2, 5), 6), ((3, 5), 7), ((0, 7), 8), ((0, 6), 9)]
    assert (tok.eot_id, tok.unk_id, tok.vocab_size) == (10, 11, 12)
    assert tok.special_tokens == {EOT: 10, UNK: 11}
    assert tok.encode("hug pug hug") == [6, 8, 9]
    assert tok.encode("pug hug") == [7, 9]
    assert tok.encode("gh  ug") == [1, 2, 0, 0, 5]
    assert tok.decode([6, 8, 10]) == "hug pug" + EOT


def test_matches_the_original_algorithm_on_real_stories(sample_texts: list[str]) -> None:
    texts = sample_texts[:200]
    alphabet, merges = naive_train(texts, 400)
    tok = Tokenizer.train(texts, vocab_size=400)
    assert tok.alphabet == alphabet
    assert len(tok.merges) == 400 - len(alphabet) - 2
    assert tok.merges == merges


@pytest.mark.parametrize("texts", [
    ["abab cdcd", "cdcd abab"],  # equal counts everywhere: the tie rule decides every merge
    ["aaaaa aaa a aa aaaa", "aaaaaaa"],  # overlapping runs: counted as windows, merged left to right
    ['"hi" he said\n\n"ho" "hum"', 'he\n"hi"'],  # quotes and newlines never merge
    ["  x  y \n z   ", " ", "x\n\ny"],  # runs of spaces, leading and trailing spaces
    ["ba ab ba ab", "ab ba"],
])
def test_matches_the_original_algorithm_on_edge_cases(texts: list[str]) -> None:
    alphabet, merges = naive_train(texts, 64)
    n_possible = len(merges)
    tok = Tokenizer.train(texts, vocab_size=len(alphabet) + 2 + n_possible)
    assert tok.merges == merges
    with pytest.raises(TokenizerError, match="Not enough data supplied to find a most common pair"):
        Tokenizer.train(texts, vocab_size=len(alphabet) + 3 + n_possible)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=' ab"\nc', max_size=40), min_size=1, max_size=5), st.integers(1, 12))
def test_matches_the_original_algorithm_on_random_text(texts: list[str], n_merges: int) -> None:
    if not "".join(texts):
        return
    alphabet, merges = naive_train(texts, 1000)
    n = min(n_merges, len(merges))
    tok = Tokenizer.train(texts, vocab_size=len(alphabet) + n + 2)
    assert tok.merges == merges[:n]
    for text in texts:
        assert tok.decode(tok.encode(text)) == text


def naive_encode(word: str, tok: Tokenizer) -> list[int]:
    """The original's encoding of one word: every merge in rank order, each pair replaced left to right."""
    ids = [tok.alphabet.index(c) for c in word]
    for (a, b), z in tok.merges:
        out, i = [], 0
        while i < len(ids):
            if i + 1 < len(ids) and ids[i] == a and ids[i + 1] == b:
                out.append(z)
                i += 2
            else:
                out.append(ids[i])
                i += 1
        ids = out
    return ids


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="aab", min_size=1, max_size=30), min_size=1, max_size=6),
       st.lists(st.text(alphabet="ab", min_size=1, max_size=24), min_size=1, max_size=8))
def test_encoding_a_word_matches_applying_every_merge_in_order(corpus: list[str], words: list[str]) -> None:
    """Runs of one letter ("aaaa") make overlapping pairs, the hard case for merging lowest rank first."""
    alphabet, merges = naive_train(corpus, 1000)  # as many merges as the corpus allows
    tok = Tokenizer.train(corpus, vocab_size=len(alphabet) + min(len(merges), 30) + 2)
    cold = Tokenizer(tok.alphabet, tok.merges)  # no words cached by training
    for word in words:
        word = "".join(c for c in word if c in tok.alphabet) or tok.alphabet[0]
        assert cold.encode(word) == naive_encode(word, tok)


@pytest.mark.parametrize("do_not_merge", [' \n"', '\n".,', "", "-]^\\"])
def test_matches_the_original_algorithm_with_other_do_not_merge_sets(sample_texts: list[str],
                                                                     do_not_merge: str) -> None:
    texts = sample_texts[:20] + ["a-b]c^d\\e a-b]c^d\\e"]
    _, merges = naive_train(texts, 200, do_not_merge)
    assert Tokenizer.train(texts, vocab_size=200, do_not_merge=do_not_merge).merges == merges


def test_tokens_follow_the_word_rules(sample_texts: list[str]) -> None:
    tok = Tokenizer.train(sample_texts[:300], vocab_size=800)
    merged = [tok.token_text(z) for _, z in tok.merges]
    assert all(" " not in token[1:] for token in merged)  # a space only ever starts a token
    assert all('"' not in token and "\n" not in token for token in merged)
    assert " the" in merged and "Once" in merged


def test_round_trip_and_batch_over_real_stories(sample_texts: list[str]) -> None:
    tok = Tokenizer.train(sample_texts[:500], vocab_size=1000)
    stories = sample_texts[500:700]
    batch = tok.encode_batch(stories, on_unknown="ignore")
    fresh = Tokenizer(tok.alphabet, tok.merges)  # cold caches must give the same ids
    for story, ids in zip(stories, batch, strict=True):
        assert fresh.encode(story, on_unknown="ignore") == ids
        assert tok.decode(ids) == story or tok.unk_id in ids
    assert sum(map(len, batch)) < sum(map(len, stories)) / 2  # merges do compress


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=' abcdefgh"\n.,!'))
def test_decode_inverts_encode_for_any_text_over_the_alphabet(text: str) -> None:
    tok = _small()
    assert tok.decode(tok.encode(text, on_unknown="raise")) == text


def _small() -> Tokenizer:
    return Tokenizer.train(['abc "abc" ab, bc. cab!\n\nhag fed hedge! ebb "gab" chafe'], vocab_size=40)


def test_unknown_characters_become_unk_with_one_warning_per_call() -> None:
    tok = _small()
    with pytest.warns(UnknownCharWarning, match=r"^2 character\(s\) outside .*<\|unk\|>") as record:
        ids = tok.encode("abc éé cab")
    assert len(record) == 1
    assert ids.count(tok.unk_id) == 2
    assert tok.decode(ids) == f"abc {UNK}{UNK} cab"
    with pytest.warns(UnknownCharWarning, match="^1 character"):  # unknown chunks are never cached
        tok.encode("abc éé cab".replace("éé", "é"))
    with pytest.warns(UnknownCharWarning, match="^3 character") as record:
        tok.encode_batch(["xa", "b y", "z"])
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tok.encode("é", on_unknown="ignore") == [tok.unk_id]
        tok.encode("abc cab")  # known text: no warning
    with pytest.raises(TokenizerError, match="1 character"):
        tok.encode("abc?", on_unknown="raise")


def test_vocab_smaller_than_alphabet_gives_the_originals_message() -> None:
    with pytest.raises(TokenizerError) as error:
        Tokenizer.train(["hug hug pug"], vocab_size=6)
    message = str(error.value)
    assert message.startswith("There are 5 unique chars in data, but the requested token count was 6.")
    assert "at least 7" in message and "\n" not in message
    assert Tokenizer.train(["hug hug pug"], vocab_size=7).merges == []


def test_empty_corpus_is_an_error() -> None:
    with pytest.raises(TokenizerError, match="empty text"):
        Tokenizer.train(["", ""], vocab_size=100)


def test_decode_rejects_ids_outside_the_vocabulary() -> None:
    tok = _small()
    assert tok.decode(np.array([0, 1])) == tok.alphabet[0] + tok.alphabet[1]
    for bad in ([tok.vocab_size], [-1]):
        with pytest.raises(TokenizerError, match="outside this tokenizer's vocabulary"):
            tok.decode(bad)


def test_do_not_merge_set_is_configurable() -> None:
    texts = ["a.b a.b a.b. c.d"]
    assert split_pattern() == ' ?[^ \\n"]+|[ \\n"]'
    assert re.findall(split_pattern(), 'say "hi"\n to') == ["say", " ", '"', "hi", '"', "\n", " to"]
    tok = Tokenizer.train(texts, vocab_size=10, do_not_merge='\n".')
    assert all("." not in tok.token_text(z) for _, z in tok.merges)
    default = Tokenizer.train(texts, vocab_size=14)
    assert any("." in default.token_text(z) for _, z in default.merges)


def test_progress_is_reported() -> None:
    calls: list[tuple[int, int]] = []
    Tokenizer.train(["hug hug pug"], vocab_size=12, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (5, 5)


def test_save_load_round_trip(tmp_path: Path, sample_texts: list[str]) -> None:
    tok = Tokenizer.train(sample_texts[:100], vocab_size=300)
    path = tmp_path / "tokenizer.ron"
    tok.save(path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("MlxstoryTokenizer(") and "format_version: 1" in text
    loaded = Tokenizer.load(path)
    assert loaded.alphabet == tok.alphabet and loaded.merges == tok.merges
    assert loaded.special_tokens == tok.special_tokens == {EOT: 298, UNK: 299}
    assert (loaded.vocab_size, loaded.eot_id, loaded.split_pattern) == (300, 298, tok.split_pattern)
    story = sample_texts[100]
    assert loaded.encode(story, on_unknown="ignore") == tok.encode(story, on_unknown="ignore")


def test_save_load_keeps_a_custom_do_not_merge_set(tmp_path: Path) -> None:
    tok = Tokenizer.train(["a.b a.b a.b. c.d"], vocab_size=10, do_not_merge='\n".')
    tok.save(tmp_path / "t.ron")
    loaded = Tokenizer.load(tmp_path / "t.ron")
    assert loaded.do_not_merge == '\n".' and loaded.merges == tok.merges


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda s: s.replace("format_version: 1", "format_version: 7"), "format version 7"),
    (lambda s: s.replace("<|endoftext|>\": 10", "<|endoftext|>\": 3"), "special token ids"),
    (lambda s: s.replace("[4, 1, 5]", "[4, 1, 6]"), "merge #0"),
    (lambda s: s.replace("[4, 1, 5]", "[4, 1]"), "bad or missing field"),
    (lambda s: s.replace("split_pattern", "pattern"), "split_pattern"),
    (lambda s: s[: len(s) // 2], r"t\.ron:\d+:\d+: "),
    (lambda s: "[1, 2]", "format_version"),
])
def test_load_rejects_bad_files_naming_them(tmp_path: Path, edit, expected: str) -> None:
    path = tmp_path / "t.ron"
    Tokenizer.train(["hug hug pug"], vocab_size=12).save(path)
    edited = edit(path.read_text(encoding="utf-8"))
    assert edited != path.read_text(encoding="utf-8")
    path.write_text(edited, encoding="utf-8")
    with pytest.raises(TokenizerError, match=expected) as error:
        Tokenizer.load(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_load_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="nope.ron"):
        Tokenizer.load(tmp_path / "nope.ron")
