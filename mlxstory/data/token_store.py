"""The token store: a tokenized corpus on disk, split by story into train and val, verified on open.

A store is a folder of four files, each written atomically (temp file, then `os.replace`), the manifest
last, so a folder with a manifest is a finished store:

- `tokenizer.ron`  the tokenizer that produced the tokens
- `tokens.bin`     raw token ids (uint16 while the vocab fits, else uint32): the train stories, then the
                   val stories, each followed by `<|endoftext|>`
- `stories.npy`    int64 [n_stories, 3]: (index in the source, first token, end token) in tokens.bin order
- `manifest.json`  format version, source, split, per-split counts, dtype, sha256 of the two data files

Training memory-maps `tokens.bin`, so a store larger than RAM still trains.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from itertools import chain
from pathlib import Path

import numpy as np

from mlxstory.data.sources import SourceTexts
from mlxstory.data.tokenizer import Tokenizer
from mlxstory.errors import DataError

FORMAT = "mlxstory-token-store"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
TOKENS_FILE = "tokens.bin"
STORIES_FILE = "stories.npy"
TOKENIZER_FILE = "tokenizer.ron"
SPLITS = ("train", "val")
SPLIT_METHOD = (
    "numpy default_rng(seed).permutation of story indices; the first round(n * val_fraction) go to val; "
    "each split keeps source order"
)
_ENCODE_CHUNK = 512  # stories per encode call: bounds memory and paces the progress callback
_RERUN = "re-run `mlxstory tokenize`"

Progress = Callable[[int, int], None]


def split_indices(count: int, val_fraction: float = 0.1, seed: int = 1337) -> tuple[np.ndarray, np.ndarray]:
    """Source indices of the (train, val) stories: deterministic for (count, val_fraction, seed).

    Split by story, never inside one, so no val text leaks into training.
    """
    check_val_fraction(val_fraction)
    if count < 2:
        raise DataError(f"need at least 2 stories to make a train/val split, got {count}; give more data")
    n_val = min(max(1, round(count * val_fraction)), count - 1)
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


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
        texts: Sequence[str],
        tokenizer: Tokenizer,
        *,
        source: str | SourceTexts,
        val_fraction: float = 0.1,
        seed: int = 1337,
        progress: Progress | None = None,
    ) -> TokenStore:
        """Split `texts` by story, encode them with `tokenizer`, write the store to `out_dir`, open it.

        `source` names the data (a SourceTexts also records its description and any fallback reason).
        `progress(done, total)` is called as stories are encoded.
        """
        out = Path(out_dir)
        train_idx, val_idx = split_indices(len(texts), val_fraction, seed)
        if out.exists() and not out.is_dir():
            raise DataError(f"--out {out} is a file; give a folder for the token store")
        out.mkdir(parents=True, exist_ok=True)
        (out / MANIFEST_FILE).unlink(missing_ok=True)  # the old store is invalid from here until we finish

        dtype = token_dtype(tokenizer.vocab_size)
        tmp = _temp_path(out / TOKENS_FILE)
        try:
            stories, splits, tokens_sha256 = _write_tokens(
                tmp, texts, {"train": train_idx, "val": val_idx}, tokenizer, dtype, progress
            )
            os.replace(tmp, out / TOKENS_FILE)
        finally:
            tmp.unlink(missing_ok=True)

        _write_atomic(out / STORIES_FILE, lambda path: _save_npy(path, stories))
        _write_atomic(out / TOKENIZER_FILE, tokenizer.save)
        name, description, fallback = (
            (source.name, source.description, source.fallback_reason)
            if isinstance(source, SourceTexts)
            else (str(source), str(source), None)
        )
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": name,
            "source_description": description,
            **({"source_fallback_reason": fallback} if fallback else {}),
            "tokenizer_file": TOKENIZER_FILE,
            "tokens_file": TOKENS_FILE,
            "stories_file": STORIES_FILE,
            "vocab_size": tokenizer.vocab_size,
            "eot_id": tokenizer.eot_id,
            "dtype": dtype.name,
            "tokens_file_bytes": sum(split["tokens"] for split in splits.values()) * dtype.itemsize,
            "tokens_sha256": tokens_sha256,
            "stories_sha256": _sha256(out / STORIES_FILE),
            "split": {"seed": seed, "val_fraction": val_fraction, "method": SPLIT_METHOD},
            "splits": splits,
            "total": {key: sum(s[key] for s in splits.values()) for key in ("stories", "tokens", "bytes")},
        }
        text = json.dumps(manifest, indent=2) + "\n"
        _write_atomic(out / MANIFEST_FILE, lambda path: Path(path).write_text(text, encoding="utf-8"))
        tokens = np.memmap(out / TOKENS_FILE, dtype=dtype, mode="r")
        return cls(out, manifest, tokenizer, tokens, stories)  # no reload: a 65k-merge RON takes seconds

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
            if manifest["format_version"] != FORMAT_VERSION:
                raise ValueError(f"format version {manifest['format_version']}, this mlxstory reads "
                                 f"{FORMAT_VERSION}")
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
    source: SourceTexts,
    vocab_size: int,
    *,
    val_fraction: float = 0.1,
    seed: int = 1337,
    on_train_progress: Progress | None = None,
    on_encode_progress: Progress | None = None,
) -> TokenStore:
    """Split first, train the tokenizer on the train stories only, then write the store.

    What `mlxstory tokenize` and a self-tokenizing `mlxstory train` both run.
    """
    train_idx, _ = split_indices(len(source.texts), val_fraction, seed)
    tokenizer = Tokenizer.train((source.texts[i] for i in train_idx), vocab_size=vocab_size,
                                progress=on_train_progress)
    return TokenStore.create(out_dir, source.texts, tokenizer, source=source, val_fraction=val_fraction,
                             seed=seed, progress=on_encode_progress)


def _write_tokens(
    path: Path,
    texts: Sequence[str],
    split_idx: dict[str, np.ndarray],
    tokenizer: Tokenizer,
    dtype: np.dtype,
    progress: Progress | None,
) -> tuple[np.ndarray, dict[str, dict], str]:
    """Encode and append each split's stories (eot after each) to `path`, a chunk of stories at a time.

    Returns the stories table (source index, start, end), per-split counts, and the file's sha256.
    """
    rows: list[np.ndarray] = []
    splits: dict[str, dict] = {}
    digest = hashlib.sha256()
    position, done, total = 0, 0, sum(len(idx) for idx in split_idx.values())
    with open(path, "wb") as file:
        for name, indices in split_idx.items():
            start, text_bytes, unknown = position, 0, 0
            for first in range(0, len(indices), _ENCODE_CHUNK):
                chunk_idx = indices[first : first + _ENCODE_CHUNK]
                chunk = [texts[i] for i in chunk_idx]
                encoded = tokenizer.encode_batch(chunk, on_unknown="ignore")  # counted below instead
                lengths = np.fromiter((len(ids) + 1 for ids in encoded), np.int64, len(encoded))
                flat = chain.from_iterable(chain(ids, (tokenizer.eot_id,)) for ids in encoded)
                array = np.fromiter(flat, dtype=dtype, count=int(lengths.sum()))
                ends = position + np.cumsum(lengths)
                rows.append(np.stack([chunk_idx.astype(np.int64), ends - lengths, ends], axis=1))
                file.write(array.tobytes())
                digest.update(array.tobytes())
                unknown += int(np.count_nonzero(array == tokenizer.unk_id))
                text_bytes += sum(len(text.encode("utf-8")) for text in chunk)
                position = int(ends[-1])
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            splits[name] = {"stories": len(indices), "tokens": position - start, "bytes": text_bytes,
                            "token_start": start, "unknown_chars": unknown}
    return np.concatenate(rows), splits, digest.hexdigest()


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


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as file:  # np.save(path) would append ".npy" to the temp name
        np.save(file, array, allow_pickle=False)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
