"""Data sources: real parsing of parquet/txt/jsonl, the hub boundary faked, one-line errors for bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

from mlxstory.data import sources
from mlxstory.data.sources import load_default_texts, load_texts
from mlxstory.errors import DataError

# The HTTP client huggingface_hub is built on (requests in old releases, httpx in new ones) and its
# "cannot connect" exception, so the test raises exactly what an offline machine raises.
_CLIENT = sys.modules[HfHubHTTPError.__mro__[1].__module__.split(".")[0]]
CLIENT_CONNECT_ERROR = getattr(_CLIENT, "ConnectError", None) or _CLIENT.ConnectionError


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


def test_tinystories_uses_the_downloaded_parquet(
    monkeypatch: pytest.MonkeyPatch, sample_parquet: Path
) -> None:
    monkeypatch.setattr(sources, "download_tinystories", lambda: sample_parquet)
    loaded = load_texts("tinystories-10k")
    assert loaded.name == "tinystories-10k" and len(loaded.texts) == 2450
    assert "flpelerin/tinystories-10k" in loaded.description


@pytest.mark.parametrize(
    "exception",
    [
        LocalEntryNotFoundError("Cannot find an appropriate cached snapshot folder"),
        OfflineModeIsEnabled("Cannot reach the hub: offline mode is enabled."),
        CLIENT_CONNECT_ERROR("[Errno -2] Name or service not known"),
        ConnectionError("network is unreachable"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_unreachable_hub_is_one_line_error_naming_data(
    monkeypatch: pytest.MonkeyPatch, exception: Exception
) -> None:
    def offline() -> Path:
        raise exception

    monkeypatch.setattr(sources, "download_tinystories", offline)
    with pytest.raises(DataError) as error:
        load_texts("tinystories-10k")
    message = one_line(error)
    assert "--data" in message and "tinystories-10k" in message and type(exception).__name__ in message


def test_default_falls_back_to_demo_when_hub_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline() -> Path:
        raise LocalEntryNotFoundError("outgoing traffic has been disabled")

    monkeypatch.setattr(sources, "download_tinystories", offline)
    loaded = load_default_texts()
    assert loaded.name == "demo" and len(loaded.texts) == 10_000
    assert loaded.fallback_reason is not None and "\n" not in loaded.fallback_reason
    assert "demo corpus" in loaded.fallback_reason and "LocalEntryNotFoundError" in loaded.fallback_reason


def test_default_uses_tinystories_when_available(
    monkeypatch: pytest.MonkeyPatch, sample_parquet: Path
) -> None:
    monkeypatch.setattr(sources, "download_tinystories", lambda: sample_parquet)
    loaded = load_default_texts()
    assert loaded.name == "tinystories-10k" and loaded.fallback_reason is None


def test_default_does_not_hide_a_corrupt_cached_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    broken = tmp_path / "train.parquet"
    broken.write_bytes(b"truncated download")
    monkeypatch.setattr(sources, "download_tinystories", lambda: broken)
    with pytest.raises(DataError, match="cannot read parquet file"):
        load_default_texts()


@pytest.fixture()
def offline_hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The real huggingface_hub, offline, with an empty cache in tmp_path: no request leaves the machine."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return cache


def cached_snapshot(cache: Path) -> Path:
    """The HF cache layout of the dataset at one revision, with no files in it yet."""
    repo = cache / "datasets--flpelerin--tinystories-10k"
    snapshot = repo / "snapshots" / "a9c8b52"
    (snapshot / "data").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a9c8b52")
    return snapshot


def test_download_finds_the_parquet_in_the_hf_cache(offline_hub_cache: Path, sample_parquet: Path) -> None:
    snapshot = cached_snapshot(offline_hub_cache)
    (snapshot / "data" / "train-00000-of-00001.parquet").symlink_to(sample_parquet)
    path = sources.download_tinystories()
    assert path == snapshot / "data" / "train-00000-of-00001.parquet"
    assert len(load_texts("tinystories-10k").texts) == 2450


@pytest.mark.parametrize("cache", ["empty", "snapshot without data"])
def test_download_offline_without_cached_data_is_one_line_error(offline_hub_cache: Path, cache: str) -> None:
    if cache != "empty":
        cached_snapshot(offline_hub_cache)
    with pytest.raises(DataError) as error:
        load_texts("tinystories-10k")
    assert "--data" in one_line(error)
