"""The token store: a tokenized corpus on disk, split by story into train and val, verified on open.

A store is a folder of four files, each written atomically (temp file, then `os.replace`), the manifest
last, so a folder with a manifest is a finished store:

- `tokenizer.ron`  the tokenizer that produced the tokens
- `tokens.bin`     raw token ids (uint16 while the vocab fits, else uint32): the train stories, then the
                   val stories, each followed by `<|endoftext|>`, each split in source order
- `stories.npy`    int64 [n_stories, 3]: (index in the source, first token, end token) in tokens.bin order
- `manifest.json`  format version, source, split, per-split counts, dtype, sha256 of the two data files

Building streams the source twice, a chunk of stories at a time, through worker processes: first to
decide the split and count the train stories' words (the tokenizer trains on those counts), then to
encode. Results come back in source order, so the files are the same for any number of workers. Only
the word counts and one chunk per worker are ever in memory. Training memory-maps `tokens.bin`, so a
store larger than RAM still trains.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from hashlib import blake2b
from pathlib import Path
from typing import Any

import numpy as np

from mlxstory.data.parallel import WorkerPool
from mlxstory.data.sources import Chunk, FileSource, Source, SourceTexts
from mlxstory.data.tokenizer import Tokenizer, WordCounts
from mlxstory.errors import DataError

FORMAT = "mlxstory-token-store"
FORMAT_VERSION = 2  # 2: the split is a keyed hash of each story (v1: a permutation of story indices)
READABLE_VERSIONS = (1, 2)
MANIFEST_FILE = "manifest.json"
TOKENS_FILE = "tokens.bin"
STORIES_FILE = "stories.npy"
TOKENIZER_FILE = "tokenizer.ron"
SPLITS = ("train", "val")
SPLIT_METHOD = (
    "first 8 bytes (little-endian) of the blake2b digest (16 bytes) of each story's UTF-8 text, keyed by "
    "the seed's decimal digits: a story is in val when they are below val_below = round(val_fraction * "
    "2**64), moved to the lowest (or highest) digest if a split would be empty; equal stories share a "
    "split; each split keeps source order"
)
SAMPLE_METHOD = (
    "train stories whose last 8 digest bytes (the split's blake2b digest) are below sample_below = "
    "round(2**64 * tokenizer_sample / approximate train bytes): about tokenizer_sample bytes of text"
)
_FULL = 1 << 64
_RERUN = "re-run `mlxstory tokenize`"

Progress = Callable[[int, int], None]


def split_indices(texts: Sequence[str], val_fraction: float = 0.1, seed: int = 1337
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Source indices of the (train, val) stories of `texts`, as a store built from them splits them.

    By story, never inside one, so no val text leaks into training; deterministic for (texts, seed).
    """
    scan = _scan(SourceTexts(list(texts), "texts", "texts"), WorkerPool(1), val_fraction, seed)
    is_val = _below(_hashes(texts, _key(seed))[:, 0], scan.val_below)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def check_val_fraction(val_fraction: float) -> None:
    """Fail before any slow work when no split is possible."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


class TokenStore:
    """An opened, verified store. `split_tokens(name)` is a read-only memory map of one split."""

    def __init__(
        self, path: Path, manifest: dict, tokenizer: Tokenizer, tokens: np.ndarray, stories: np.ndarray
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.tokenizer = tokenizer
        self._tokens = tokens
        self._stories = stories

    # -- writing ------------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        out_dir: str | Path,
        texts: Sequence[str] | Source,
        tokenizer: Tokenizer,
        *,
        source: str | SourceTexts | None = None,
        val_fraction: float = 0.1,
        seed: int = 1337,
        progress: Progress | None = None,
        workers: int = 1,
    ) -> TokenStore:
        """Split `texts` (stories, or a streaming source) by story, encode them with `tokenizer`, write the
        store to `out_dir`, open it.

        `source` names a list of stories (a SourceTexts also records its description and any fallback
        reason). `progress(done, total)` is called as the source is encoded (in its units).
        """
        stories = _as_source(texts, source)
        with WorkerPool(workers) as pool:
            scan = _scan(stories, pool, val_fraction, seed)
            return _write_store(Path(out_dir), stories, tokenizer, scan, pool, progress)

    # -- reading ------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = True) -> TokenStore:
        """Open the store in `path`, checking file sizes and (with `verify`) the sha256 checksums."""
        root = Path(path)
        manifest_path = root / MANIFEST_FILE
        if not manifest_path.is_file():
            what = "folder not found" if not root.exists() else f"no {MANIFEST_FILE}"
            raise DataError(f"no token store at {root} ({what}); create it with "
                            f"`mlxstory tokenize --data SOURCE --out {root}`")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            if manifest.get("format") != FORMAT:
                raise ValueError("not a token store manifest")
            if manifest["format_version"] not in READABLE_VERSIONS:
                raise ValueError(f"format version {manifest['format_version']}, this mlxstory reads "
                                 f"{', '.join(map(str, READABLE_VERSIONS))}")
            dtype = np.dtype(manifest["dtype"])
            if dtype != token_dtype(manifest["vocab_size"]):  # else a memmap traceback, or garbage ids
                raise ValueError(f"dtype {dtype.name} for vocab size {manifest['vocab_size']}, expected "
                                 f"{token_dtype(manifest['vocab_size']).name}")
            sizes = {TOKENS_FILE: manifest["tokens_file_bytes"]}
            checksums = {TOKENS_FILE: manifest["tokens_sha256"], STORIES_FILE: manifest["stories_sha256"]}
            splits = {name: manifest["splits"][name] for name in SPLITS}
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            detail = f"missing field {error}" if isinstance(error, KeyError) else str(error).splitlines()[0]
            message = f"{manifest_path} is not a usable token store manifest ({detail}); {_RERUN}"
            raise DataError(message) from None

        for file in (TOKENS_FILE, STORIES_FILE, TOKENIZER_FILE):
            if not (root / file).is_file():
                raise DataError(f"{root / file} is missing from the token store; {_RERUN}")
        size = (root / TOKENS_FILE).stat().st_size
        if size != sizes[TOKENS_FILE]:
            state = "truncated" if size < sizes[TOKENS_FILE] else "longer than expected"
            raise DataError(f"{root / TOKENS_FILE} is {state} ({size:,} bytes, manifest.json says "
                            f"{sizes[TOKENS_FILE]:,}); {_RERUN}")
        if verify:
            for file, expected in checksums.items():
                if _sha256(root / file) != expected:
                    raise DataError(f"{root / file} does not match its sha256 in manifest.json (corrupted or "
                                    f"changed); {_RERUN}")

        tokenizer = Tokenizer.load(root / TOKENIZER_FILE)
        if tokenizer.vocab_size != manifest["vocab_size"] or tokenizer.eot_id != manifest["eot_id"]:
            raise DataError(f"{root / TOKENIZER_FILE} has vocab size {tokenizer.vocab_size}, manifest.json "
                            f"says {manifest['vocab_size']}; {_RERUN}")
        try:
            stories = np.load(root / STORIES_FILE, allow_pickle=False)
        except ValueError as error:
            raise DataError(f"{root / STORIES_FILE} is unreadable ({error}); {_RERUN}") from None
        if stories.shape != (sum(s["stories"] for s in splits.values()), 3):
            raise DataError(f"{root / STORIES_FILE} does not match manifest.json's story counts; {_RERUN}")
        tokens = np.memmap(root / TOKENS_FILE, dtype=dtype, mode="r")
        return cls(root, manifest, tokenizer, tokens, stories)

    @staticmethod
    def recorded_vocab_size(path: str | Path) -> int | None:
        """The vocab size the store's manifest records, without opening the store; None when it cannot
        be read (opening the store then says why)."""
        try:
            manifest = json.loads((Path(path) / MANIFEST_FILE).read_text(encoding="utf-8"))
            return int(manifest["vocab_size"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _split(self, name: str) -> dict:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return self.manifest["splits"][name]

    def split_tokens(self, name: str) -> np.ndarray:
        """The split's stories as one read-only 1-D array, each story followed by `<|endoftext|>`."""
        split = self._split(name)
        return self._tokens[split["token_start"] : split["token_start"] + split["tokens"]]

    def split_bytes(self, name: str) -> int:
        """UTF-8 bytes of the split's story text (separators not counted): the denominator of bits/byte."""
        return int(self._split(name)["bytes"])

    def split_story_count(self, name: str) -> int:
        return int(self._split(name)["stories"])

    def story_spans(self, name: str) -> np.ndarray:
        """[n, 2] (start, end) of each story within `split_tokens(name)`; end includes its separator."""
        split = self._split(name)
        first = 0 if name == "train" else self.manifest["splits"]["train"]["stories"]
        rows = self._stories[first : first + split["stories"]]
        return rows[:, 1:] - split["token_start"]

    def stories_in_source_order(self) -> list[list[int]]:
        """Every story's ids (no separator), in the source's order: small stores only (gpt-rs export)."""
        order = np.argsort(self._stories[:, 0], kind="stable")
        return [self._tokens[start : end - 1].tolist() for start, end in self._stories[order, 1:]]

    @property
    def source(self) -> str:
        return str(self.manifest["source"])

    def summary(self) -> str:
        """One line for the terminal: stories and tokens per split, vocab, dtype, source."""
        t, v = self.manifest["splits"]["train"], self.manifest["splits"]["val"]
        unknown = t["unknown_chars"] + v["unknown_chars"]
        return (f"{self.path}: {t['stories']:,} train / {v['stories']:,} val stories, {t['tokens']:,} / "
                f"{v['tokens']:,} tokens ({self.manifest['dtype']}), vocab {self.manifest['vocab_size']:,}, "
                f"source {self.source}" + (f", {unknown:,} unknown chars as <|unk|>" if unknown else ""))


def build_token_store(
    out_dir: str | Path,
    source: Source,
    vocab_size: int,
    *,
    val_fraction: float = 0.1,
    seed: int = 1337,
    tokenizer_sample: int | None = None,
    workers: int = 1,
    on_read_progress: Progress | None = None,
    on_train_progress: Progress | None = None,
    on_encode_progress: Progress | None = None,
) -> TokenStore:
    """Split first, train the tokenizer on the train stories only (or about `tokenizer_sample` bytes of
    them), then write the store. What `mlxstory tokenize` and a self-tokenizing `mlxstory train` run.

    Progress callbacks: reading and counting words (source units), merges, encoding (source units).
    """
    check_val_fraction(val_fraction)
    if tokenizer_sample is not None and tokenizer_sample < 1:
        raise DataError(f"--tokenizer-sample must be a positive number of bytes, got {tokenizer_sample}")
    _check_out(Path(out_dir))
    with WorkerPool(workers) as pool:
        scan = _scan(source, pool, val_fraction, seed, count_words=True, sample=tokenizer_sample,
                     progress=on_read_progress)
        tokenizer = Tokenizer.from_word_counts(scan.counts, vocab_size, progress=on_train_progress)
        return _write_store(Path(out_dir), source, tokenizer, scan, pool, on_encode_progress)


# -- the split and the word counts: pass one --------------------------------------------------------


def _key(seed: int) -> bytes:
    return str(seed).encode()[:64]  # blake2b keys are at most 64 bytes


def _hashes(stories: Sequence[str], key: bytes) -> np.ndarray:
    """(split hash, sample hash) of each story, shape (n, 2): two independent 64-bit draws from its text
    and the seed, the two little-endian halves of one keyed blake2b digest."""
    digests = b"".join(blake2b(text.encode("utf-8"), digest_size=16, key=key).digest() for text in stories)
    return np.frombuffer(digests, dtype="<u8").reshape(-1, 2)


def _below(hashes: np.ndarray, bound: int) -> np.ndarray:
    """hashes < bound, where a bound of 2**64 (everything) does not fit a uint64."""
    return hashes < np.uint64(bound) if bound < _FULL else np.ones(len(hashes), bool)


@dataclass
class _Extreme:
    """The story with the lowest (or highest) split hash, and how often that exact story occurs."""

    hash: int
    text: str
    count: int = 1

    def merge(self, other: _Extreme | None, lowest: bool) -> _Extreme:
        if other is None:
            return self
        if other.hash == self.hash:
            return _Extreme(self.hash, self.text, self.count + other.count)
        return self if (self.hash < other.hash) == lowest else other


@dataclass
class _Scan:
    """What pass one learns: story and byte counts, the split threshold, the tokenizer's word counts."""

    seed: int
    val_fraction: float
    val_below: int
    sample_below: int = _FULL
    stories: int = 0
    val_stories: int = 0
    lowest: _Extreme | None = None
    highest: _Extreme | None = None
    counts: WordCounts = field(default_factory=WordCounts)
    drawn_bytes: int = 0
    drawn_stories: int = 0
    # each chunk's split (np.packbits of is_val) under val_below, so pass two need not hash again;
    # None once val_below moved (a split was empty)
    splits: list[np.ndarray] | None = field(default_factory=list)

    def add(self, other: _Scan) -> None:
        self.stories += other.stories
        self.val_stories += other.val_stories
        if other.counts is not self.counts:  # in-process chunks count straight into the total
            self.counts.update(other.counts)
        self.drawn_bytes += other.drawn_bytes
        self.drawn_stories += other.drawn_stories
        if self.splits is not None and other.splits is not None:
            self.splits.extend(other.splits)
        if other.lowest is not None:
            self.lowest = other.lowest.merge(self.lowest, lowest=True)
            self.highest = other.highest.merge(self.highest, lowest=False)


def _scan_chunk(task: tuple[Chunk, bytes, int, int, bool], counts: WordCounts | None = None) -> _Scan:
    """Pass one over a chunk (in a worker): split hashes, and the words of drawn train stories (into
    `counts` when given: in one process that skips merging a Counter per chunk)."""
    chunk, key, val_below, sample_below, count_words = task
    stories = chunk.stories()
    scan = _Scan(0, 0.0, val_below, sample_below, stories=len(stories), splits=[np.zeros(0, np.uint8)],
                 counts=counts if counts is not None else WordCounts())
    if not stories:
        return scan
    hashes = _hashes(stories, key)
    split_hash = hashes[:, 0]
    is_val = _below(split_hash, val_below)
    scan.val_stories = int(is_val.sum())
    scan.splits = [np.packbits(is_val)]
    drawn = [stories[i] for i in np.flatnonzero(~is_val & _below(hashes[:, 1], sample_below))]
    for attribute, index in (("lowest", int(split_hash.argmin())), ("highest", int(split_hash.argmax()))):
        value = split_hash[index]
        copies = int(np.count_nonzero(split_hash == value))
        setattr(scan, attribute, _Extreme(int(value), stories[index], copies))
    if count_words:
        scan.counts.add(drawn)
        scan.drawn_stories, scan.drawn_bytes = len(drawn), sum(len(t.encode("utf-8")) for t in drawn)
    return scan


def _scan(source: Source, pool: WorkerPool, val_fraction: float, seed: int, *, count_words: bool = False,
          sample: int | None = None, progress: Progress | None = None) -> _Scan:
    """Pass one over the whole source; then make sure both splits hold a story (tiny sources)."""
    check_val_fraction(val_fraction)
    key, val_below = _key(seed), round(val_fraction * _FULL)
    sample_below = _FULL
    if sample is not None:
        approx_train_bytes = max(1.0, _approx_bytes(source) * (1 - val_fraction))
        sample_below = min(_FULL, round(_FULL * sample / approx_train_bytes))
    total = _Scan(seed, val_fraction, val_below, sample_below)
    tasks = ((chunk, key, val_below, sample_below, count_words) for chunk in source.chunks())
    scan_chunk = partial(_scan_chunk, counts=total.counts) if pool.workers == 1 else _scan_chunk
    for part in _mapped(pool, scan_chunk, tasks, source.total, progress):
        total.add(part)
    where = getattr(source, "where", "") or source.name
    if total.stories == 0:
        raise DataError(f"no stories in {where}: the source is empty; pass --data a file with stories")
    if total.stories < 2:
        raise DataError(f"need at least 2 stories to make a train/val split, got {total.stories}; "
                        "give more data")
    if total.lowest.hash == total.highest.hash:
        raise DataError(f"all {total.stories:,} stories in {where} are the same text; a train/val split "
                        "needs at least 2 different stories")
    if total.val_stories == 0:  # everything hashed to train: the lowest-hash story (and its copies) is val
        moved = total.lowest
        total.val_below, total.val_stories = moved.hash + 1, moved.count
        total.splits = None
        if count_words and int(_hashes([moved.text], key)[0, 1]) < sample_below:
            total.counts.add([moved.text], times=-moved.count)
            total.drawn_stories -= moved.count
            total.drawn_bytes -= moved.count * len(moved.text.encode("utf-8"))
    elif total.val_stories == total.stories:  # everything hashed to val: the highest goes to train
        moved = total.highest
        total.val_below, total.val_stories = moved.hash, total.stories - moved.count
        total.splits = None
        if count_words:
            total.counts.add([moved.text], times=moved.count)
            total.drawn_stories += moved.count
            total.drawn_bytes += moved.count * len(moved.text.encode("utf-8"))
    if count_words and sample is not None and total.drawn_stories == 0:
        raise DataError(f"--tokenizer-sample {sample} drew no story from the train split; "
                        "give a larger sample")
    return total


def _mapped(pool: WorkerPool, fn: Callable[[Any], Any], tasks: Any, total: int,
            progress: Progress | None) -> Any:
    """`pool.map(fn, tasks)` (each task's chunk first), reporting the chunks' sizes as they finish."""
    sizes: list[int] = []

    def sized() -> Any:
        for task in tasks:
            sizes.append(task[0].size)
            yield task

    done = 0
    for result in pool.map(fn, sized()):
        done += sizes.pop(0)
        if progress is not None:
            progress(done, total)
        yield result


def _approx_bytes(source: Source) -> int:
    if isinstance(source, FileSource):
        return source.text_bytes
    return sum(len(text.encode("utf-8")) for text in source.texts)


# -- encoding: pass two ------------------------------------------------------------------------------

_TOKENIZERS: dict[str, Tokenizer] = {}  # per process: the tokenizer of a store being written


def _worker_tokenizer(spec: str) -> Tokenizer:
    """The parent registers its tokenizer under `spec`; a worker process rebuilds it from that file."""
    if spec not in _TOKENIZERS:
        with open(spec, encoding="utf-8") as file:  # JSON, not pickle: a file is never code
            alphabet, merges, do_not_merge, special = json.load(file)
        merges = [((a, b), z) for (a, b), z in merges]
        _TOKENIZERS.clear()
        _TOKENIZERS[spec] = Tokenizer(alphabet, merges, do_not_merge=do_not_merge, special_tokens=special)
    return _TOKENIZERS[spec]


def _encode_chunk(task: tuple[Chunk, bytes, int, str, str, np.ndarray | None]
                  ) -> tuple[int, dict[str, tuple]]:
    """Pass two over a chunk (in a worker): per split, (tokens, story ends, story indices in the chunk,
    text bytes, unknown characters). `split` is pass one's packed is_val, else the stories are hashed."""
    chunk, key, val_below, spec, dtype, split = task
    tokenizer = _worker_tokenizer(spec)
    stories = chunk.stories()
    if split is not None:
        is_val = np.unpackbits(split, count=len(stories)).astype(bool)
    else:
        is_val = _below(_hashes(stories, key)[:, 0], val_below)
    tokens, ends = tokenizer.encode_stories(stories, dtype)  # the whole chunk at once, then split
    sizes = np.diff(ends, prepend=0)
    text_bytes = np.fromiter(map(len, map(str.encode, stories)), np.int64, len(stories))
    on_val = np.repeat(is_val, sizes)
    out = {}
    for name, chosen, kept in (("train", ~is_val, ~on_val), ("val", is_val, on_val)):
        part = tokens[kept]
        out[name] = (part, np.cumsum(sizes[chosen]), np.flatnonzero(chosen), int(text_bytes[chosen].sum()),
                     int(np.count_nonzero(part == tokenizer.unk_id)))
    return len(stories), out


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a folder for the token store")


def _as_source(texts: Sequence[str] | Source, source: str | SourceTexts | None) -> Source:
    if isinstance(texts, (FileSource, SourceTexts)):
        return texts
    if isinstance(source, SourceTexts):
        return SourceTexts(list(texts), source.name, source.description, source.fallback_reason)
    name = str(source) if source is not None else "texts"
    return SourceTexts(list(texts), name, name)


def _write_store(out: Path, source: Source, tokenizer: Tokenizer, scan: _Scan, pool: WorkerPool,
                 progress: Progress | None) -> TokenStore:
    _check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # the old store is invalid from here until we finish
    dtype = token_dtype(tokenizer.vocab_size)
    temps = {name: _temp_path(out / name) for name in ("tokens.bin", "val.bin", "train.rows", "val.rows",
                                                       "tokenizer.json", STORIES_FILE)}
    spec = str(temps["tokenizer.json"])
    _TOKENIZERS[spec] = tokenizer  # in-process workers use it as is; worker processes read the file
    try:
        if pool.workers > 1:
            with open(spec, "w", encoding="utf-8") as file:
                json.dump([tokenizer.alphabet, tokenizer.merges, tokenizer.do_not_merge,
                           list(tokenizer.special_tokens)], file)
        splits, digest = _write_tokens(source, scan, spec, dtype, pool, temps, progress)
        pool.close()  # the workers are done: give their memory back before the row table is written
        _write_rows(temps, scan.stories, shift=splits["train"]["tokens"])
        os.replace(temps["tokens.bin"], out / TOKENS_FILE)
        os.replace(temps[STORIES_FILE], out / STORIES_FILE)
    finally:
        _TOKENIZERS.pop(spec, None)
        for temp in temps.values():
            temp.unlink(missing_ok=True)

    _write_atomic(out / TOKENIZER_FILE, tokenizer.save)
    fallback = source.fallback_reason
    description = source.describe(scan.stories)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": source.name,
        "source_description": description,
        **({"source_fallback_reason": fallback} if fallback else {}),
        "tokenizer_file": TOKENIZER_FILE,
        "tokens_file": TOKENS_FILE,
        "stories_file": STORIES_FILE,
        "vocab_size": tokenizer.vocab_size,
        "eot_id": tokenizer.eot_id,
        "dtype": dtype.name,
        "tokens_file_bytes": sum(split["tokens"] for split in splits.values()) * dtype.itemsize,
        "tokens_sha256": digest,
        "stories_sha256": _sha256(out / STORIES_FILE),
        "split": {"seed": scan.seed, "val_fraction": scan.val_fraction, "method": SPLIT_METHOD,
                  "val_below": scan.val_below},
        "splits": splits,
        "total": {key: sum(s[key] for s in splits.values()) for key in ("stories", "tokens", "bytes")},
    }
    if scan.sample_below < _FULL:
        manifest["tokenizer_sample"] = {"method": SAMPLE_METHOD, "sample_below": scan.sample_below,
                                        "stories": scan.drawn_stories, "bytes": scan.drawn_bytes}
    text = json.dumps(manifest, indent=2) + "\n"
    _write_atomic(out / MANIFEST_FILE, lambda path: Path(path).write_text(text, encoding="utf-8"))
    tokens = np.memmap(out / TOKENS_FILE, dtype=dtype, mode="r")
    stories = np.load(out / STORIES_FILE, mmap_mode="r", allow_pickle=False)
    return TokenStore(out, manifest, tokenizer, tokens, stories)  # no reload: a 65k-merge RON takes seconds


def _write_tokens(source: Source, scan: _Scan, spec: str, dtype: np.dtype, pool: WorkerPool,
                  temps: dict[str, Path], progress: Progress | None) -> tuple[dict[str, dict], str]:
    """Encode every chunk (in workers), append each split's tokens and story rows to its own temp file in
    source order, then put the val tokens after the train tokens. Returns the splits and the sha256."""
    splits = iter(scan.splits) if scan.splits is not None else None
    tasks = ((chunk, _key(scan.seed), scan.val_below, spec, dtype.name,
              next(splits) if splits is not None else None) for chunk in source.chunks())

    files = {name: open(temps[name], "wb") for name in ("tokens.bin", "val.bin", "train.rows", "val.rows")}
    token_file = {"train": files["tokens.bin"], "val": files["val.bin"]}
    counts = {name: {"stories": 0, "tokens": 0, "bytes": 0, "unknown_chars": 0} for name in SPLITS}
    digest = hashlib.sha256()
    first_story = 0
    try:
        for n_stories, parts in _mapped(pool, _encode_chunk, tasks, source.total, progress):
            for name, (tokens, ends, indices, text_bytes, unknown) in parts.items():
                split = counts[name]
                starts = np.concatenate([[0], ends])[:-1] + split["tokens"]
                rows = np.stack([indices + first_story, starts, ends + split["tokens"]], axis=1)
                files[f"{name}.rows"].write(rows.astype(np.int64).tobytes())
                data = tokens.tobytes()
                token_file[name].write(data)
                if name == "train":
                    digest.update(data)
                split["stories"] += len(indices)
                split["tokens"] += len(tokens)
                split["bytes"] += text_bytes
                split["unknown_chars"] += unknown
            first_story += n_stories
        files["val.bin"].close()
        with open(temps["val.bin"], "rb") as val:
            while block := val.read(1 << 22):
                files["tokens.bin"].write(block)
                digest.update(block)
    finally:
        for file in files.values():
            file.close()
    counts["train"]["token_start"] = 0
    counts["val"]["token_start"] = counts["train"]["tokens"]
    splits = {name: {key: counts[name][key] for key in ("stories", "tokens", "bytes", "token_start",
                                                        "unknown_chars")} for name in SPLITS}
    return splits, digest.hexdigest()


def _write_rows(temps: dict[str, Path], stories: int, shift: int) -> None:
    """stories.npy: the train rows, then the val rows with their token offsets moved past the train
    tokens, streamed a block at a time (a memmap would hold the pages of a big corpus's table)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.int64)), "fortran_order": False,
              "shape": (stories, 3)}
    with open(temps[STORIES_FILE], "wb") as out:
        np.lib.format.write_array_header_1_0(out, header)
        for name, move in (("train", 0), ("val", shift)):
            with open(temps[f"{name}.rows"], "rb") as part:
                while block := part.read(3 * 8 << 16):  # 65,536 rows
                    out.write((np.frombuffer(block, np.int64).reshape(-1, 3) + [0, move, move]).tobytes())


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Write via `write(temp_path)` beside `path`, then rename over it: readers never see half a file."""
    tmp = _temp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
