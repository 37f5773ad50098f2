"""`mlxstory tokenize` at scale: wall time, MB/s, tokens and peak memory of a child process.

    python -m benchmarks.bench_scale [--mb 200] [--vocab-size 4096] [--workers N] [--baseline DIR]
                                     [--rare-words N] [--cpu-per-pass] [--tmp DIR] [--results FILE]

Builds a corpus of `--mb` MB in a temporary folder (never committed): the shared sample's stories and
5,000 demo-corpus stories, shuffled by a seeded RNG in each repetition, as one .txt file with
`<|endoftext|>` separators; `--rare-words N` replaces three words of every story from N made-up words, a
long tail like real text's. Then runs `mlxstory tokenize` on it in a child process: this checkout,
then (with `--baseline DIR`) the `mlxstory/` package in DIR, e.g. a `git worktree` of an older commit,
so two versions are measured side by side on the same file under the same load.

Memory is reported two ways: `peak_rss_max_process_mib` (the largest single process, from wait4's
rusage, the figure `/usr/bin/time -v` prints) and `peak_rss_tree_mib` (the summed RSS of the child and
its worker processes, sampled every 0.1 s: what the machine has to hold). Load varies on a shared
machine; compare versions by the ratio measured in one invocation. `--cpu-per-pass` also runs the two
passes of this checkout in this process and reports the CPU time of the parent and of all workers in each:
their ratio is about how many workers the parent can keep busy, beyond the cores this machine has.
Prints JSON; `--results FILE` also appends it (one JSON object a line).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import string
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "tinystories-sample.parquet"
EOT = "<|endoftext|>"
MB = 1_000_000


def corpus_stories(sample: Path) -> list[str]:
    import pyarrow.parquet as pq

    from mlxstory.data.demo_corpus import generate_stories

    stories = [s.strip() for s in pq.read_table(sample, columns=["text"]).column("text").to_pylist() if s]
    return stories + generate_stories(5_000, seed=1)


def made_up_words(count: int, rng: random.Random) -> list[str]:
    return ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 9))).capitalize()
            for _ in range(count)]


def with_rare_words(stories: list[str], words: list[str], rng: random.Random, per_story: int = 3
                    ) -> list[str]:
    """Each story with `per_story` of its words replaced by made-up ones drawn log-uniformly (a long tail,
    as real text has: a few common, most seen once or twice)."""
    out = []
    for story in stories:
        parts = story.split(" ")
        for _ in range(per_story):
            parts[rng.randrange(len(parts))] = words[int(len(words) ** rng.random()) - 1]
        out.append(" ".join(parts))
    return out


def build_corpus(path: Path, megabytes: float, sample: Path, seed: int = 0, rare_words: int = 0) -> int:
    """Write about `megabytes` MB of stories to `path`; returns the bytes written. With `rare_words`,
    three words of every story written are replaced from that many made-up ones."""
    stories = corpus_stories(sample)
    rng = random.Random(seed)
    rare = made_up_words(rare_words, rng) if rare_words else []
    target, written = int(megabytes * MB), 0
    with open(path, "w", encoding="utf-8") as file:
        while written < target:
            rng.shuffle(stories)
            drawn = with_rare_words(stories, rare, rng) if rare else stories
            block = "".join(f"{story}\n{EOT}\n" for story in drawn).encode("utf-8")
            block = block[: max(0, target - written)] if written + len(block) > target else block
            if written + len(block) >= target:  # end on a whole story
                cut = block.rfind(EOT.encode())
                block = block[: cut + len(EOT) + 1] if cut >= 0 else block
            file.write(block.decode("utf-8"))
            written += len(block)
            if not block:
                break
    return path.stat().st_size


def tree_rss(pid: int) -> int:
    """Summed RSS in bytes of `pid` and all its descendants (Linux /proc)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def run_tokenize(code: Path | None, corpus: Path, out: Path, vocab_size: int, workers: int | None) -> dict:
    args = ["tokenize", "--data", str(corpus), "--out", str(out), "--vocab-size", str(vocab_size)]
    if workers is not None:
        args += ["--workers", str(workers)]
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code.resolve())
    script = f"import sys; from mlxstory.cli import main; sys.argv = ['mlxstory', *{args!r}]; main()"
    start = time.perf_counter()
    # cwd outside any checkout, so `import mlxstory` finds PYTHONPATH's copy (or the installed one).
    child = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=out.parent,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], tree_rss(child.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    stderr = child.stderr.read().decode(errors="replace")
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"tokenize failed ({child.returncode}): {stderr.strip()[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    text_bytes = corpus.stat().st_size
    return {
        "code": str(code) if code else "this checkout",
        "wall_s": round(wall, 2),
        "mb_per_s": round(text_bytes / MB / wall, 2),
        "tokens": manifest["total"]["tokens"],
        "stories": manifest["total"]["stories"],
        "peak_rss_max_process_mib": round(usage.ru_maxrss / 1024, 1),
        "peak_rss_tree_mib": round(peak[0] / 2**20, 1),
        "tokens_sha256": manifest["tokens_sha256"],
        "last_line": stderr.strip().splitlines()[-1] if stderr.strip() else "",
    }


def cpu_per_pass(corpus: Path, out: Path, vocab_size: int, workers: int) -> dict:
    """Parent and worker CPU seconds of each pass of a token store build (`workers` processes)."""
    import resource

    from mlxstory.data import token_store
    from mlxstory.data.parallel import WorkerPool
    from mlxstory.data.sources import open_source
    from mlxstory.data.tokenizer import Tokenizer

    def cpu(who: int) -> float:
        usage = resource.getrusage(who)
        return usage.ru_utime + usage.ru_stime

    def spent(before: tuple[float, float]) -> dict:
        parent, children = cpu(resource.RUSAGE_SELF) - before[0], cpu(resource.RUSAGE_CHILDREN) - before[1]
        return {"parent_cpu_s": round(parent, 2), "workers_cpu_s": round(children, 2),
                "workers_per_parent": round(children / parent, 1)}

    source, passes = open_source(corpus), {}
    start = (cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN))
    with WorkerPool(workers) as pool:  # workers are reaped (and counted) when the pool closes
        scan = token_store._scan(source, pool, 0.1, 1337, count_words=True)
    passes["pass_one"] = spent(start)
    tokenizer = Tokenizer.from_word_counts(scan.counts, vocab_size)
    start = (cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN))
    with WorkerPool(workers) as pool:
        token_store._write_store(out, source, tokenizer, scan, pool, None)
    passes["pass_two"] = spent(start)
    return {"workers": workers, "note": "worker CPU includes each worker's start-up", **passes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_scale",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=200, help="corpus size in MB (10^6 bytes)")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=None, help="--workers for this checkout's tokenize")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="also measure the mlxstory/ package in this folder (e.g. a worktree of main)")
    parser.add_argument("--sample", type=Path, default=SAMPLE)
    parser.add_argument("--rare-words", type=int, default=0,
                        help="replace 3 words a story from this many made-up words (a long tail of words)")
    parser.add_argument("--cpu-per-pass", action="store_true",
                        help="also measure parent and worker CPU per pass (this checkout, in this process)")
    parser.add_argument("--tmp", type=Path, default=None, help="where the temporary corpus goes")
    parser.add_argument("--results", type=Path, default=None, help="append the JSON line to this file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=args.tmp) as tmp:
        corpus = Path(tmp) / "corpus.txt"
        started = time.perf_counter()
        size = build_corpus(corpus, args.mb, args.sample, rare_words=args.rare_words)
        print(f"built {size / MB:.0f} MB corpus in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        runs = []
        load_before = os.getloadavg()
        for number, code in enumerate([None] + ([args.baseline] if args.baseline else [])):
            workers = args.workers if code is None else None  # an older version has no --workers
            runs.append(run_tokenize(code, corpus, Path(tmp) / f"store-{number}", args.vocab_size, workers))
            print(json.dumps(runs[-1]), file=sys.stderr)
        if args.cpu_per_pass:
            split = cpu_per_pass(corpus, Path(tmp) / "store-cpu", args.vocab_size, args.workers or 2)
    document = {
        "benchmark": "bench_scale",
        "command": "python -m benchmarks.bench_scale " + " ".join(argv if argv is not None else sys.argv[1:]),
        "corpus_mb": round(size / MB, 1),
        "vocab_size": args.vocab_size,
        "rare_words": args.rare_words,
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} logical CPUs",
        "load_average_before_after": [list(load_before), list(os.getloadavg())],
        "runs": runs,
    }
    if args.cpu_per_pass:
        document["cpu_per_pass"] = split
    if len(runs) == 2:
        document["throughput_ratio_new_over_baseline"] = round(runs[0]["mb_per_s"] / runs[1]["mb_per_s"], 2)
        document["same_tokens"] = runs[0]["tokens"] == runs[1]["tokens"]
    text = json.dumps(document, indent=1)
    print(text)
    if args.results is not None:
        with open(args.results, "a", encoding="utf-8") as file:
            file.write(json.dumps(document) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
