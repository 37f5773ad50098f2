"""The original gpt-rs project's dataset file, read and written, so tokenized data moves both ways.

gpt-rs saves its tokenizer and the encoded stories together in one RON file (`ron::to_string` of its
`Dataset` struct):

    (char_to_id: {'a': 0, ...}, id_to_char: {0: 'a', ...},
     mergings: [(from: (3, 5), to: 73), ...], encoded_data: [[12, 80, ...], ...])

Its alphabet ids follow a Rust HashSet's order, not code-point order, so the alphabet is kept in the file's
id order. gpt-rs has no special tokens: mlxstory's `<|endoftext|>` and `<|unk|>` get the two ids after its
vocabulary, and cannot be written back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlxstory.data.tokenizer import Tokenizer, read_ron_file
from mlxstory.errors import TokenizerError
from mlxstory.formats import ron

FIELDS = ("char_to_id", "id_to_char", "mergings", "encoded_data")


@dataclass
class GptrsDataset:
    """A gpt-rs dataset: its tokenizer and one token list per story."""

    tokenizer: Tokenizer
    stories: list[list[int]]


def read_gptrs_dataset(path: str | Path) -> GptrsDataset:
    """Load a gpt-rs dataset RON file; a bad or inconsistent file raises TokenizerError naming it."""
    value = read_ron_file(path, "gpt-rs dataset")
    try:
        return _from_value(value)
    except (TokenizerError, KeyError, TypeError, ValueError, IndexError) as error:
        detail = error if isinstance(error, TokenizerError) else f"bad or missing field {error}"
        raise TokenizerError(f"{path}: not a usable gpt-rs dataset ({detail})") from None


def _from_value(value: object) -> GptrsDataset:
    if not isinstance(value, dict) or any(name not in value for name in FIELDS):
        raise TokenizerError(f"expected a struct with fields {', '.join(FIELDS)}")
    id_to_char = value["id_to_char"]
    n = len(id_to_char)
    if sorted(id_to_char) != list(range(n)):
        raise TokenizerError(f"id_to_char ids are not 0..{n - 1}")
    alphabet = [id_to_char[i] for i in range(n)]
    if dict(value["char_to_id"]) != {c: i for i, c in enumerate(alphabet)}:
        raise TokenizerError("char_to_id is not the inverse of id_to_char")
    merges = []
    for merging in value["mergings"]:
        a, b = merging["from"]
        merges.append(((a, b), merging["to"]))
    tokenizer = Tokenizer(alphabet, merges)
    token_count = n + len(merges)  # gpt-rs ids; ours add the special tokens after these
    stories = [list(entry) for entry in value["encoded_data"]]
    for k, story in enumerate(stories):
        if story and not (0 <= min(story) and max(story) < token_count):
            raise TokenizerError(f"encoded_data entry {k} holds ids outside 0..{token_count - 1}")
    return GptrsDataset(tokenizer, stories)


def write_gptrs_dataset(path: str | Path, tokenizer: Tokenizer, stories: list[list[int]]) -> None:
    """Write `tokenizer` and the encoded `stories` in gpt-rs's dataset format (compact, as gpt-rs writes
    it). Special tokens have no gpt-rs id, so stories holding them raise TokenizerError."""
    if set(tokenizer.do_not_merge) != set('\n"'):
        raise TokenizerError(f"this tokenizer's do-not-merge set is {tokenizer.do_not_merge!r}, gpt-rs's is "
                             "always '\\n\"', so gpt-rs would encode differently; retrain with the default")
    token_count = len(tokenizer.alphabet) + len(tokenizer.merges)
    for k, story in enumerate(stories):
        if story and not (0 <= min(story) and max(story) < token_count):
            bad = next(i for i in story if not 0 <= i < token_count)
            raise TokenizerError(f"story {k} holds token id {bad}, which gpt-rs has no id for (it has 0.."
                                 f"{token_count - 1}, no special tokens); encode the stories without "
                                 "special tokens or unknown characters")
    value = ron.Struct({
        "char_to_id": {ron.Char(c): i for i, c in enumerate(tokenizer.alphabet)},
        "id_to_char": {i: ron.Char(c) for i, c in enumerate(tokenizer.alphabet)},
        "mergings": [ron.Struct({"from": (a, b), "to": z}) for (a, b), z in tokenizer.merges],
        "encoded_data": [[int(i) for i in story] for story in stories],
    })
    ron.dump(value, path, pretty=False)
