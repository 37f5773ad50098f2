from __future__ import annotations

from pathlib import Path

import pytest

from mlxstory.data.gptrs_dataset import read_gptrs_dataset, write_gptrs_dataset
from mlxstory.data.tokenizer import Tokenizer
from mlxstory.errors import TokenizerError

# As gpt-rs writes it (ron::to_string): compact, HashSet-ordered alphabet ids, `from` as a tuple.
ORIGINAL = ("(char_to_id:{'u':0,'h':1,' ':2,'g':3,'p':4},id_to_char:{0:'u',1:'h',2:' ',3:'g',4:'p'},"
            "mergings:[(from:(0,3),to:5),(from:(1,5),to:6)],encoded_data:[[6,2,6,2,4,5],[6]])")


def test_reads_a_file_as_gpt_rs_writes_it(tmp_path: Path) -> None:
    path = tmp_path / "dataset.ron"
    path.write_text(ORIGINAL, encoding="utf-8")
    data = read_gptrs_dataset(path)
    tok = data.tokenizer
    assert tok.alphabet == ["u", "h", " ", "g", "p"]  # the file's id order, not code-point order
    assert tok.merges == [((0, 3), 5), ((1, 5), 6)]
    assert (tok.eot_id, tok.unk_id, tok.vocab_size) == (7, 8, 9)  # specials after gpt-rs's 7 tokens
    assert data.stories == [[6, 2, 6, 2, 4, 5], [6]]
    assert [tok.decode(s) for s in data.stories] == ["hug hug pug", "hug"]
    assert tok.encode("hug hug pug") == data.stories[0]  # same ids as gpt-rs's own encoder


def test_reads_merges_written_as_lists(tmp_path: Path) -> None:
    path = tmp_path / "dataset.ron"
    path.write_text(ORIGINAL.replace("from:(0,3)", "from: [0, 3]").replace("from:(1,5)", "from:[1,5]"))
    assert read_gptrs_dataset(path).tokenizer.merges == [((0, 3), 5), ((1, 5), 6)]


def test_write_then_read_round_trip(tmp_path: Path, sample_texts: list[str]) -> None:
    tok = Tokenizer.train(sample_texts[:100], vocab_size=300)
    stories = tok.encode_batch(sample_texts[:100])
    path = tmp_path / "dataset.ron"
    write_gptrs_dataset(path, tok, stories)
    assert path.read_text(encoding="utf-8").startswith("(char_to_id: {'\\n': 0,")
    data = read_gptrs_dataset(path)
    assert data.tokenizer.alphabet == tok.alphabet and data.tokenizer.merges == tok.merges
    assert data.stories == stories
    assert data.tokenizer.decode(data.stories[3]) == sample_texts[3]


def test_write_refuses_special_tokens(tmp_path: Path) -> None:
    tok = Tokenizer.train(["hug hug pug"], vocab_size=12)
    with pytest.raises(TokenizerError, match="story 1 holds token id 10"):
        write_gptrs_dataset(tmp_path / "d.ron", tok, [tok.encode("hug"), tok.encode("pug") + [tok.eot_id]])
    assert not (tmp_path / "d.ron").exists()


def test_write_refuses_a_do_not_merge_set_gpt_rs_lacks(tmp_path: Path) -> None:
    tok = Tokenizer.train(["a.b a.b"], vocab_size=7, do_not_merge='\n".')
    with pytest.raises(TokenizerError, match="do-not-merge set"):
        write_gptrs_dataset(tmp_path / "d.ron", tok, [])


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda s: s.replace("'p':4}", "'p':3}"), "char_to_id is not the inverse"),
    (lambda s: s.replace("4:'p'", "5:'p'"), "ids are not 0..4"),
    (lambda s: s.replace("[6]", "[7]"), "entry 1 holds ids outside 0..6"),
    (lambda s: s.replace("to:6", "to:9"), "merge #1"),
    (lambda s: s.replace("encoded_data", "data"), "encoded_data"),
    (lambda s: s.replace("to:6)", "to:6"), r"dataset\.ron:1:\d+: "),
])
def test_bad_files_raise_naming_the_file(tmp_path: Path, edit, expected: str) -> None:
    path = tmp_path / "dataset.ron"
    path.write_text(edit(ORIGINAL), encoding="utf-8")
    with pytest.raises(TokenizerError, match=expected) as error:
        read_gptrs_dataset(path)
    assert str(path) in str(error.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="missing.ron"):
        read_gptrs_dataset(tmp_path / "missing.ron")
