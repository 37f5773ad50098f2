"""Hostile RON: fuzzed and mutated documents raise only RonError (with a valid line:column), never hang or
overflow the stack, and every value the writer accepts reads back unchanged.

Each property counts the cases it ran and records them (`record_property`, visible in JUnit XML and with
`pytest -s`); the test fails if hypothesis ran too few, so the README's counts stay honest.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ron_values import same

from mlxstory.formats import ron
from mlxstory.formats.config import preset_path

EXAMPLES = 400
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=2),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

SEEDS = [
    preset_path("seed.model.ron").read_text(),  # the gpt-rs originals, verbatim
    preset_path("original.train.ron").read_text(),
    preset_path("mac.model.ron").read_text(),  # with a // comment and trailing commas
    '#![enable(implicit_some)]\n/* a /* nested */ comment */\nDoc(\n    name: "tab\\t\\u{1F600} \\"q\\"",\n'
    "    raw: r#\"raw \"text\"\"#,\n    chars: ['a', '\\n', '\\'', '\"'],\n"
    "    map: {1: Some(2.5e-3), \"k\": None},\n    ids: [[1, 2, 3], [-0x1F, 1_000]],\n"
    "    pair: Point(1, -inf),\n    unit: (),\n    flag: true,\n)\n",
]
TOKENS = ["(", ")", "[", "]", "{", "}", ",", ":", '"', "'", "\\", "\\u{", "\\x", "r#", "r\"", "#",
          "#![enable(", "//", "/*", "*/", "\n", " ", "Some", "None", "true", "inf", "NaN", "0x", "-", "+",
          ".", "e", "1", "_", "Name", "a", "é", "\U0001F600", "\x00"]
token = st.sampled_from(TOKENS) | st.text(max_size=3)


@contextlib.contextmanager
def within(seconds: float) -> Iterator[None]:
    """Fail a case that never returns (hypothesis' deadline only judges a case after it finishes)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def hung(signum: int, frame: object) -> None:
        raise TimeoutError(f"ron.loads ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_hostile(text: str) -> None:
    """loads either returns a value that survives write→read, or raises RonError pointing inside the text."""
    try:
        with within(5):
            value = ron.loads(text)
    except ron.RonError as error:
        assert 1 <= error.line <= text.count("\n") + 1
        lines = text.split("\n")
        assert 1 <= error.column <= len(lines[error.line - 1]) + 1
        assert str(error) == f"{error.line}:{error.column}: {error.message}" and "\n" not in error.message
        return
    assert same(ron.loads(ron.dumps(value)), value)


def run_counted(prop: Callable[..., None], record_property: Callable[[str, object], None]) -> int:
    """Run a hypothesis property, count its cases, record the count and require a real fuzzing run."""
    count = 0
    inner = prop.hypothesis.inner_test  # type: ignore[attr-defined]

    def counting(*args: object, **kwargs: object) -> None:
        nonlocal count
        count += 1
        inner(*args, **kwargs)

    prop.hypothesis.inner_test = counting  # type: ignore[attr-defined]
    try:
        prop()
    finally:
        prop.hypothesis.inner_test = inner  # type: ignore[attr-defined]
    record_property("fuzz_cases", count)
    print(f"{prop.__name__}: {count} cases")
    assert count >= EXAMPLES // 2, f"hypothesis ran only {count} cases"
    return count


# ------------------------------------------------------------------------------------------- values

IDENT = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,7}", fullmatch=True)
NAME = IDENT.filter(lambda name: name not in {"true", "false", "None", "Some", "inf", "NaN"})
CHAR = st.characters(codec="utf-8").map(ron.Char)  # utf-8: no lone surrogates, which files cannot hold
TEXT = st.text(st.characters(codec="utf-8"))
KEY_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
               | st.text(st.characters(codec="utf-8"), max_size=8) | CHAR)
KEYS = st.recursive(KEY_SCALARS, lambda inner: st.lists(inner, max_size=3).map(tuple)
                    | st.tuples(NAME, st.lists(inner, max_size=2)).map(lambda p: ron.TupleStruct(p[1], p[0])),
                    max_leaves=4)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | TEXT | CHAR


def containers(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(KEYS, children, max_size=4)
        # An anonymous struct needs a field: `()` is the unit (documented in mlxstory/ron.py).
        | st.dictionaries(IDENT, children, min_size=1, max_size=4).map(ron.Struct)
        | st.tuples(NAME, st.dictionaries(IDENT, children, max_size=4))
        .map(lambda p: ron.Struct(p[1], name=p[0]))
        | st.tuples(NAME, st.lists(children, max_size=4)).map(lambda p: ron.TupleStruct(p[1], p[0]))
    )


VALUES = st.recursive(SCALARS, containers, max_leaves=25)


# ----------------------------------------------------------------------------------------- properties

@FUZZ
@given(TEXT | st.lists(token, max_size=30).map("".join))
def random_text(text: str) -> None:
    check_hostile(text)


@st.composite
def mutated_documents(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SEEDS) | VALUES.map(lambda v: ron.dumps(v, pretty=True)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(token)
        if kind == "insert":
            text = text[:at] + piece + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 4)):]
        else:
            text = text[:at] + piece + text[at + max(len(piece), 1):]
    return text


@FUZZ
@given(mutated_documents())
def mutated(text: str) -> None:
    check_hostile(text)


# (opener, closer): each repetition nests len(closer) levels.
NESTINGS = [("[", "]"), ("(", ")"), ("{1: ", "}"), ("Some(", ")"), ("A(", ")"), ("(a: ", ")"), ("[(", ")]"),
            ('{(1, 2): [', "]}"), ("(1, [", "])"), ("Some([{0: ", "}])"), ("/* c */ [ // x\n", "]")]


@FUZZ
@given(st.sampled_from(NESTINGS), st.integers(1, 3000), st.booleans())
def deep_nesting(nesting: tuple[str, str], depth: int, closed: bool) -> None:
    opener, closer = nesting
    text = opener * depth + ("0" + closer * depth if closed else "")
    levels = depth * len(closer)
    try:
        value = ron.loads(text)
    except RecursionError:  # pragma: no cover - the failure this test exists to catch
        pytest.fail(f"RecursionError at {levels} levels of {opener!r}")
    except ron.RonError as error:
        assert levels > ron.MAX_DEPTH or not closed, str(error)
        return
    assert closed and levels <= ron.MAX_DEPTH
    assert same(ron.loads(ron.dumps(value)), value)


@FUZZ
@given(VALUES)
def round_trip(value: object) -> None:
    for pretty in (False, True):
        text = ron.dumps(value, pretty=pretty)
        assert same(ron.loads(text), value), text


# ------------------------------------------------------------------------------------------- tests

def test_random_text_raises_only_ron_error(record_property: Callable[[str, object], None]) -> None:
    run_counted(random_text, record_property)


def test_mutated_documents_raise_only_ron_error(record_property: Callable[[str, object], None]) -> None:
    run_counted(mutated, record_property)


def test_deep_nesting_is_bounded(record_property: Callable[[str, object], None]) -> None:
    run_counted(deep_nesting, record_property)


def test_writer_output_reads_back_unchanged(record_property: Callable[[str, object], None]) -> None:
    run_counted(round_trip, record_property)


def test_writer_refuses_deep_values_without_recursion_error() -> None:
    value: object = 1
    for _ in range(5000):
        value = [value]
    with pytest.raises(ValueError, match="nested deeper"):
        ron.dumps(value)
