"""Byte-pair encoding over characters, with the rules of the original gpt-rs project.

- The base alphabet is every distinct character of the training text, ids 0..n-1 in code-point order.
- Merges happen only inside words: the text is split with `' ?[^ \\n"]+|[ \\n"]'`, so a token may
  start with a space but nothing merges onto a following space, and `"` and `\\n` (the do-not-merge set)
  never merge.
- Each step merges the most frequent pair (pairs counted as overlapping windows, as the original does);
  ties go to the largest (left id, right id). Special tokens (`<|endoftext|>`, `<|unk|>`) follow the merges.

Training keeps pair counts over the table of unique words and updates them incrementally after each merge,
picking the next pair from a lazy max-heap (as HF tokenizers and rustbpe do) instead of recounting the
corpus. Encoding caches the ids of every space-separated chunk it has seen, so a story costs one
`str.split` and one dict lookup per word; a batch of stories for the token store (`encode_stories`)
is split and hashed in C by pyarrow, looks up each distinct chunk once, and is laid out by numpy.
"""

from __future__ import annotations

import heapq
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from functools import reduce
from heapq import heapify, heappop, heappush
from itertools import chain, islice
from operator import add, iadd
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mlxstory.errors import TokenizerError

EOT = "<|endoftext|>"
UNK = "<|unk|>"
SPECIAL_TOKENS = (EOT, UNK)
DO_NOT_MERGE = '\n"'
FORMAT_VERSION = 1
FILE_STRUCT_NAME = "MlxstoryTokenizer"

# A pair (left, right) is one int, left << 24 | right: cheaper to hash than a tuple, and it orders like
# the tuple, so a heap entry -(count << 48 | pair) pops the most frequent pair, ties to the largest pair.
_ID_BITS = 24
_ID_MASK = (1 << _ID_BITS) - 1
_PAIR_BITS = 2 * _ID_BITS
_PAIR_MASK = (1 << _PAIR_BITS) - 1
MAX_VOCAB_SIZE = 1 << 20  # ids must fit in _ID_BITS and be valid chr() code points (see _bpe)
_CACHE_LIMIT = 1 << 20  # chunks cached before a cache is cleared (bounds memory on huge corpora)
_BATCH_CHARS = 1 << 26  # characters split at once by `_chunk_ids`

OnUnknown = Literal["warn", "ignore", "raise"]


class UnknownCharWarning(UserWarning):
    """Characters outside the tokenizer's alphabet were encoded as `<|unk|>`."""


def split_pattern(do_not_merge: str = DO_NOT_MERGE) -> str:
    """The word-splitting regex for a do-not-merge set; the default gives `' ?[^ \\n"]+|[ \\n"]'`.
    A space in the set stops words from taking a leading space."""
    chars = " " + "".join(dict.fromkeys(c for c in do_not_merge if c != " "))
    escaped = "".join({"\n": r"\n", "\t": r"\t", "\r": r"\r"}.get(c, "\\" + c if c in "\\]^-[" else c)
                      for c in chars)
    return f"{'' if ' ' in do_not_merge else ' ?'}[^{escaped}]+|[{escaped}]"


class Tokenizer:
    """A trained BPE vocabulary: alphabet (ids 0..n-1), ordered merges, then special tokens."""

    def __init__(
        self,
        alphabet: Sequence[str],
        merges: Sequence[tuple[tuple[int, int], int]],
        *,
        do_not_merge: str = DO_NOT_MERGE,
        special_tokens: Sequence[str] = SPECIAL_TOKENS,
    ) -> None:
        self.alphabet: list[str] = list(alphabet)
        self.merges: list[tuple[tuple[int, int], int]] = [((int(a), int(b)), int(z)) for (a, b), z in merges]
        self.do_not_merge = do_not_merge
        self.split_pattern = split_pattern(do_not_merge)
        self.special_tokens: dict[str, int] = self._check(special_tokens)
        self.vocab_size = len(self.alphabet) + len(self.merges) + len(self.special_tokens)
        self.eot_id = self.special_tokens[EOT]
        self.unk_id = self.special_tokens[UNK]

        # For `_bpe`: chars -> chr(id) (unknown -> chr(unk)), merged pair as two chars -> new id, and back.
        table = {ord(c): chr(i) for i, c in enumerate(self.alphabet)}
        self._char_table = _Translation(table, chr(self.unk_id))
        pairs = [chr(a) + chr(b) for (a, b), _ in self.merges]
        made = range(len(self.alphabet), len(self.alphabet) + len(pairs))  # the merges' ids, also their ranks
        self._rank_of_pair = dict(zip(pairs, made, strict=True))
        self._merge_chars: list[tuple[str, str] | None] = [None] * len(self.alphabet)  # id -> (pair, chr(id))
        self._merge_chars += zip(pairs, map(chr, made), strict=True)
        self._strings: list[str] = list(self.alphabet)
        for (a, b), _ in self.merges:
            self._strings.append(self._strings[a] + self._strings[b])
        self._strings.extend(self.special_tokens)
        self._words: dict[str, list[int]] = {}  # regex piece -> ids (seeded by training)
        self._findall = re.compile(self.split_pattern).findall
        # With a space in the do-not-merge set, a spaced chunk is never disjoint from it: regex, as it must.
        self._one_word = frozenset(do_not_merge).isdisjoint
        self._heads = _ChunkCache(self, "")  # first chunk of a text (no leading space)
        self._spaced = _ChunkCache(self, " ")  # every later chunk, keyed without its leading space
        self._unknown_seen = 0

    def _check(self, special_tokens: Sequence[str]) -> dict[str, int]:
        """Validate alphabet and merges; return the special tokens' ids (right after the merges)."""
        n = len(self.alphabet)
        if len(set(self.alphabet)) != n or any(len(c) != 1 for c in self.alphabet):
            raise TokenizerError("tokenizer alphabet must be distinct single characters")
        for rank, ((a, b), z) in enumerate(self.merges):
            if z != n + rank or not (0 <= a < z and 0 <= b < z):
                raise TokenizerError(f"merge #{rank} ({a}, {b}) -> {z} is out of order; merge k must make id "
                                     f"{n} + k from smaller ids")
        if EOT not in special_tokens or UNK not in special_tokens or len(set(special_tokens)) != len(
                special_tokens):
            raise TokenizerError(f"special tokens must be distinct and include {EOT} and {UNK}")
        first = n + len(self.merges)
        if first + len(special_tokens) > MAX_VOCAB_SIZE:
            raise TokenizerError(f"vocabulary of {first + len(special_tokens)} tokens is over the "
                                 f"{MAX_VOCAB_SIZE} this tokenizer supports")
        return {text: first + i for i, text in enumerate(special_tokens)}

    # -- training -----------------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 2048,
        *,
        do_not_merge: str = DO_NOT_MERGE,
        special_tokens: Sequence[str] = SPECIAL_TOKENS,
        progress: Callable[[int, int], None] | None = None,
    ) -> Tokenizer:
        """Learn `vocab_size - alphabet - specials` merges from `texts` (one story per string).

        `progress(done, total)` is called every 100 merges and at the end, for progress bars.
        """
        if isinstance(texts, str):  # one story, not an iterable of one-character stories
            texts = [texts]
        counts = WordCounts()
        iterator = iter(texts)
        while batch := list(islice(iterator, 1024)):
            counts.add(batch)
        return cls.from_word_counts(counts, vocab_size, do_not_merge=do_not_merge,
                                    special_tokens=special_tokens, progress=progress)

    @classmethod
    def from_word_counts(
        cls,
        counts: WordCounts,
        vocab_size: int = 2048,
        *,
        do_not_merge: str = DO_NOT_MERGE,
        special_tokens: Sequence[str] = SPECIAL_TOKENS,
        progress: Callable[[int, int], None] | None = None,
    ) -> Tokenizer:
        """`train` from chunk counts gathered elsewhere (e.g. by worker processes, one batch of stories
        each): the same counts give the same merges, however the text was divided."""
        word_counts = counts.words(re.compile(split_pattern(do_not_merge)))
        alphabet = sorted(set().union(*word_counts))
        if not alphabet:
            raise TokenizerError("cannot train a tokenizer on empty text; give at least one non-empty story")
        need = len(alphabet) + len(special_tokens)
        if vocab_size < need:
            raise TokenizerError(
                f"There are {len(alphabet)} unique chars in data, but the requested token count was "
                f"{vocab_size}. Ask for a vocab size of at least {need} ({len(alphabet)} chars + "
                f"{len(special_tokens)} special tokens).")
        if vocab_size > MAX_VOCAB_SIZE:
            raise TokenizerError(f"vocab size {vocab_size} is over the maximum {MAX_VOCAB_SIZE}; use less")

        char_ids = {c: i for i, c in enumerate(alphabet)}
        word_texts = [w for w in word_counts if len(w) > 1]  # one-char words hold no pair
        words = [[char_ids[c] for c in w] for w in word_texts]
        freqs = [word_counts[w] for w in word_texts]
        merges = _learn_merges(words, freqs, len(alphabet), vocab_size - need, progress)
        if len(merges) < vocab_size - need:
            raise TokenizerError(
                f"Not enough data supplied to find a most common pair after {len(merges)} merges: "
                f"ask for a vocab size of at most {need + len(merges)}, or give more text.")
        tokenizer = cls(alphabet, merges, do_not_merge=do_not_merge, special_tokens=special_tokens)
        tokenizer._words = dict(zip(word_texts, words, strict=True))  # merged words: their own encodings
        return tokenizer

    # -- encoding -----------------------------------------------------------------------------------

    def encode(self, text: str, *, on_unknown: OnUnknown = "warn") -> list[int]:
        """Token ids of `text`. Characters outside the alphabet become `<|unk|>` (see `on_unknown`):
        "warn" issues one UnknownCharWarning per call with the count, "ignore" stays silent, "raise"
        raises TokenizerError."""
        seen = self._unknown_seen
        parts = text.split(" ")
        ids = reduce(iadd, map(self._spaced.__getitem__, islice(parts, 1, None)), self._heads[parts[0]][:])
        if self._unknown_seen != seen:
            self._report_unknown(self._unknown_seen - seen, on_unknown)
        return ids

    def encode_batch(self, texts: Iterable[str], *, on_unknown: OnUnknown = "warn") -> list[list[int]]:
        """`encode` for many stories at once, with one unknown-character report for the whole batch."""
        seen = self._unknown_seen
        heads, spaced = self._heads, self._spaced.__getitem__
        out = []
        for text in texts:
            parts = text.split(" ")
            out.append(reduce(iadd, map(spaced, islice(parts, 1, None)), heads[parts[0]][:]))
        if self._unknown_seen != seen:
            self._report_unknown(self._unknown_seen - seen, on_unknown)
        return out

    encode_story_batch = encode_batch  # the name the team contract uses

    def encode_stories(self, texts: Iterable[str], dtype: Any = "uint32") -> tuple[np.ndarray, np.ndarray]:
        """The token store's layout for many stories: one numpy array of their ids, `<|endoftext|>` after
        each, and each story's end offset in it. Same ids as `encode_batch`; unknown characters are
        silent (count `unk_id` in the result).

        Each distinct chunk is looked up once; numpy then lays out every occurrence's ids (see
        `_chunk_ids`). That is what makes a big corpus encode at C speed rather than a dict lookup and a
        list extend per word."""
        texts = texts if isinstance(texts, list) else list(texts)
        if _too_big(texts):
            half = len(texts) // 2
            (left, left_ends), (right, right_ends) = (self.encode_stories(texts[:half], dtype),
                                                      self.encode_stories(texts[half:], dtype))
            return np.concatenate([left, right]), np.concatenate([left_ends, right_ends + len(left)])
        if not texts:
            return np.zeros(0, dtype), np.zeros(0, np.int64)
        ids, chunks, starts = _chunk_ids(texts)
        words = _texts(chunks)
        heads_at = starts[:-1]
        head_words, head_slot = np.unique(ids[heads_at], return_inverse=True)
        # table of ids: every distinct chunk as a later word, each distinct first chunk, then <|endoftext|>
        table = list(map(self._spaced.__getitem__, words))
        table += map(self._heads.__getitem__, [words[i] for i in head_words.tolist()])
        table.append([self.eot_id])
        sizes = np.fromiter(map(len, table), np.int32, len(table))
        flat = np.fromiter(chain.from_iterable(table), dtype, int(sizes.sum(dtype=np.int64)))
        index = np.int32 if len(flat) < 2**31 else np.int64  # positions in `flat`
        sequence = ids.astype(np.int32)  # table rows, in text order, with <|endoftext|> after each story
        sequence[heads_at] = len(words) + head_slot
        sequence = np.insert(sequence, starts[1:], len(table) - 1)
        lengths = sizes[sequence]
        ends = np.cumsum(lengths, dtype=np.int64)
        story_ends = ends[starts[1:] + np.arange(len(texts))]
        if not lengths.all():  # chunks with no ids (an empty first chunk) take no place
            sequence = sequence[lengths > 0]
            lengths, ends = lengths[lengths > 0], ends[lengths > 0]
        # where each output id sits in `flat`: runs of +1 inside a chunk's ids, a jump at each chunk
        first = (np.cumsum(sizes, dtype=index) - sizes)[sequence]
        del sequence
        where = np.ones(int(ends[-1]), index)
        where[0] = first[0]
        where[ends[:-1]] = first[1:] - first[:-1] - lengths[:-1] + 1
        return flat[np.cumsum(where, out=where)], story_ends

    def _report_unknown(self, count: int, on_unknown: OnUnknown) -> None:
        message = (f"{count} character(s) outside the tokenizer's alphabet were encoded as {UNK} "
                   f"(id {self.unk_id}); train the tokenizer on text that contains them")
        if on_unknown == "raise":
            raise TokenizerError(message)
        if on_unknown == "warn":
            warnings.warn(message, UnknownCharWarning, stacklevel=3)

    def _encode_chunk(self, chunk: str) -> tuple[list[int], int]:
        """Ids of one space-delimited chunk (its leading space included) and how many unknown characters
        it held. A chunk holding no do-not-merge character is one regex word, so the regex is skipped."""
        if self._one_word(chunk):
            return self._encode_word(chunk)
        ids: list[int] = []
        unknown = 0
        for word in self._findall(chunk):
            word_ids, word_unknown = self._encode_word(word)
            ids += word_ids
            unknown += word_unknown
        return ids, unknown

    def _encode_word(self, word: str) -> tuple[list[int], int]:
        """Ids of one regex word, cached unless it holds unknown characters, and how many it holds."""
        ids = self._words.get(word)
        if ids is None:
            ids = self._bpe(word)
            if self.unk_id in ids:
                return ids, ids.count(self.unk_id)
            if len(self._words) < _CACHE_LIMIT:
                self._words[word] = ids
        return ids, 0

    def _bpe(self, word: str) -> list[int]:
        """Apply the merges to one word, lowest rank first (same result as applying them in order).

        The word is held as a string of chr(id) so that finding and merging pairs run in C: this is the
        hot spot of encoding with a cold cache. A heap holds one rank (an id, never 0) per occurrence of a
        mergeable pair: the word's pairs at the start, then the two pairs around each token a merge makes,
        the only pairs a merge creates. Its top is the lowest rank present, or a pair that merges took
        apart (skipped); merging the leftmost occurrence once per entry merges them all left to right, as
        `str.replace` would, since the pairs pushed meanwhile rank higher."""
        s = word.translate(self._char_table)
        rank_of, merge_chars = self._rank_of_pair.get, self._merge_chars
        heap = list(filter(None, map(rank_of, map(add, s, s[1:]))))
        heapify(heap)
        while heap:
            pair, new = merge_chars[heappop(heap)]
            if pair in s:
                left, _, right = s.partition(pair)
                s = left + new + right
                if left and (rank := rank_of(left[-1] + new)):
                    heappush(heap, rank)
                if right and (rank := rank_of(new + right[0])):
                    heappush(heap, rank)
        return list(map(ord, s))

    # -- decoding -----------------------------------------------------------------------------------

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids; special tokens decode to their names (e.g. `<|endoftext|>`)."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)  # numpy / mlx arrays too
        try:
            if ids and min(ids) < 0:
                raise IndexError
            return "".join(map(self._strings.__getitem__, ids))
        except (IndexError, TypeError):
            bad = next((i for i in ids if not isinstance(i, int) or not 0 <= i < self.vocab_size), ids)
            raise TokenizerError(f"token id {bad!r} is outside this tokenizer's vocabulary "
                                 f"(0..{self.vocab_size - 1}); was it made with another tokenizer?") from None

    def token_text(self, token_id: int) -> str:
        """The text one token stands for."""
        return self.decode([token_id])

    # -- files --------------------------------------------------------------------------------------

    def to_ron_value(self) -> dict:
        """Everything needed to rebuild this tokenizer, as a RON value (see `save`)."""
        from mlxstory.formats import ron

        return ron.Struct({
            "format_version": FORMAT_VERSION,
            "alphabet": [ron.Char(c) for c in self.alphabet],
            "merges": [[a, b, z] for (a, b), z in self.merges],  # [left, right, new id], in merge order
            "special_tokens": dict(self.special_tokens),
            "split_pattern": self.split_pattern,
            "do_not_merge": [ron.Char(c) for c in self.do_not_merge],
        }, name=FILE_STRUCT_NAME)

    def save(self, path: str | Path) -> None:
        """Write `tokenizer.ron` (format version, alphabet, merges, special ids, split rules)."""
        from mlxstory.formats import ron

        ron.dump(self.to_ron_value(), path, pretty=True)

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Read a file written by `save`; anything else raises TokenizerError naming the file."""
        value = read_ron_file(path, "tokenizer file")
        try:
            return cls.from_ron_value(value)
        except (TokenizerError, KeyError, TypeError, ValueError, AttributeError) as error:
            detail = error if isinstance(error, TokenizerError) else f"bad or missing field {error}"
            raise TokenizerError(f"{path}: not a usable mlxstory tokenizer file ({detail}); "
                                 "re-create it with `mlxstory tokenize`") from None

    @classmethod
    def from_ron_value(cls, value: dict) -> Tokenizer:
        """Rebuild from `to_ron_value`'s shape, checking that ids and split rules agree."""
        if not isinstance(value, dict) or "format_version" not in value:
            raise TokenizerError("no format_version field")
        if value["format_version"] != FORMAT_VERSION:
            raise TokenizerError(f"format version {value['format_version']}, this mlxstory reads "
                                 f"{FORMAT_VERSION}")
        merges = [((a, b), z) for a, b, z in value["merges"]]
        special = dict(value["special_tokens"])
        tokenizer = cls(list(value["alphabet"]), merges, do_not_merge="".join(value["do_not_merge"]),
                        special_tokens=list(special))
        if tokenizer.special_tokens != special:
            raise TokenizerError(f"special token ids {special} do not follow the merges "
                                 f"(expected {tokenizer.special_tokens})")
        if value["split_pattern"] != tokenizer.split_pattern:
            raise TokenizerError(f"split pattern {value['split_pattern']!r} does not match the do-not-merge "
                                 f"set (expected {tokenizer.split_pattern!r})")
        return tokenizer

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}, alphabet={len(self.alphabet)}, "
                f"merges={len(self.merges)}, eot_id={self.eot_id})")


def read_ron_file(path: str | Path, what: str) -> Any:
    """`ron.load` whose failures are one-line TokenizerErrors: parse errors as path:line:col."""
    from mlxstory.formats import ron

    try:
        return ron.load(path)
    except ron.RonError as error:
        raise TokenizerError(f"{path}:{error}") from None
    except OSError as error:
        raise TokenizerError(f"cannot read {what} {path}: {error.strerror}") from None


class _Translation(dict):
    """A `str.translate` table that maps every character it lacks to `default`."""

    def __init__(self, table: dict[int, str], default: str) -> None:
        super().__init__(table)
        self.default = default

    def __missing__(self, key: int) -> str:
        return self.default


class _ChunkCache(dict):
    """chunk -> ids; a miss encodes the chunk (with `prefix` in front). Chunks holding unknown
    characters are not cached, so every occurrence is counted in `_unknown_seen`."""

    def __init__(self, tokenizer: Tokenizer, prefix: str) -> None:
        super().__init__()
        self.tokenizer, self.prefix = tokenizer, prefix

    def __missing__(self, chunk: str) -> list[int]:
        ids, unknown = self.tokenizer._encode_chunk(self.prefix + chunk)
        if unknown:
            self.tokenizer._unknown_seen += unknown
            return ids
        if len(self) >= _CACHE_LIMIT:
            self.clear()
        self[chunk] = ids
        return ids


class WordCounts:
    """How often each space-separated chunk occurs in some stories: all that training needs of the text.

    Counting chunks first is much faster than running the split regex over every story (far fewer
    distinct chunks than words, and a split at spaces, done in C by `_chunk_ids`, beats the regex).
    Counts of separate batches of stories add up (`update`), so worker processes can count in parallel
    and the parent sums their counts.
    """

    def __init__(self) -> None:
        # Batches of counts not summed yet: (distinct chunks as UTF-8 bytes, an arrow array; how often
        # each began a story; how often each occurred, heads included). Summing is arrow's hashing plus
        # np.bincount, done when the unsummed rows outgrow the summed ones, so it costs little per batch
        # and no Python string is made until the counts are read (the parent of the worker processes
        # sums one batch per chunk of text; a dict merge there would cap how many workers it can feed).
        self._parts: list[tuple[Any, np.ndarray, np.ndarray]] = []
        self._summed_rows = 0

    def __getstate__(self) -> tuple:  # what a worker process sends back: arrow buffers and two arrays
        return self._sum()

    def __setstate__(self, state: tuple) -> None:
        self._parts, self._summed_rows = [state], len(state[0])

    def add(self, texts: Sequence[str], times: int = 1) -> None:
        """Count the chunks of `texts` (`times` times; negative takes them away again)."""
        texts = texts if isinstance(texts, list) else list(texts)
        if _too_big(texts):
            half = len(texts) // 2
            self.add(texts[:half], times)
            self.add(texts[half:], times)
            return
        ids, chunks, starts = _chunk_ids(texts)
        self._append(chunks, np.bincount(ids[starts[:-1]], minlength=len(chunks)) * times,
                     np.bincount(ids, minlength=len(chunks)) * times)

    def update(self, other: WordCounts) -> None:
        for part in list(other._parts):  # a copy: `counts.update(counts)` doubles, as a Counter would
            self._append(*part)

    def _append(self, chunks: Any, heads: np.ndarray, counts: np.ndarray) -> None:
        import pyarrow as pa

        self._parts.append((chunks.cast(pa.binary()), heads, counts))
        if sum(len(part[0]) for part in self._parts) > 2 * max(self._summed_rows, 1 << 16):
            self._sum()

    def _sum(self) -> tuple[Any, np.ndarray, np.ndarray]:
        """All counts as one batch: each distinct chunk once, in order of first sight."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if not self._parts:
            return pa.array([], pa.binary()), np.zeros(0, np.int64), np.zeros(0, np.int64)
        if len(self._parts) > 1:
            encoded = pc.dictionary_encode(pa.concat_arrays([part[0] for part in self._parts]))
            rows, n = encoded.indices.to_numpy(), len(encoded.dictionary)
            heads, counts = (np.bincount(rows, np.concatenate([part[k] for part in self._parts]), n)
                             .round().astype(np.int64) for k in (1, 2))  # float sums of ints: exact
            self._parts, self._summed_rows = [(encoded.dictionary, heads, counts)], n
        return self._parts[0]

    @property
    def heads(self) -> Counter[str]:
        """How often each chunk began a story (nonzero counts)."""
        chunks, heads, _ = self._sum()
        return Counter({chunk: n for chunk, n in zip(_texts(chunks), heads.tolist(), strict=True) if n})

    @property
    def spaced(self) -> Counter[str]:
        """How often each chunk occurred anywhere, story beginnings included (nonzero counts)."""
        chunks, _, counts = self._sum()
        return Counter({chunk: n for chunk, n in zip(_texts(chunks), counts.tolist(), strict=True) if n})

    def words(self, pattern: re.Pattern) -> Counter[str]:
        """Occurrences of each regex piece (a chunk after the first gets its leading space back)."""
        chunks, heads, counts = self._sum()
        chunks = _texts(chunks)
        words: Counter[str] = Counter()
        for prefix, times in (("", heads), (" ", counts - heads)):
            for chunk, count in zip(chunks, times.tolist(), strict=True):
                if count:
                    for word in pattern.findall(prefix + chunk):
                        words[word] += count
        return words


def _chunk_ids(texts: list[str]) -> tuple[np.ndarray, Any, np.ndarray]:
    """`texts` split at every space, in C (pyarrow's split and hash): (ids, chunks, starts) where
    `chunks[ids[k]]` is the k-th chunk of the whole batch, `chunks` (an arrow array; `_texts` gives the
    strings) are distinct in order of first occurrence, and story i's chunks are ids[starts[i]:starts[i +
    1]] (as `text.split(" ")` gives them). Text with no UTF-8 form (a lone surrogate) is split in Python
    instead, its chunks kept as bytes with the surrogates passed through.

    Memory comes from the system allocator, which hands big blocks back when they are freed; arrow's
    default pool keeps them (tens of MB more per worker process)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    pool = pa.system_memory_pool()
    small = sum(map(len, texts)) < 2**29  # at most 4 UTF-8 bytes a character: 32-bit offsets will do
    try:
        stories = pa.array(texts, pa.string() if small else pa.large_string(), memory_pool=pool)
    except UnicodeEncodeError:
        return _chunk_ids_slowly(texts)
    chunks = pc.split_pattern(stories, " ", memory_pool=pool)
    encoded = pc.dictionary_encode(chunks.flatten(), memory_pool=pool)
    return encoded.indices.to_numpy(), encoded.dictionary, chunks.offsets.to_numpy()


def _chunk_ids_slowly(texts: list[str]) -> tuple[np.ndarray, Any, np.ndarray]:
    import pyarrow as pa

    rows: dict[str, int] = {}
    parts = [text.split(" ") for text in texts]
    ids = np.fromiter((rows.setdefault(chunk, len(rows)) for part in parts for chunk in part), np.int32)
    chunks = pa.array([chunk.encode("utf-8", "surrogatepass") for chunk in rows], pa.binary())
    return ids, chunks, np.cumsum([0, *map(len, parts)], dtype=np.int64)


def _texts(chunks: Any) -> list[str]:
    """The strings of an arrow array of chunks (UTF-8 bytes, lone surrogates passed through)."""
    import pyarrow as pa

    try:
        return chunks.cast(pa.string()).to_pylist()
    except pa.ArrowInvalid:
        return [chunk.decode("utf-8", "surrogatepass") for chunk in chunks.to_pylist()]


def _too_big(texts: list[str]) -> bool:
    """Whether to take `texts` in halves: it bounds the arrays of one `_chunk_ids` call (and keeps its
    offsets 32-bit); the token store's chunks of a few MB never need it."""
    return len(texts) > 1 and sum(map(len, texts)) > _BATCH_CHARS


def _learn_merges(
    words: list[list[int]],
    freqs: list[int],
    first_id: int,
    n_merges: int,
    progress: Callable[[int, int], None] | None,
) -> list[tuple[tuple[int, int], int]]:
    """Merge the most frequent pair `n_merges` times, in place in `words` (each occurring `freqs` times)."""
    counts: defaultdict[int, int] = defaultdict(int)  # pair -> occurrences (overlapping windows)
    where: defaultdict[int, set[int]] = defaultdict(set)  # pair -> words that held it (may be stale)
    for i, (w, f) in enumerate(zip(words, freqs, strict=True)):
        for a, b in zip(w, w[1:], strict=False):
            counts[a << _ID_BITS | b] += f
            where[a << _ID_BITS | b].add(i)
    heap = [-(c << _PAIR_BITS | p) for p, c in counts.items()]
    heapq.heapify(heap)
    merges = []
    for z in range(first_id, first_id + n_merges):
        while True:  # lazy heap: counts only fall after a push, so a fresh top is the true maximum
            if not heap:  # every word is a single token: nothing left to merge
                return merges
            top = -heapq.heappop(heap)
            pair, count = top & _PAIR_MASK, top >> _PAIR_BITS
            now = counts.get(pair, 0)
            if now == count:
                break
            if now > 0:
                heapq.heappush(heap, -(now << _PAIR_BITS | pair))
        a, b = pair >> _ID_BITS, pair & _ID_MASK
        merges.append(((a, b), z))
        del counts[pair]
        delta: defaultdict[int, int] = defaultdict(int)
        za, zb = z << _ID_BITS, z
        for i in where.pop(pair):
            w, f, j = words[i], freqs[i], -1
            left = w.count(a)  # occurrences of a still ahead of j
            while left:  # merge left to right; neighbours' pairs change, counted in delta
                j = w.index(a, j + 1)
                left -= 1
                if j + 1 == len(w) or w[j + 1] != b:
                    continue
                w[j:j + 2] = (z,)
                left -= a == b  # the b just merged was also an a
                if j:
                    x = w[j - 1] << _ID_BITS
                    delta[x | a] -= f
                    delta[x | zb] += f
                    where[x | zb].add(i)
                if j + 1 < len(w):
                    y = w[j + 1]
                    delta[b << _ID_BITS | y] -= f
                    delta[za | y] += f
                    where[za | y].add(i)
        for p, d in delta.items():
            if d and p != pair:
                c = counts[p] = counts[p] + d
                if c > 0 and (p >> _ID_BITS == z or p & _ID_MASK == z):  # only new pairs grow
                    heapq.heappush(heap, -(c << _PAIR_BITS | p))
        if progress is not None and (len(merges) % 100 == 0 or len(merges) == n_merges):
            progress(len(merges), n_merges)
    if progress is not None and n_merges == 0:
        progress(0, 0)
    return merges
