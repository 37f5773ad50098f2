"""Tokenizer speed: mlxstory's BPE beside HF `tokenizers`, trained and encoding the same text in one run.

    python -m benchmarks.bench_tokenizer [--data PARQUET] [--vocab-size 4096] [--repeats 5] [--original]

Trains on every story of the sample, then encodes them one `encode` call per story. The machine is
shared, and a busy neighbour only ever makes a run slower, so each figure is the best of `--repeats`.
Encode figures count UTF-8 bytes of story text. mlxstory's encoder caches word ids, so it is timed three
ways: `after_train` (the tokenizer `train` returned, which already knows the training words), `cold` (a
tokenizer just loaded from tokenizer.ron, empty caches) and `warm` (a second pass).

Merges are checked against `original_train`, a transcription of the original gpt-rs algorithm (recount
every pair of every story per merge), on the first 200 stories; `--original` runs it on the whole sample
at the full vocab size too (minutes) and reports its time. HF's BPE gets the same split regex, but breaks
ties towards the smallest pair and numbers its tokens differently, so only the token strings are compared.
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mlxstory.data.tokenizer import EOT, UNK, Tokenizer, split_pattern

DEFAULT_DATA = Path("../shared/data/tinystories-sample.parquet")


Merges = list[tuple[tuple[int, int], int]]


def original_train(texts: list[str], vocab_size: int, n_special: int = 2) -> Merges:
    """gpt-rs's trainer (with the tie rule made explicit): per merge, count all overlapping pairs of every
    story, skipping `"`/newline pairs and pairs whose right token starts with a space; merge the most
    frequent, ties to the largest (left, right), left to right. Stories are strings of chr(id)."""
    alphabet = sorted(set("".join(texts)))
    sep = vocab_size  # joins stories; never pairs
    seq = chr(sep).join(t.translate({ord(c): chr(i) for i, c in enumerate(alphabet)}) for t in texts)
    blocked_left = np.zeros(sep + 1, dtype=bool)  # ids that never pair: `"`, newline, the separator
    blocked_left[[alphabet.index(c) for c in '\n"' if c in alphabet] + [sep]] = True
    blocked_right = blocked_left.copy()  # ...plus tokens starting with a space, as the right of a pair
    if " " in alphabet:
        blocked_right[alphabet.index(" ")] = True
    merges = []
    for z in range(len(alphabet), vocab_size - n_special):
        ids = np.frombuffer(seq.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)
        left, right = ids[:-1], ids[1:]
        allowed = ~blocked_left[left] & ~blocked_right[right]
        counts = np.bincount(left[allowed] * (sep + 1) + right[allowed], minlength=(sep + 1) ** 2)
        best = len(counts) - 1 - int(np.argmax(counts[::-1]))  # ties: the largest (left, right)
        if counts[best] == 0:
            break
        a, b = divmod(best, sep + 1)
        merges.append(((a, b), z))
        seq = seq.replace(chr(a) + chr(b), chr(z))
        blocked_right[z] = blocked_right[a]  # a merged left (never `"`, newline) blocks only if space-led
    return merges


def best_of(repeats: int, run: Callable[..., object], setup: Callable[[], object] | None = None) -> dict:
    """Fastest of `repeats` runs of run(setup()) (setup untimed), as wall and as CPU seconds (all threads of
    this process: what neighbours on a shared machine steal shows in wall time, much less in CPU time)."""
    wall, cpu = [], []
    for _ in range(repeats):
        args = (setup(),) if setup else ()
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        run(*args)
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return {"wall": min(wall), "cpu": min(cpu)}


def seconds(timing: dict) -> dict:
    return {f"{kind}_s": round(value, 4) for kind, value in timing.items()}


def mb_per_s(n_bytes: int, timing: dict) -> dict:
    return {kind: round(n_bytes / value / 1e6, 1) for kind, value in timing.items()}


def bench_mlxstory(texts: list[str], vocab_size: int, repeats: int) -> tuple[dict, Tokenizer]:
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    trained: list[Tokenizer] = []
    train = best_of(repeats, lambda: trained.append(Tokenizer.train(texts, vocab_size)))
    tok = trained[0]

    def encode_all(t: Tokenizer) -> list[list[int]]:
        return [t.encode(text, on_unknown="ignore") for text in texts]

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.ron"
        tok.save(path)
        load = best_of(repeats, lambda: Tokenizer.load(path))
        unused = iter(trained)
        after_train = best_of(repeats, encode_all, lambda: next(unused))
        cold = best_of(repeats, encode_all, lambda: Tokenizer.load(path))
    warm = best_of(repeats, lambda: encode_all(tok))
    batch = best_of(repeats, lambda: tok.encode_batch(texts))
    ids = encode_all(tok)
    decode = best_of(repeats, lambda: [tok.decode(i) for i in ids])
    assert all(tok.decode(i) == text for i, text in zip(ids, texts, strict=True))
    n_tokens = sum(map(len, ids))
    return {
        "train": seconds(train),
        "merges": len(tok.merges),
        "load_tokenizer_ron": seconds(load),
        "encode_MB_per_s": {
            "after_train": mb_per_s(n_bytes, after_train),
            "cold": mb_per_s(n_bytes, cold),
            "warm": mb_per_s(n_bytes, warm),
            "encode_batch_warm": mb_per_s(n_bytes, batch),
        },
        "decode_MB_per_s": mb_per_s(n_bytes, decode),
        "tokens": n_tokens,
        "bytes_per_token": round(n_bytes / n_tokens, 3),
        "decode_encode_round_trip": True,
    }, tok


def bench_hf(texts: list[str], vocab_size: int, repeats: int) -> tuple[dict, list[str]] | tuple[dict, None]:
    try:
        import tokenizers
        from tokenizers import Regex, models, pre_tokenizers, trainers
    except ImportError:
        return {"skipped": "tokenizers is not installed (pip install -e '.[bench]')"}, None
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    made = []

    def train() -> None:
        hf = tokenizers.Tokenizer(models.BPE(unk_token=UNK))
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(split_pattern()), behavior="isolated")
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT, UNK], show_progress=False)
        hf.train_from_iterator(texts, trainer)
        made.append(hf)

    train = best_of(repeats, train)
    hf = made[-1]
    per_story = best_of(repeats, lambda: [hf.encode(t).ids for t in texts])
    batch = best_of(repeats, lambda: hf.encode_batch(texts))
    merged = [a + b for a, b in (m.split(" ", 1) if isinstance(m, str) else m for m in _hf_merges(hf))]
    return {
        "version": tokenizers.__version__,
        "train": seconds(train),
        "merges": len(merged),
        "encode_MB_per_s": {"per_story": mb_per_s(n_bytes, per_story),
                            "encode_batch_parallel": mb_per_s(n_bytes, batch)},
        "tokens": sum(len(hf.encode(t).ids) for t in texts),
    }, merged


def _hf_merges(hf) -> list:
    """The trained merges, in order (read from the model's JSON: tokenizers has no direct accessor)."""
    return json.loads(hf.to_str())["model"]["merges"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="parquet file, column `text`")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--original", action="store_true",
                        help="also run the original algorithm on the whole sample (minutes)")
    args = parser.parse_args(argv)

    import pyarrow.parquet as pq

    texts = pq.read_table(args.data).column("text").to_pylist()
    mine, tok = bench_mlxstory(texts, args.vocab_size, args.repeats)
    hf, hf_merged = bench_hf(texts, args.vocab_size, args.repeats)
    slice_tok = Tokenizer.train(texts[:200], 400)
    check = {"first_200_stories_vocab_400": slice_tok.merges == original_train(texts[:200], 400)}
    if args.original:
        start = time.perf_counter()
        reference = original_train(texts, args.vocab_size)
        check["whole_sample_s"] = round(time.perf_counter() - start, 1)
        check[f"whole_sample_vocab_{args.vocab_size}"] = reference == tok.merges
    if hf_merged is not None:
        ours = {tok.token_text(z) for _, z in tok.merges}
        hf["same_merged_tokens_as_mlxstory"] = round(len(ours & set(hf_merged)) / len(ours), 4)
    print(json.dumps({
        "benchmark": "tokenizer",
        "data": str(args.data),
        "stories": len(texts),
        "characters": sum(map(len, texts)),
        "utf8_bytes": sum(len(t.encode("utf-8")) for t in texts),
        "vocab_size": args.vocab_size,
        "repeats": args.repeats,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "mlxstory": mine,
        "merges_identical_to_original_algorithm": check,
        "hf_tokenizers": hf,
    }, indent=2))


if __name__ == "__main__":
    main()
