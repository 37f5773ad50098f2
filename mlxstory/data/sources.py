"""Where stories come from: local files, the tinystories-10k hub dataset, or the built-in demo corpus.

Every source becomes a `SourceTexts`: a list of stripped, non-empty stories plus a name and a one-line
description that the token store and the run record, so a run always says what it was trained on.
`download_tinystories` is the only function here that may touch the network; tests fake it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from mlxstory.errors import DataError

TINYSTORIES_NAME = "tinystories-10k"
TINYSTORIES_REPO = "flpelerin/tinystories-10k"
DEMO_NAME = "demo"
EOT_MARKER = "<|endoftext|>"
SUFFIXES = (".parquet", ".txt", ".jsonl")
SOURCE_HELP = "a .parquet, .txt or .jsonl file, a folder of .parquet files, tinystories-10k, or demo"

_BLANK_LINES = re.compile(r"\n[ \t]*\n")


@dataclass(frozen=True)
class SourceTexts:
    """Stories from one source. `name` is what was asked for (a path, tinystories-10k or demo);
    `fallback_reason` is set when the default source was unavailable and the demo corpus stood in."""

    texts: list[str]
    name: str
    description: str
    fallback_reason: str | None = None


class HubUnavailableError(DataError):
    """tinystories-10k is neither cached nor downloadable; the caller may fall back to the demo corpus."""

    def __init__(self, message: str, *, cause: str) -> None:
        super().__init__(message)
        self.cause = cause  # the hub exception's class name, e.g. "LocalEntryNotFoundError"


def load_texts(source: str | Path) -> SourceTexts:
    """Read the stories of `source`: a file path, `tinystories-10k` or `demo` (names win over files)."""
    source_str = str(source)
    if source_str == DEMO_NAME:
        return _demo_texts()
    if source_str == TINYSTORIES_NAME:
        path = _tinystories_path()
        texts = _read_parquet_stories(path)
        return SourceTexts(
            texts, TINYSTORIES_NAME, f"{TINYSTORIES_NAME}: {len(texts):,} stories from the Hugging Face "
            f"dataset {TINYSTORIES_REPO} (cached at {path})"
        )
    path = Path(source_str).expanduser()
    if not path.exists():
        raise DataError(f"data source not found: {path}; pass --data {SOURCE_HELP}")
    if path.is_dir():
        texts, kind = _read_parquet_stories(path), "parquet folder"
    elif path.suffix.lower() == ".parquet":
        texts, kind = _read_parquet_stories(path), "parquet"
    elif path.suffix.lower() == ".txt":
        texts, kind = _read_txt_stories(path), "text"
    elif path.suffix.lower() == ".jsonl":
        texts, kind = _read_jsonl_stories(path), "jsonl"
    else:
        raise DataError(
            f"cannot read {path}: unknown file type {path.suffix or '(no extension)'!r}; "
            f"pass --data {SOURCE_HELP}"
        )
    return SourceTexts(texts, source_str, f"{len(texts):,} stories from {path} ({kind})")


def load_default_texts() -> SourceTexts:
    """tinystories-10k (cache, then hub); if the hub can't be reached, the demo corpus and a one-line reason.

    Only an unreachable or missing hub dataset falls back; a corrupt cached file is still an error.
    """
    try:
        return load_texts(TINYSTORIES_NAME)
    except HubUnavailableError as error:
        reason = (
            f"{TINYSTORIES_NAME} is not cached and the Hugging Face hub cannot be reached ({error.cause}); "
            "using the built-in demo corpus instead (pass --data to choose a source)"
        )
        demo = _demo_texts()
        return SourceTexts(demo.texts, demo.name, demo.description, fallback_reason=reason)


def download_tinystories() -> Path:
    """Local path of the tinystories-10k parquet data: the HF cache first, then the hub.

    The single network boundary of the package. Returns one parquet file, or the folder holding the
    dataset's parquet shards when it has several. Raises the hub's own exceptions; callers translate.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    kwargs = {"repo_id": TINYSTORIES_REPO, "repo_type": "dataset", "allow_patterns": ["*.parquet"]}
    try:
        folder = Path(snapshot_download(local_files_only=True, **kwargs))
        shards = sorted(folder.rglob("*.parquet"))
    except LocalEntryNotFoundError:
        shards = []
    if not shards:  # not cached, or a cached snapshot without its data files: ask the hub
        folder = Path(snapshot_download(**kwargs))
        shards = sorted(folder.rglob("*.parquet"))
    if not shards:
        raise FileNotFoundError(f"no parquet files in the {TINYSTORIES_REPO} snapshot at {folder}")
    return shards[0] if len(shards) == 1 else folder


def _hub_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the hub or its cache could not give us the dataset", across hub versions
    (older huggingface_hub raises requests' errors, newer ones httpx's, which are not OSErrors)."""
    from huggingface_hub import errors

    found: list[type[BaseException]] = [OSError, errors.HfHubHTTPError, errors.EntryNotFoundError]
    for module_name in ("httpx2", "httpx", "requests"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        for attribute in ("HTTPError", "RequestException"):
            if isinstance(getattr(module, attribute, None), type):
                found.append(getattr(module, attribute))
    return tuple(found)


def _tinystories_path() -> Path:
    try:
        return download_tinystories()
    except _hub_errors() as error:
        cause = type(error).__name__
        raise HubUnavailableError(
            f"cannot download {TINYSTORIES_NAME} from the Hugging Face hub (offline? {cause}): "
            f"pass --data PATH to a local parquet/txt/jsonl file, or --data {DEMO_NAME}",
            cause=cause,
        ) from None


def _demo_texts() -> SourceTexts:
    from mlxstory.data.demo_corpus import DEFAULT_COUNT, DEFAULT_SEED, generate_stories

    texts = generate_stories(DEFAULT_COUNT, seed=DEFAULT_SEED)
    description = f"{DEMO_NAME}: {len(texts):,} generated stories (built-in corpus, seed {DEFAULT_SEED})"
    return SourceTexts(texts, DEMO_NAME, description)


def _clean(stories: list[str], path: Path) -> list[str]:
    """Strip every story and drop empty ones; a source with nothing left is an error."""
    texts = [story.strip() for story in stories]
    texts = [story for story in texts if story]
    if not texts:
        raise DataError(f"no stories in {path}: the source is empty; pass --data {SOURCE_HELP}")
    return texts


def _read_parquet_stories(path: Path) -> list[str]:
    """Column `text`, else the first string column; a folder reads every .parquet file in it, sorted."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"no .parquet files in folder {path}; pass --data {SOURCE_HELP}")
    stories: list[str] = []
    for file in files:
        try:
            schema = pq.read_schema(file)
            strings = [f.name for f in schema if f.type in (pa.string(), pa.large_string())]
            if not strings:
                columns = ", ".join(f"{f.name} ({f.type})" for f in schema) or "none"
                raise DataError(f"no string column in {file} (columns: {columns}); expected a `text` column")
            column = "text" if "text" in strings else strings[0]
            values = pq.read_table(file, columns=[column]).column(column).to_pylist()
        except (pa.ArrowException, OSError) as error:
            detail = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise DataError(f"cannot read parquet file {file}: {detail}; is it a parquet file?") from None
        stories.extend(value for value in values if value is not None)
    return _clean(stories, path)


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig").replace("\r\n", "\n")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path} is not UTF-8 text (invalid byte at offset {error.start}); re-save it as UTF-8"
        ) from None


def _read_txt_stories(path: Path) -> list[str]:
    """Stories separated by `<|endoftext|>` when the file has that marker, else by blank lines."""
    text = _read_utf8(path)
    stories = text.split(EOT_MARKER) if EOT_MARKER in text else _BLANK_LINES.split(text)
    return _clean(stories, path)


def _read_jsonl_stories(path: Path) -> list[str]:
    """One JSON object per line with a string `text` field; blank lines are skipped."""
    stories: list[str] = []
    for number, line in enumerate(_read_utf8(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            message = f"{path}:{number}: invalid JSON ({error.msg}); expected one object per line"
            raise DataError(message) from None
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise DataError(f'{path}:{number}: expected an object with a string "text" field')
        stories.append(text)
    return _clean(stories, path)
