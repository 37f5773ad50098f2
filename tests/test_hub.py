"""Hub datasets by id: parsing `hf:` ids, choosing files, downloading into the cache (faked at the hub's
boundary), reading the cached files for real, and one-line errors offline."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hub_fakes import FakeHub, cache_snapshot, use_offline_cache
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

from mlxstory.data import hub
from mlxstory.data.hub import HubDataset, choose_files, parse
from mlxstory.data.sources import load_default_texts, load_texts
from mlxstory.errors import DataError

# The HTTP client huggingface_hub is built on (requests in old releases, httpx in new ones) and its
# "cannot connect" exception, so the test raises exactly what an offline machine raises.
_CLIENT = sys.modules[HfHubHTTPError.__mro__[1].__module__.split(".")[0]]
CLIENT_CONNECT_ERROR = getattr(_CLIENT, "ConnectError", None) or _CLIENT.ConnectionError

# What roneneldan/TinyStories holds (its main branch): two text versions, their parquet, an archive.
TINYSTORIES_FILES = [
    ".gitattributes", "README.md", "TinyStories-train.txt", "TinyStories-valid.txt",
    "TinyStoriesV2-GPT4-train.txt", "TinyStoriesV2-GPT4-valid.txt", "TinyStories_all_data.tar.gz",
    "data/train-00000-of-00004-2d5a1467fff1081b.parquet",
    "data/train-00001-of-00004-5852b56a2bd28fd9.parquet",
    "data/train-00002-of-00004-a26307300439e943.parquet",
    "data/train-00003-of-00004-d243063613e5a057.parquet",
    "data/validation-00000-of-00001-869c898b519ad725.parquet",
]


def one_line(error: pytest.ExceptionInfo[DataError]) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


@pytest.fixture()
def repo_files(tmp_path: Path, sample_texts: list[str]) -> dict[str, Path]:
    """Small real files under the names roneneldan/TinyStories uses: text with `<|endoftext|>` between
    stories, and parquet shards."""
    folder = tmp_path / "files"
    folder.mkdir()
    stories = [t.strip() for t in sample_texts if t.strip()]
    files: dict[str, Path] = {}
    for name, part in (("TinyStories-train.txt", stories[:40]), ("TinyStories-valid.txt", stories[40:50]),
                       ("TinyStoriesV2-GPT4-train.txt", stories[50:60])):
        files[name] = folder / name
        files[name].write_text("\n<|endoftext|>\n".join(part) + "\n<|endoftext|>\n", "utf-8")
    shards = [n for n in TINYSTORIES_FILES if n.endswith(".parquet")]
    for index, name in enumerate(shards):
        files[name] = folder / Path(name).name
        pq.write_table(pa.table({"text": stories[100 + 10 * index: 110 + 10 * index]}), files[name])
    for name in (".gitattributes", "README.md", "TinyStories_all_data.tar.gz"):
        files[name] = folder / name
        files[name].write_bytes(b"not stories")
    return files


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("hf:roneneldan/TinyStories", HubDataset("roneneldan/TinyStories")),
        ("hf:roneneldan/TinyStories@v1.0", HubDataset("roneneldan/TinyStories", "v1.0")),
        ("hf:a/b:data/*.parquet", HubDataset("a/b", None, ("data/*.parquet",))),
        ("hf:a/b@0123abc:x.txt, y.jsonl", HubDataset("a/b", "0123abc", ("x.txt", "y.jsonl"))),
        ("tinystories", HubDataset("roneneldan/TinyStories", None, ("TinyStories-train.txt",))),
        ("tinystories-10k", HubDataset("flpelerin/tinystories-10k", None, ("*.parquet",))),
        ("stories.parquet", None),
        ("demo", None),
    ],
)
def test_parse_reads_repo_revision_and_patterns(source: str, expected: HubDataset | None) -> None:
    dataset = parse(source)
    if expected is None:
        assert dataset is None
    else:
        assert dataset is not None
        assert (dataset.repo_id, dataset.revision, dataset.patterns) == (
            expected.repo_id, expected.revision, expected.patterns)
        assert dataset.label == source


@pytest.mark.parametrize("source", ["hf:", "hf:TinyStories", "hf:a/b/c", "hf:a/b@", "hf:a/b:", "hf:/b"])
def test_a_malformed_id_is_one_line_error_naming_data(source: str) -> None:
    with pytest.raises(DataError) as error:
        parse(source)
    message = one_line(error)
    assert f"--data {source}" in message and "hf:OWNER/NAME" in message


def test_without_a_pattern_the_train_parquet_is_chosen() -> None:
    chosen = choose_files(TINYSTORIES_FILES, HubDataset("roneneldan/TinyStories"))
    assert chosen == [n for n in TINYSTORIES_FILES if n.startswith("data/train-")]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (["a.txt", "b.jsonl", "notes.md"], ["b.jsonl"]),  # no train files: all files of the first format
        (["pretrained.txt", "stories.txt"], ["pretrained.txt", "stories.txt"]),  # "pretrained" is no split
        (["valid.txt", "train.txt", "x/train_2.txt"], ["train.txt", "x/train_2.txt"]),
        (["README.md", "archive.tar.gz"], []),
    ],
)
def test_choosing_files_without_a_pattern(files: list[str], expected: list[str]) -> None:
    assert choose_files(files, HubDataset("a/b")) == expected


def test_a_pattern_picks_only_readable_files_it_matches() -> None:
    dataset = HubDataset("a/b", patterns=("TinyStories-*",))
    assert choose_files(TINYSTORIES_FILES, dataset) == ["TinyStories-train.txt", "TinyStories-valid.txt"]


def test_an_id_downloads_only_the_train_files_into_the_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, repo_files: dict[str, Path]
) -> None:
    fake = FakeHub(monkeypatch, tmp_path / "cache", {"roneneldan/TinyStories": repo_files})
    loaded = load_texts("hf:roneneldan/TinyStories")
    train_shards = [n for n in TINYSTORIES_FILES if n.startswith("data/train-")]
    assert fake.downloads == [("roneneldan/TinyStories", None, train_shards)]
    expected = [s for n in train_shards for s in pq.read_table(repo_files[n]).column("text").to_pylist()]
    assert loaded.texts == expected and len(expected) == 40
    assert loaded.name == "hf:roneneldan/TinyStories"
    assert "40 stories" in loaded.description and "roneneldan/TinyStories" in loaded.description
    assert str(tmp_path / "cache") in loaded.description


def test_tinystories_is_the_full_train_text(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, repo_files: dict[str, Path], sample_texts: list[str]
) -> None:
    fake = FakeHub(monkeypatch, tmp_path / "cache", {"roneneldan/TinyStories": repo_files})
    loaded = load_texts("tinystories")
    assert fake.downloads == [("roneneldan/TinyStories", None, ["TinyStories-train.txt"])]
    assert loaded.texts == [t.strip() for t in sample_texts if t.strip()][:40]
    assert loaded.name == "tinystories" and "TinyStories-train.txt" in loaded.description


def test_a_revision_and_a_pattern_reach_the_download(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, repo_files: dict[str, Path]
) -> None:
    fake = FakeHub(monkeypatch, tmp_path / "cache", {"roneneldan/TinyStories": repo_files})
    loaded = load_texts("hf:roneneldan/TinyStories@v2:TinyStories-valid.txt")
    assert fake.downloads == [("roneneldan/TinyStories", "v2", ["TinyStories-valid.txt"])]
    assert len(loaded.texts) == 10


def test_an_unknown_repo_is_one_line_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, repo_files: dict[str, Path]
) -> None:
    FakeHub(monkeypatch, tmp_path / "cache", {"roneneldan/TinyStories": repo_files})
    for source in ("hf:roneneldan/TinyStorys", "hf:roneneldan/TinyStorys:*.txt"):
        with pytest.raises(DataError) as error:
            load_texts(source)
        assert f"--data {source}" in one_line(error) and "RepositoryNotFoundError" in str(error.value)


def test_a_pattern_matching_nothing_is_one_line_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, repo_files: dict[str, Path]
) -> None:
    FakeHub(monkeypatch, tmp_path / "cache", {"roneneldan/TinyStories": repo_files, "a/docs": {
        "README.md": repo_files["README.md"]}})
    with pytest.raises(DataError) as error:
        load_texts("hf:roneneldan/TinyStories:*.csv")
    assert "--data hf:roneneldan/TinyStories:*.csv" in one_line(error)
    assert "matching *.csv" in str(error.value)
    with pytest.raises(DataError) as error:
        load_texts("hf:a/docs")
    assert "--data hf:a/docs" in one_line(error) and "no .parquet/.jsonl/.txt files" in str(error.value)


def test_offline_a_cached_copy_is_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, repo_files: dict[str, Path]
) -> None:
    cache = use_offline_cache(monkeypatch, tmp_path / "cache")
    valid = {"TinyStories-valid.txt": repo_files["TinyStories-valid.txt"]}
    cache_snapshot(cache, "roneneldan/TinyStories", valid)
    assert len(load_texts("hf:roneneldan/TinyStories:TinyStories-valid.txt").texts) == 10
    # Without a pattern, offline, the choice is made among the cached files.
    shard = "data/train-00000-of-00004-2d5a1467fff1081b.parquet"
    cache_snapshot(cache, "roneneldan/TinyStories", {shard: repo_files[shard]})
    loaded = load_texts("hf:roneneldan/TinyStories")
    assert loaded.texts == pq.read_table(repo_files[shard]).column("text").to_pylist()


@pytest.mark.parametrize("source", ["hf:roneneldan/TinyStories", "hf:roneneldan/TinyStories@v1:*.txt",
                                    "tinystories", "tinystories-10k"])
@pytest.mark.parametrize("cache", ["empty", "snapshot without data"])
def test_offline_without_a_cached_copy_is_one_line_error_naming_data(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: str, cache: str
) -> None:
    folder = use_offline_cache(monkeypatch, tmp_path / "cache")
    if cache != "empty":
        cache_snapshot(folder, "roneneldan/TinyStories", {}, ref="v1")
        cache_snapshot(folder, "roneneldan/TinyStories", {})
        cache_snapshot(folder, "flpelerin/tinystories-10k", {})
    with pytest.raises(DataError) as error:
        load_texts(source)
    message = one_line(error)
    assert "--data" in message and source in message


@pytest.mark.parametrize("cache", ["empty", "snapshot without data"])
def test_the_default_falls_back_to_demo_naming_the_dataset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                            cache: str) -> None:
    folder = use_offline_cache(monkeypatch, tmp_path / "cache")
    if cache != "empty":
        cache_snapshot(folder, "roneneldan/TinyStories", {})
    loaded = load_default_texts("tinystories")
    assert loaded.name == "demo" and loaded.fallback_reason is not None
    assert loaded.fallback_reason.startswith("tinystories is not cached")
    assert "\n" not in loaded.fallback_reason


# tinystories-10k, the default source of most presets (moved here from test_sources.py).

def test_tinystories_10k_finds_the_parquet_in_the_hf_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sample_parquet: Path
) -> None:
    cache = use_offline_cache(monkeypatch, tmp_path / "hub")
    shard = "data/train-00000-of-00001.parquet"
    snapshot = cache_snapshot(cache, "flpelerin/tinystories-10k", {shard: sample_parquet})
    found = hub.resolve("tinystories-10k")
    assert found.files == [snapshot / shard] and found.commit == "a9c8b52"
    loaded = load_texts("tinystories-10k")
    assert loaded.name == "tinystories-10k" and len(loaded.texts) == 2450
    assert "flpelerin/tinystories-10k" in loaded.description


UNREACHABLE = [
    LocalEntryNotFoundError("Cannot find an appropriate cached snapshot folder"),
    OfflineModeIsEnabled("Cannot reach the hub: offline mode is enabled."),
    CLIENT_CONNECT_ERROR("[Errno -2] Name or service not known"),
    ConnectionError("network is unreachable"),
]


@pytest.mark.parametrize("exception", UNREACHABLE, ids=lambda e: type(e).__name__)
def test_unreachable_hub_is_one_line_error_naming_data(
    monkeypatch: pytest.MonkeyPatch, exception: Exception
) -> None:
    def offline(dataset: HubDataset) -> hub.HubFiles:
        raise exception

    monkeypatch.setattr(hub, "download", offline)
    with pytest.raises(DataError) as error:
        load_texts("tinystories-10k")
    message = one_line(error)
    assert "--data" in message and "tinystories-10k" in message and type(exception).__name__ in message


@pytest.mark.parametrize("exception", UNREACHABLE, ids=lambda e: type(e).__name__)
def test_default_falls_back_to_demo_when_hub_unreachable(
    monkeypatch: pytest.MonkeyPatch, exception: Exception
) -> None:
    def offline(dataset: HubDataset) -> hub.HubFiles:
        raise exception

    monkeypatch.setattr(hub, "download", offline)
    loaded = load_default_texts()
    assert loaded.name == "demo" and len(loaded.texts) == 10_000
    assert loaded.fallback_reason is not None and "\n" not in loaded.fallback_reason
    assert "demo corpus" in loaded.fallback_reason and type(exception).__name__ in loaded.fallback_reason
    assert loaded.fallback_reason.startswith("tinystories-10k is not cached")


def test_default_does_not_hide_a_corrupt_cached_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    broken = tmp_path / "train.parquet"
    broken.write_bytes(b"truncated download")
    cache = use_offline_cache(monkeypatch, tmp_path / "hub")
    cache_snapshot(cache, "flpelerin/tinystories-10k", {"data/train.parquet": broken})
    with pytest.raises(DataError, match="cannot read parquet file"):
        load_default_texts()
