"""Where stories come from: local files, the tinystories-10k hub dataset, or the built-in demo corpus.

A source is streamed: `open_source` returns a `FileSource` (files read a chunk of whole stories at a
time: .txt and .jsonl in blocks of bytes, parquet by record batch, a folder's shards in name order) or a
`SourceTexts` (stories already in memory: the demo corpus, tests, small callers). Both have a name and a
one-line description that the token store and the run record, and `chunks()`: pieces that a worker
process turns into stripped, non-empty stories with `Chunk.stories()`, in source order. `load_texts`
still reads a whole (small) source into a `SourceTexts`.
Hub sources (`hf:OWNER/NAME`, `tinystories`, `tinystories-10k`) are resolved by hub.py into files in the
Hugging Face cache, which are then streamed like local files; nothing here touches the network.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxstory.data import hub
from mlxstory.data.hub import HubUnavailableError
from mlxstory.errors import DataError

TINYSTORIES_NAME = "tinystories-10k"
TINYSTORIES_FULL_NAME = "tinystories"
DEMO_NAME = "demo"
EOT_MARKER = "<|endoftext|>"
SUFFIXES = (".parquet", ".txt", ".jsonl")
SOURCE_HELP = ("a .parquet, .txt or .jsonl file, a folder of such files (one kind), hf:OWNER/NAME, "
               "tinystories, tinystories-10k, or demo")
CHUNK_BYTES = 2 << 20  # text per chunk: big enough to amortise a task, small enough to bound memory
_LIST_CHUNK = 4096  # stories per chunk of an in-memory source
_KINDS = {".parquet": "parquet", ".txt": "text", ".jsonl": "jsonl"}

_BLANK_LINES = re.compile(r"\n[ \t]*\n")
_BLANK_LINE_BYTES = re.compile(rb"\n[ \t]*\r?\n")  # a blank line before "\r\n" becomes "\n" is dropped
_MARKER_BYTES = EOT_MARKER.encode()


@dataclass(frozen=True)
class Chunk:
    """Whole stories from one file, not yet parsed (a byte range of a .txt/.jsonl file, which the worker
    process reads itself; a parquet string array) or already in memory (`kind` "list"). Small to pickle,
    so worker processes do the reading and parsing."""

    kind: str  # "text", "jsonl", "parquet" or "list"
    # the stories (list); parquet: the string array, or (column, first, end) row groups for the worker
    # to read; None for text and jsonl
    payload: Any
    path: str = ""  # the file
    offset: int = 0  # byte offset of the chunk in its file (text, jsonl)
    marker: bool = False  # text: stories end with <|endoftext|> (else blank lines separate them)
    size: int = 0  # progress units (bytes, rows or stories) this chunk stands for; text, jsonl: its bytes

    def stories(self) -> list[str]:
        """The stories in source order: stripped, empty ones dropped (a "list" chunk is kept as given)."""
        if self.kind == "list":
            return list(self.payload)
        if self.kind == "parquet":
            read_here = isinstance(self.payload, tuple)  # row groups to read, not strings read already
            strings = _row_groups(self.path, *self.payload) if read_here else self.payload
            return _clean(strings.to_pylist())
        with open(self.path, "rb") as file:
            file.seek(self.offset)
            data = file.read(self.size)
        if len(data) != self.size:
            raise DataError(f"{self.path} changed while it was read (it ends before byte "
                            f"{self.offset + self.size}); run the command again")
        text = _decode(data, self.path, self.offset)
        if self.kind == "text":
            return _clean(text.split(EOT_MARKER) if self.marker else _BLANK_LINES.split(text))
        return _clean(_jsonl_texts(text, self.path, self.offset))


@dataclass(frozen=True)
class SourceTexts:
    """Stories in memory. `name` is what was asked for (a path, tinystories-10k or demo);
    `fallback_reason` is set when the default source was unavailable and the demo corpus stood in.
    Its stories are taken as they are (no stripping): callers that build it own its content."""

    texts: list[str]
    name: str
    description: str
    fallback_reason: str | None = None
    unit = "stories"

    @property
    def total(self) -> int:
        return len(self.texts)

    def chunks(self) -> Iterator[Chunk]:
        for first in range(0, len(self.texts), _LIST_CHUNK):
            part = self.texts[first : first + _LIST_CHUNK]
            yield Chunk("list", part, size=len(part))

    def describe(self, stories: int) -> str:
        return self.description


@dataclass(frozen=True)
class FileSource:
    """Stories streamed from local files of one kind, read in the order given."""

    files: tuple[Path, ...]
    kind: str  # "text", "jsonl" or "parquet"
    name: str
    fallback_reason: str | None = None
    where: str = ""  # what an empty-source error names (a file or folder)
    total: int = 0  # progress units: rows for parquet, else bytes
    text_bytes: int = 0  # about how much text (parquet: uncompressed size), e.g. to size a sample
    chunk_bytes: int = CHUNK_BYTES
    hub_files: hub.HubFiles | None = None  # where a hub dataset's files came from (commit, cache folder)

    @property
    def unit(self) -> str:
        return "rows" if self.kind == "parquet" else "bytes"

    def chunks(self, chunk_bytes: int | None = None) -> Iterator[Chunk]:
        chunk_bytes = chunk_bytes or self.chunk_bytes
        for file in self.files:
            if self.kind == "parquet":
                yield from _parquet_chunks(file, chunk_bytes)
            else:
                yield from _byte_chunks(file, self.kind, chunk_bytes)

    def describe(self, stories: int) -> str:
        """One line for run.json and the token store, once the stories are counted."""
        if self.hub_files is not None:
            return self.hub_files.describe(stories)
        folder = len(self.files) > 1 or Path(self.where).is_dir()
        return f"{stories:,} stories from {self.where} ({self.kind}{' folder' if folder else ''})"

    def read_all(self) -> SourceTexts:
        """Every story in memory, for small sources (eval --data, tests)."""
        texts = [story for chunk in self.chunks() for story in chunk.stories()]
        if not texts:
            raise DataError(f"no stories in {self.where}: the source is empty; pass --data {SOURCE_HELP}")
        return SourceTexts(texts, self.name, self.describe(len(texts)), self.fallback_reason)


Source = FileSource | SourceTexts


def open_files(files: Sequence[str | Path], name: str, *, where: str | Path | None = None,
               hub_files: hub.HubFiles | None = None) -> FileSource:
    """A streaming source over local files of one kind (.parquet, .txt or .jsonl), read in the order
    given. Nothing is read yet beyond sizes and parquet footers."""
    paths = tuple(Path(f) for f in files)
    if not paths:
        raise DataError(f"no data files for {name}; pass --data {SOURCE_HELP}")
    kinds = {_KINDS.get(p.suffix.lower()) for p in paths}
    if None in kinds:
        bad = next(p for p in paths if p.suffix.lower() not in _KINDS)
        raise DataError(f"cannot read {bad}: unknown file type {bad.suffix or '(no extension)'!r}; "
                        f"pass --data {SOURCE_HELP}")
    if len(kinds) > 1:
        raise DataError(f"{where or name} mixes {' and '.join(sorted(kinds))} files; pass --data one file "
                        "or a folder of one kind")
    kind = kinds.pop()
    size = sum(p.stat().st_size for p in paths)
    total, text_bytes = size, size
    if kind == "parquet":
        sizes = [_parquet_size(p) for p in paths]
        total, text_bytes = sum(rows for rows, _ in sizes), sum(nbytes for _, nbytes in sizes)
    where = str(where or (paths[0] if len(paths) == 1 else paths[0].parent))
    return FileSource(paths, kind, name, where=where, total=total, text_bytes=text_bytes, hub_files=hub_files)


def open_source(source: str | Path) -> Source:
    """A source to stream: a file or folder path, a hub dataset (`hf:OWNER/NAME`, `tinystories`,
    `tinystories-10k`) or `demo` (names win over files)."""
    source_str = str(source)
    if source_str == DEMO_NAME:
        return _demo_texts()
    dataset = hub.parse(source_str)
    if dataset is not None:
        found = hub.resolve(dataset)
        return open_files(found.files, source_str, where=found.snapshot, hub_files=found)
    path = Path(source_str).expanduser()
    if not path.exists():
        raise DataError(f"data source not found: {path}; pass --data {SOURCE_HELP}")
    if path.is_dir():
        files = sorted((p for p in path.rglob("*") if p.suffix.lower() in _KINDS and p.is_file()),
                       key=lambda p: p.relative_to(path).parts)
        if not files:
            raise DataError(f"no .parquet, .txt or .jsonl files in folder {path}; pass --data {SOURCE_HELP}")
        return open_files(files, source_str, where=path)
    return open_files([path], source_str, where=path)


def load_texts(source: str | Path) -> SourceTexts:
    """Every story of `source` in memory (see `open_source`): for small data only."""
    return _read(open_source(source))


def _read(opened: Source) -> SourceTexts:
    return opened if isinstance(opened, SourceTexts) else opened.read_all()


def open_default_source(name: str = TINYSTORIES_NAME) -> Source:
    """The hub dataset `name` (hub, else cache); if neither has it, the demo corpus and a one-line reason.

    Only an unreachable or missing hub dataset falls back; a corrupt cached file is still an error
    (when it is read).
    """
    try:
        return open_source(name)
    except HubUnavailableError as error:
        reason = (
            f"{name} is not cached and the Hugging Face hub cannot be reached ({error.cause}); "
            "using the built-in demo corpus instead (pass --data to choose a source)"
        )
        demo = _demo_texts()
        return SourceTexts(demo.texts, demo.name, demo.description, fallback_reason=reason)


def load_default_texts(name: str = TINYSTORIES_NAME) -> SourceTexts:
    """`open_default_source`, read into memory."""
    return _read(open_default_source(name))


def _demo_texts() -> SourceTexts:
    from mlxstory.data.demo_corpus import DEFAULT_COUNT, DEFAULT_SEED, generate_stories

    texts = generate_stories(DEFAULT_COUNT, seed=DEFAULT_SEED)
    description = f"{DEMO_NAME}: {len(texts):,} generated stories (built-in corpus, seed {DEFAULT_SEED})"
    return SourceTexts(texts, DEMO_NAME, description)


def _clean(stories: list[str | None]) -> list[str]:
    """Strip every story and drop empty (and missing) ones."""
    return [text for text in (story.strip() for story in stories if story is not None) if text]


def _decode(data: bytes, path: str, offset: int) -> str:
    try:
        text = data.decode("utf-8-sig" if offset == 0 else "utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text (invalid byte at offset {offset + error.start}); "
                        "re-save it as UTF-8") from None
    return text.replace("\r\n", "\n") if "\r" in text else text  # `in` scans several times faster


def _jsonl_texts(text: str, path: str, offset: int) -> list[str]:
    """The string `text` field of one JSON object per line; blank lines are skipped."""
    stories: list[str] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            where = f"{path}:{_line_number(path, offset, number)}"
            raise DataError(f"{where}: invalid JSON ({error.msg}); expected one object per line") from None
        story = record.get("text") if isinstance(record, dict) else None
        if not isinstance(story, str):
            where = f"{path}:{_line_number(path, offset, number)}"
            raise DataError(f'{where}: expected an object with a string "text" field')
        stories.append(story)
    return stories


def _line_number(path: str, offset: int, line_in_chunk: int) -> int:
    """The file's line number of a chunk's line (counted only when there is an error to report)."""
    if offset == 0:
        return line_in_chunk
    lines, left = 0, offset
    with open(path, "rb") as file:
        while left and (block := file.read(min(left, CHUNK_BYTES))):
            lines, left = lines + block.count(b"\n"), left - len(block)
    return lines + line_in_chunk


def _byte_chunks(path: Path, kind: str, chunk_bytes: int) -> Iterator[Chunk]:
    """Blocks of about `chunk_bytes` that end between stories (after <|endoftext|>, a blank line, or for
    jsonl a newline), so each one parses on its own into the stories the whole file holds."""
    marker = kind == "text" and _has_marker(path, *_identity(path))
    offset, buffer = 0, b""
    with open(path, "rb") as file:
        while True:
            block = file.read(chunk_bytes)
            buffer += block
            cut = _last_boundary(buffer, kind, marker) if block else len(buffer)
            if cut <= 0:
                if not buffer:
                    return
                continue  # one story longer than a block: read on
            yield Chunk(kind, None, str(path), offset, marker, size=cut)
            offset += cut
            buffer = buffer[cut:]


def _last_boundary(buffer: bytes, kind: str, marker: bool) -> int:
    """Just past the last story separator in `buffer`, or 0 if there is none yet."""
    if kind == "jsonl":
        return buffer.rfind(b"\n") + 1
    if marker:
        found = buffer.rfind(_MARKER_BYTES)
        return found + len(_MARKER_BYTES) if found >= 0 else 0
    search_from = max(0, len(buffer) - 65536)
    while True:  # the last blank line: look near the end first
        last = None
        for last in _BLANK_LINE_BYTES.finditer(buffer, search_from):  # noqa: B007
            pass
        if last is not None:
            return last.end()
        if search_from == 0:
            return 0
        search_from = 0


def _identity(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_size, status.st_mtime_ns


@functools.cache
def _has_marker(path: Path, size: int, mtime_ns: int) -> bool:
    """Whether the file holds <|endoftext|> anywhere (read in blocks; usually found in the first one).
    Cached per file version: a token store reads a source twice, and a file without the marker would
    otherwise be read through once more for each pass."""
    tail = b""
    with open(path, "rb") as file:
        while block := file.read(CHUNK_BYTES):
            if _MARKER_BYTES in tail + block:
                return True
            tail = block[1 - len(_MARKER_BYTES):]
    return False


def _parquet_size(path: Path) -> tuple[int, int]:
    """(rows, uncompressed bytes) from the parquet footer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
        return meta.num_rows, sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
    except (pa.ArrowException, OSError) as error:
        raise _unreadable_parquet(path, error) from None


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _parquet_chunks(path: Path, chunk_bytes: int) -> Iterator[Chunk]:
    """Record batches of the story column (`text`, else the first string column) of about `chunk_bytes`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        strings = [f.name for f in schema if f.type in (pa.string(), pa.large_string())]
        if not strings:
            columns = ", ".join(f"{f.name} ({f.type})" for f in schema) or "none"
            raise DataError(f"no string column in {path} (columns: {columns}); expected a `text` column")
        column = "text" if "text" in strings else strings[0]
        meta = parquet.metadata
        index = schema.get_field_index(column)
        text_bytes = sum(meta.row_group(g).column(index).total_uncompressed_size
                         for g in range(meta.num_row_groups))
        groups = [meta.row_group(g) for g in range(meta.num_row_groups)]
        if all(group.column(index).total_uncompressed_size <= 4 * chunk_bytes for group in groups):
            # Row groups small enough to read whole: the workers read them (a batch cannot be cut from
            # a row group without decoding it again), so the parent does not decode the file.
            first, rows, size = 0, 0, 0
            for g, group in enumerate(groups):
                rows, size = rows + group.num_rows, size + group.column(index).total_uncompressed_size
                if size >= chunk_bytes or g + 1 == len(groups):
                    yield Chunk("parquet", (column, first, g + 1), str(path), size=rows)
                    first, rows, size = g + 1, 0, 0
            return
        rows = max(1, int(chunk_bytes * meta.num_rows / max(1, text_bytes)))
        for batch in parquet.iter_batches(batch_size=rows, columns=[column]):
            yield Chunk("parquet", batch.column(0), str(path), size=batch.num_rows)
    except (pa.ArrowException, OSError) as error:
        raise _unreadable_parquet(path, error) from None


def _row_groups(path: str, column: str, first: int, end: int) -> Any:
    """Row groups first..end-1 of `column` (in a worker process), as one arrow array of strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path).read_row_groups(range(first, end), columns=[column])
    except (pa.ArrowException, OSError) as error:
        raise _unreadable_parquet(path, error) from None
    return table.column(0)


def _unreadable_parquet(path: str | Path, error: BaseException) -> DataError:
    return DataError(f"cannot read parquet file {path}: {_first_line(error)}; is it a parquet file?")
