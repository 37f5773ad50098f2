"""Data sources: real parsing of parquet/txt/jsonl, one-line errors for bad input (the hub: test_hub.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlxstory.data.sources import load_texts, open_source
from mlxstory.errors import DataError


def one_line(error: pytest.ExceptionInfo[DataError]) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


def test_parquet_reads_the_text_column(sample_parquet: Path, sample_texts: list[str]) -> None:
    loaded = load_texts(str(sample_parquet))
    assert loaded.texts == [t.strip() for t in sample_texts if t.strip()]
    assert len(loaded.texts) == 2450
    assert loaded.name == str(sample_parquet)
    assert "2,450 stories" in loaded.description and loaded.fallback_reason is None


def test_parquet_without_text_column_uses_first_string_column(tmp_path: Path) -> None:
    path = tmp_path / "stories.parquet"
    table = pa.table({"id": [1, 2, 3], "story": [" One. ", "", "Two."], "note": ["x", "y", "z"]})
    pq.write_table(table, path)
    assert load_texts(path).texts == ["One.", "Two."]


def test_parquet_folder_reads_all_shards_in_order(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"text": ["b1", "b2"]}), tmp_path / "data" / "train-00001.parquet")
    pq.write_table(pa.table({"text": ["a1", None]}), tmp_path / "data" / "train-00000.parquet")
    assert load_texts(tmp_path).texts == ["a1", "b1", "b2"]


def test_txt_splits_on_endoftext_marker(tmp_path: Path) -> None:
    path = tmp_path / "stories.txt"
    path.write_text("Once upon a time.\n\nThe end.<|endoftext|>\n Second story. <|endoftext|>\n\n", "utf-8")
    # With the marker present, blank lines stay inside a story.
    assert load_texts(path).texts == ["Once upon a time.\n\nThe end.", "Second story."]


def test_txt_without_marker_splits_on_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "stories.txt"
    path.write_bytes("First story.\r\nStill first.\r\n\r\nSecond.\n  \n\n\nThird, caf\u00e9.\n".encode())
    assert load_texts(path).texts == ["First story.\nStill first.", "Second.", "Third, caf\u00e9."]


def test_jsonl_reads_text_fields(tmp_path: Path) -> None:
    path = tmp_path / "stories.jsonl"
    curly = " \u201cHi,\u201d said Sue. "
    lines = [json.dumps({"text": "A dog ran.", "id": 1}), "", json.dumps({"text": curly})]
    path.write_text("\n".join(lines) + "\n", "utf-8")
    assert load_texts(path).texts == ["A dog ran.", "\u201cHi,\u201d said Sue."]


def test_demo_source_is_the_generated_corpus() -> None:
    loaded = load_texts("demo")
    assert loaded.name == "demo" and len(loaded.texts) == 10_000
    assert loaded.texts == [t.strip() for t in loaded.texts]
    assert "generated" in loaded.description


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("missing.parquet", None, "data source not found"),
        ("broken.parquet", b"this is not parquet", "cannot read parquet file"),
        ("empty.txt", b"\n\n  \n", "no stories in"),
        ("latin1.txt", "caf\u00e9 au lait".encode("latin-1"), "is not UTF-8"),
        ("bad.jsonl", b'{"text": "ok"}\n{not json}\n', "bad.jsonl:2: invalid JSON"),
        ("notext.jsonl", b'{"story": "ok"}\n', 'string "text" field'),
        ("stories.csv", b"text\nhello\n", "unknown file type '.csv'"),
    ],
)
def test_bad_input_is_one_line_error(tmp_path: Path, name: str, content: bytes | None, expected: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError) as error:
        load_texts(path)
    message = one_line(error)
    assert expected in message and name in message


def test_parquet_without_string_column_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"a": [1, 2], "b": [0.5, 1.5]}), path)
    with pytest.raises(DataError) as error:
        load_texts(path)
    assert "no string column" in one_line(error) and "a (int64)" in str(error.value)


def test_a_file_cut_short_between_reading_and_parsing_is_one_line_error(tmp_path: Path) -> None:
    """Workers read their chunk's bytes themselves: a file truncated meanwhile must not parse as less text."""
    path = tmp_path / "stories.txt"
    path.write_text("<|endoftext|>".join(f"story {i} " * 200 for i in range(400)), encoding="utf-8")
    chunks = list(open_source(path).chunks(chunk_bytes=10_000))
    assert len(chunks) > 3 and chunks[-1].stories()  # read as usual
    with open(path, "r+b") as file:
        file.truncate(chunks[-1].offset + 10)
    with pytest.raises(DataError, match=r"stories.txt changed while it was read .*; run the command again$"):
        chunks[-1].stories()
