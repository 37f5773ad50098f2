"""Where stories come from: local files, Hugging Face hub datasets, or the built-in demo corpus.

Every source becomes a `SourceTexts`: a list of stripped, non-empty stories plus a name and a one-line
description that the token store and the run record, so a run always says what it was trained on.
Hub sources (`hf:OWNER/NAME`, `tinystories`, `tinystories-10k`) are resolved by hub.py into files in the
Hugging Face cache, which are then read like local files; nothing here touches the network.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from mlxstory.data import hub
from mlxstory.data.hub import HubUnavailableError
from mlxstory.errors import DataError

TINYSTORIES_NAME = "tinystories-10k"
TINYSTORIES_FULL_NAME = "tinystories"
DEMO_NAME = "demo"
EOT_MARKER = "<|endoftext|>"
SUFFIXES = (".parquet", ".txt", ".jsonl")
SOURCE_HELP = ("a .parquet, .txt or .jsonl file, a folder of .parquet files, hf:OWNER/NAME, tinystories, "
               "tinystories-10k, or demo")

_BLANK_LINES = re.compile(r"\n[ \t]*\n")


@dataclass(frozen=True)
class SourceTexts:
    """Stories from one source. `name` is what was asked for (a path, tinystories-10k or demo);
    `fallback_reason` is set when the default source was unavailable and the demo corpus stood in."""

    texts: list[str]
    name: str
    description: str
    fallback_reason: str | None = None


def load_texts(source: str | Path) -> SourceTexts:
    """Read the stories of `source`: a file path, a hub dataset (`hf:OWNER/NAME`, `tinystories`,
    `tinystories-10k`) or `demo` (names win over files)."""
    source_str = str(source)
    if source_str == DEMO_NAME:
        return _demo_texts()
    dataset = hub.parse(source_str)
    if dataset is not None:
        found = hub.resolve(dataset)
        texts = [story for path in found.files for story in _read_file(path)[0]]
        return SourceTexts(texts, source_str, found.describe(len(texts)))
    path = Path(source_str).expanduser()
    if not path.exists():
        raise DataError(f"data source not found: {path}; pass --data {SOURCE_HELP}")
    texts, kind = _read_file(path)
    return SourceTexts(texts, source_str, f"{len(texts):,} stories from {path} ({kind})")


def _read_file(path: Path) -> tuple[list[str], str]:
    """The stories of a local file or parquet folder, and what kind of source it was."""
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
    return texts, kind


def load_default_texts(name: str = TINYSTORIES_NAME) -> SourceTexts:
    """The hub dataset `name` (hub, else cache); if neither has it, the demo corpus and a one-line reason.

    Only an unreachable or missing hub dataset falls back; a corrupt cached file is still an error.
    """
    try:
        return load_texts(name)
    except HubUnavailableError as error:
        reason = (
            f"{name} is not cached and the Hugging Face hub cannot be reached ({error.cause}); "
            "using the built-in demo corpus instead (pass --data to choose a source)"
        )
        demo = _demo_texts()
        return SourceTexts(demo.texts, demo.name, demo.description, fallback_reason=reason)


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
