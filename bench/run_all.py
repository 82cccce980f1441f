"""Run every speed/quality benchmark script in bench/ in turn, each in its own process, and summarise.

    python bench/run_all.py [--only bench_scoring,bench_training] [--skip bench_audioldm]

Each script writes its raw numbers and its page under bench/results/ (with machine, date and command), then
bench/assemble.py rebuilds BENCHMARKS.md. A script
that is missing or fails is reported and the others still run; the exit status is 1 if any failed
(a missing script is listed, not counted as a failure).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# script -> the arguments that make it write its raw numbers (bench/results/<page>.json) and its page.
SCRIPTS = {"bench_frontend": [], "bench_augment": ["--write"], "bench_audioldm": [], "demo_difficulty": ["--write"],
           "bench_scoring": [], "bench_training": [], "bench_export": ["--onnx"], "bench_reliability": []}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma list of script names (default: all)")
    ap.add_argument("--skip", default="", help="comma list of script names to leave out")
    args = ap.parse_args()
    only = [s for s in args.only.split(",") if s]
    skip = {s for s in args.skip.split(",") if s}
    unknown = (set(only) | skip) - set(SCRIPTS)
    if unknown:
        ap.error(f"unknown script(s) {sorted(unknown)}; choose from {', '.join(SCRIPTS)}")
    summary = []
    for name in only or SCRIPTS:
        if name in skip:
            continue
        path = BENCH / f"{name}.py"
        if not path.is_file():
            summary.append((name, "missing", 0.0))
            continue
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, str(path), *SCRIPTS[name]], cwd=BENCH.parent)
        summary.append((name, "ok" if rc == 0 else f"failed (exit {rc})", time.perf_counter() - start))
    subprocess.call([sys.executable, str(BENCH / "assemble.py")], cwd=BENCH.parent)  # BENCHMARKS.md from them
    print("\n| script | status | wall s |\n|---|---|---:|")
    for name, status, wall in summary:
        print(f"| {name} | {status} | {wall:.0f} |")
    return 1 if any(s.startswith("failed") for _, s, _ in summary) else 0


if __name__ == "__main__":
    sys.exit(main())
