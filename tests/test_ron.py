"""RON reader/writer: worked examples with exact values, the original gpt-rs files, errors with line:col."""

from __future__ import annotations

import copy
import math
import os
import pickle
from pathlib import Path

import pytest
from ron_values import same

from mlxstory.errors import MlxstoryError
from mlxstory.formats import ron
from mlxstory.formats.config import ModelConfig, TrainConfig, load_config, preset_path, save_config

# The two files from gpt-rs, verbatim as quoted in the project brief.
ORIGINAL_MODEL = """(
    vocab_size: 2048,
    embedding_size: 128,
    context_length: 64,
    head_count: 4,
    block_count: 8,
    feed_forward_multiplier: 4,
    embedding_dropout: 0.05,
    attention_dropout: 0.05,
    feed_forward_dropout: 0.05,
    residual_dropout: 0.05
)
"""
ORIGINAL_TRAIN = """(
    learning_rate: 2e-4,
    training_iterations: 60000,
    evaluation_interval: 500,
    evaluation_iterations: 5,
    contexts_per_batch: 64
)
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(a: 1, b: 2)", ron.Struct({"a": 1, "b": 2})),
        ("Point(x: 1, y: -2,)", ron.Struct({"x": 1, "y": -2}, name="Point")),
        ("Point(1, 2)", ron.TupleStruct((1, 2), "Point")),
        ("Empty()", ron.TupleStruct((), "Empty")),
        ("Red", ron.Struct(name="Red")),
        ("(true: 1, None: 2)", ron.Struct({"true": 1, "None": 2})),
        ("(1, \"two\", 3.0)", (1, "two", 3.0)),
        ("(1,)", (1,)),
        ("(1)", (1,)),
        ("()", ()),
        ("(Red, Green(1), true)", (ron.Struct(name="Red"), ron.TupleStruct((1,), "Green"), True)),
        ("[1, 2, 3,]", [1, 2, 3]),
        ("[ -1 ,\n 2 ]", [-1, 2]),
        ("[]", []),
        ("[[1, 2], [], [3]]", [[1, 2], [], [3]]),
        ('{"a": 1, 2: [3], (4, 5): \'c\'}', {"a": 1, 2: [3], (4, 5): ron.Char("c")}),
        ("{}", {}),
        (r'"tab\there \"quoted\" back\\slash \'single\' nl\n"',
         "tab\there \"quoted\" back\\slash 'single' nl\n"),
        (r'"\u{1F600} \u{e9} \u00e9 \x41 \0 \/"', "\U0001F600 \u00e9 \u00e9 A \0 /"),
        ('"line one\nline two"', "line one\nline two"),
        (r'r"C:\raw\n"', "C:\\raw\\n"),
        ('r#"say "hi""#', 'say "hi"'),
        ('r##"a "# b"##', 'a "# b'),
        ("'a'", ron.Char("a")),
        (r"'\n'", ron.Char("\n")),
        ("'\"'", ron.Char('"')),
        (r"'\''", ron.Char("'")),
        (r"'\u{1F600}'", ron.Char("\U0001F600")),
        ("'é'", ron.Char("é")),
        ("0", 0),
        ("-42", -42),
        ("+7", 7),
        ("1_000_000", 1_000_000),
        ("0x1F", 31),
        ("-0xff", -255),
        ("0o17", 15),
        ("0b1010", 10),
        ("1.0", 1.0),
        ("-0.5", -0.5),
        ("2e-4", 2e-4),
        ("1E+16", 1e16),
        (".25", 0.25),
        ("1_000.5", 1000.5),
        ("-0.0", -0.0),
        ("inf", math.inf),
        ("-inf", -math.inf),
        ("true", True),
        ("false", False),
        ("Some(3)", 3),
        ("Some(Some(\"x\"),)", "x"),
        ("None", None),
        ("[Some(1), None]", [1, None]),
        ("// leading comment\n(a: 1) // trailing", ron.Struct({"a": 1})),
        ("/* block /* nested */ still comment */ [1, /* inside */ 2]", [1, 2]),
        ("#![enable(implicit_some, unwrap_newtypes)]\n(a: 1)", ron.Struct({"a": 1})),
        ("\ufeff[1]", [1]),
    ],
)
def test_loads_worked_examples(text: str, expected: object) -> None:
    assert same(ron.loads(text), expected)


def test_nan_reads_as_float_nan() -> None:
    value = ron.loads("NaN")
    assert isinstance(value, float) and math.isnan(value)


def test_struct_name_takes_part_in_equality() -> None:
    assert ron.loads("A(x: 1)") != ron.loads("B(x: 1)")
    assert ron.loads("A(1)") != ron.loads("B(1)")
    assert ron.loads("(x: 1)") == {"x": 1}  # a Struct is still a dict to callers


def test_values_survive_copy_and_pickle() -> None:
    value = ron.loads("Doc(pair: P(1, 'c'), unit: U, items: [(a: 1.5)])")
    for copied in (copy.deepcopy(value), pickle.loads(pickle.dumps(value))):
        assert same(copied, value)


def test_original_gpt_rs_files_load_unmodified() -> None:
    model = ron.loads(ORIGINAL_MODEL)
    assert model.name is None
    assert same(model, ron.Struct({
        "vocab_size": 2048, "embedding_size": 128, "context_length": 64, "head_count": 4, "block_count": 8,
        "feed_forward_multiplier": 4, "embedding_dropout": 0.05, "attention_dropout": 0.05,
        "feed_forward_dropout": 0.05, "residual_dropout": 0.05,
    }))
    train = ron.loads(ORIGINAL_TRAIN)
    assert same(train, ron.Struct({
        "learning_rate": 2e-4, "training_iterations": 60000, "evaluation_interval": 500,
        "evaluation_iterations": 5, "contexts_per_batch": 64,
    }))
    # The shipped copies are the same files, and the config loader accepts them.
    assert ron.load(preset_path("seed.model.ron")) == model
    assert ron.load(preset_path("original.train.ron")) == train
    assert load_config(TrainConfig, preset_path("original.train.ron")).learning_rate == 2e-4


def test_pretty_config_looks_like_the_original(tmp_path: Path) -> None:
    assert ron.dumps(ron.loads(ORIGINAL_MODEL), pretty=True) + "\n" == ORIGINAL_MODEL
    path = tmp_path / "model.ron"
    save_config(ModelConfig(), path)
    text = path.read_text()
    assert text.startswith("(\n    vocab_size: 2048,\n    embedding_size: 128,\n")
    assert "    residual_dropout: 0.05,\n" in text and text.endswith('    activation: "relu"\n)\n')
    assert load_config(ModelConfig, path) == ModelConfig()
    train_path = tmp_path / "train.ron"
    save_config(TrainConfig(), train_path)
    assert "    betas: (0.9, 0.95),\n" in train_path.read_text()
    assert load_config(TrainConfig, train_path) == TrainConfig()


def test_pretty_nests_with_four_space_indents() -> None:
    value = ron.Struct({"name": "x", "inner": ron.Struct({"ids": [1, 2]}, name="Inner"),
                        "pairs": [(1, 2), (3, 4)], "map": {"k": 1}, "empty": [], "unit": ()})
    assert ron.dumps(value, pretty=True) == (
        "(\n"
        '    name: "x",\n'
        "    inner: Inner(\n"
        "        ids: [1, 2]\n"
        "    ),\n"
        "    pairs: [\n"
        "        (1, 2),\n"
        "        (3, 4)\n"
        "    ],\n"
        "    map: {\n"
        '        "k": 1\n'
        "    },\n"
        "    empty: [],\n"
        "    unit: ()\n"
        ")"
    )
    assert ron.dumps(value) == (
        '(name: "x", inner: Inner(ids: [1, 2]), pairs: [(1, 2), (3, 4)], map: {"k": 1}, empty: [], unit: ())'
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1.0"),
        (1e16, "1e+16"),
        (2e-4, "0.0002"),
        (-0.0, "-0.0"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        (math.nan, "NaN"),
        (True, "true"),
        (None, "None"),
        (ron.Char("'"), r"'\''"),
        (ron.Char('"'), "'\"'"),
        ("it's \"q\"\n\x1b", r'"it' + "'" + r's \"q\"\n\u{1b}"'),
        ((1,), "(1,)"),
        ((), "()"),
        (ron.Struct(name="Unit"), "Unit"),
        (ron.Struct(), "()"),
        (ron.TupleStruct((), "Empty"), "Empty()"),
        ({(1, 2): [ron.Char("a")]}, "{(1, 2): ['a']}"),
    ],
)
def test_dumps_exact_text(value: object, text: str) -> None:
    assert ron.dumps(value) == text


@pytest.mark.parametrize(
    "value",
    [
        ron.Struct({"f": 0.1, "i": 10**30, "neg": -5, "s": "😀 \\ \" ' \t", "c": ron.Char("\\"), "b": False,
                    "o": None, "l": [1.5, [2], ()], "t": (1, "x"), "m": {1: "a", "k": (2,), None: 3}}),
        ron.TupleStruct((ron.Struct(name="V"), ron.Struct({"x": 1.0}, name="P")), "Wrap"),
        [[1, 2, 3] * 100, [], [-7]],
    ],
)
def test_dumps_then_loads_round_trips(value: object) -> None:
    for pretty in (False, True):
        assert same(ron.loads(ron.dumps(value, pretty=pretty)), value)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({1, 2}, TypeError),
        (b"bytes", TypeError),
        (object(), TypeError),
        ([1, 2, {3}], TypeError),
        (ron.Struct({"not an identifier": 1}), ValueError),
        (ron.Struct({"a": 1}, name="Some"), ValueError),
        (ron.Char("ab"), ValueError),
        ("\ud800", ValueError),
    ],
)
def test_dumps_rejects_what_ron_cannot_express(value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        ron.dumps(value)


def test_dumps_rejects_a_list_that_contains_itself() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="nested deeper"):
        ron.dumps(loop)


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        ("(\n    vocab_size 2048,\n)", 2, 16, "expected ':' after field name 'vocab_size', found '2'"),
        ("(\n    a: 1\n    b: 2\n)", 3, 5, "expected ',' or ')', found 'b'"),
        ("[1, 2", 1, 6, "expected ',' or ']', found end of input"),
        ('(name: "open\n)', 1, 8, "unterminated string"),
        ("(a: 1, a: 2)", 1, 8, "duplicate field 'a'"),
        ("{[1]: 2}", 1, 2, "a map key cannot be a list, map or struct"),
        ("(a: 12abc)", 1, 5, "invalid number '12abc'"),
        ("'ab'", 1, 1, "a char literal holds one character"),
        ('"\\q"', 1, 2, "unknown escape \\q"),
        ('"\\\n"', 1, 2, "unknown escape \\\\n"),  # a backslash before a line break: still one line
        ('"\\u{D800}"', 1, 2, "is not a Unicode scalar value"),
        ("// only a comment\n", 2, 1, "expected a value, found end of input"),
        ("(a: 1) (b: 2)", 1, 8, "unexpected '(' after the value"),
        ("1 /* open", 1, 3, "unterminated /* block comment"),
        ("(x: Some 1)", 1, 10, "expected '(' after Some, found '1'"),
        ("#![feature(x)]\n1", 1, 1, "malformed extension attribute"),
        ("(a: 1e)", 1, 5, "invalid number '1e'"),
        ("[" + "1" * 5000 + "]", 1, 2, "invalid number"),
    ],
)
def test_errors_say_line_and_column(text: str, line: int, column: int, message: str) -> None:
    with pytest.raises(ron.RonError) as caught:
        ron.loads(text)
    error = caught.value
    assert (error.line, error.column) == (line, column)
    assert str(error).startswith(f"{line}:{column}: ")
    assert message in str(error)
    assert isinstance(error, MlxstoryError) and "\n" not in str(error)


def test_deep_nesting_is_a_ron_error_not_recursion_error() -> None:
    for opener in ("[", "(", "{1: ", "Some(", "A("):
        with pytest.raises(ron.RonError, match="nested deeper than 100"):
            ron.loads(opener * 200)
    deepest: list[object] = []
    for _ in range(99):
        deepest = [deepest]
    assert ron.loads("[" * 100 + "]" * 100) == deepest  # 100 levels is fine


def test_load_and_dump_files(tmp_path: Path) -> None:
    path = tmp_path / "value.ron"
    value = ron.Struct({"ids": [1, 2], "name": "x"}, name="Doc")
    ron.dump(value, path)
    assert path.read_text() == 'Doc(\n    ids: [1, 2],\n    name: "x"\n)\n'
    assert same(ron.load(path), value)
    assert os.listdir(tmp_path) == ["value.ron"]  # no temp file left behind
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    with pytest.raises(FileNotFoundError):
        ron.load(tmp_path / "missing.ron")
    (tmp_path / "latin1.ron").write_bytes(b'(\n  a: "caf\xe9")')
    with pytest.raises(ron.RonError, match=r"^2:10: not UTF-8"):
        ron.load(tmp_path / "latin1.ron")


def test_failed_dump_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "keep.ron"
    ron.dump([1], path)
    with pytest.raises(TypeError):
        ron.dump([object()], path)
    assert ron.load(path) == [1]
    assert os.listdir(tmp_path) == ["keep.ron"]


def test_large_int_lists_parse_fast_and_exactly() -> None:
    # gpt-rs dataset files hold millions of token ids in `encoded_data: [[...]]`.
    ids = [(i * 7919) % 4096 for i in range(300_000)]
    text = ron.dumps(ron.Struct({"encoded_data": [ids, ids[:10]]}), pretty=True)
    assert ron.loads(text)["encoded_data"] == [ids, ids[:10]]
    assert ron.loads("[1, 2, /* comment */ 3]") == [1, 2, 3]  # the fast path falls back cleanly
