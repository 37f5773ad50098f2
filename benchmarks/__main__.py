"""`python -m benchmarks`: MLX against its PyTorch twin, training and generation, on this machine.

    python -m benchmarks [--presets seed,tiny] [--steps 20] [--json] [--out benchmarks/results]

Progress goes to stderr; `--json` prints the JSON document (and nothing else) on stdout. Result files
land in OUT/<machine tag>/ (results.json, results.md, chart.png).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .report import markdown_table, write_results
from .runner import SIDES, dumps, log, run_benchmarks, run_memory_only


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="seed,tiny", help="comma-separated presets (default: seed,tiny)")
    parser.add_argument("--frameworks", default=",".join(SIDES), help="comma-separated: mlx,pytorch")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per framework")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    parser.add_argument("--json", action="store_true", help="print the JSON document on stdout only")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="results folder")
    parser.add_argument("--no-save", action="store_true", help="write no result files")
    parser.add_argument("--memory-only", type=Path, default=None, metavar="FILE",
                        help="only each framework's step memory, each in a child process; JSON to FILE")
    args = parser.parse_args(argv)
    if args.memory_only:
        document = run_memory_only(args.presets.split(","), args.frameworks.split(","))
        args.memory_only.parent.mkdir(parents=True, exist_ok=True)
        args.memory_only.write_text(dumps(document) + "\n")
        print(dumps(document))
        return 0
    document = run_benchmarks(args.presets.split(","), frameworks=args.frameworks.split(","),
                              steps=args.steps, warmup=args.warmup)
    if not args.no_save:
        folder = write_results(document, args.out)
        log(f"results written to {folder}/")
    if args.json:
        print(dumps(document))
    else:
        print(markdown_table(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
