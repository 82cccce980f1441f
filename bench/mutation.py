"""Mutation testing (mutmut) of the modules whose numbers the results rest on: a seeded sample of mutants.

    pip install mutmut==3.8.1          # a bench tool, not a dependency of rcmae
    python bench/mutation.py [--sample 30] [--seed 0] [--modules metrics,pseudo,maha] [--work DIR]

mutmut changes one thing in the code at a time (an operator, a constant, an argument) and runs the tests that
cover the changed function; a *killed* mutant made a test fail, a *survivor* passed them all. Each module has
hundreds to a thousand mutants, and the scorer tests train small runs in their fixtures, so running every mutant
takes hours on two cores. This script therefore runs a seeded random sample of each module's mutants (lines the
tests cover: ``mutate_only_covered_lines``) and reports the kill rate with a 95 % Wilson interval, and every
survivor's diff, for reading: a survivor that changes no number (an equivalent mutant: ``mkdir(parents=False)``
on an existing folder, a sort order nobody reads) is not a test gap.

It works in a copy of the checkout (``--work``, default a temporary folder), so ``mutants/`` never lands in the
repository. Writes bench/results/mutation.md and the raw bench/results/mutation.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _machine import header, write_result  # noqa: E402

# module -> (source file, the tests that exercise it)
MODULES = {
    "metrics": ("rcmae/evaluation/metrics.py",
                ["tests/evaluation/test_metrics.py", "tests/evaluation/test_metrics_dcase2021.py"]),
    "pseudo": ("rcmae/augment/pseudo.py", ["tests/augment/test_pseudo.py"]),
    "maha": ("rcmae/scorers/maha.py", ["tests/scorers/test_scorers.py", "tests/scorers/test_fitting.py"]),
    "frames": ("rcmae/scorers/frames.py", ["tests/scorers/test_scorers.py", "tests/scorers/test_fitting.py"]),
    "knn": ("rcmae/scorers/knn.py", ["tests/scorers/test_scorers.py"]),
    "ensemble": ("rcmae/scorers/ensemble.py", ["tests/scorers/test_scorers.py", "tests/scorers/test_score.py"]),
    "base": ("rcmae/scorers/base.py",
             ["tests/scorers/test_ensemble.py", "tests/scorers/test_fitting.py", "tests/scorers/test_scorers.py",
              "tests/scorers/test_score.py"]),
    "detector": ("rcmae/scorers/detector.py",
                 ["tests/scorers/test_score.py", "tests/scorers/test_scorers.py", "tests/scorers/test_fitting.py"]),
    "domains": ("rcmae/scorers/domains.py", ["tests/scorers/test_scorers_domains.py"]),
    "fitting": ("rcmae/scorers/fitting.py", ["tests/scorers/test_fitting.py", "tests/scorers/test_scorers.py"]),
    "idprob": ("rcmae/scorers/idprob.py",
               ["tests/scorers/test_score.py", "tests/scorers/test_scorers.py",
                "tests/training/test_attribute_classes.py"]),
    "recon": ("rcmae/scorers/recon.py",
              ["tests/scorers/test_score.py", "tests/scorers/test_scorers.py", "tests/training/test_train.py"]),
    "training_free": ("rcmae/scorers/training_free.py",
                      ["tests/scorers/test_fitting.py", "tests/scorers/test_scorers.py"]),
}
RAW = ROOT / "bench" / "results" / "mutation.json"
READINGS = ROOT / "bench" / "mutation_readings.json"
WORK_MARKER = ".rcmae-mutation-work"
STATUS = {"killed": "killed", "survived": "survived", "timeout": "timeout", "no tests": "no tests",
          "not checked": "not checked", "suspicious": "suspicious", "segfault": "crashed"}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion ``k / n``."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def mutmut(work: Path, *args: str, timeout: float | None = None) -> str:
    exe = Path(sys.executable).with_name("mutmut")
    proc = subprocess.run([str(exe), *args], cwd=work, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"))
    return proc.stdout + proc.stderr


def results(work: Path) -> dict[str, str]:
    """``{mutant name: status}`` of every generated mutant."""
    out = {}
    for line in mutmut(work, "results", "--all", "true").splitlines():
        m = re.match(r"\s+(\S+__mutmut_\d+): (.+)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def load_raw() -> dict:
    """The committed raw results: per module, its sample's statuses and the run it comes from."""
    return json.loads(RAW.read_text()) if RAW.is_file() else {"modules": {}}


def prepare(work: Path, modules: list[str]) -> None:
    """A copy of the tracked files with mutmut's configuration for ``modules``."""
    if work.exists():
        # Only a scratch copy this script made goes (its marker says so); --work pointing anywhere else is refused.
        if any(work.iterdir()) and not (work / WORK_MARKER).is_file():
            raise SystemExit(f"--work {work}: not a scratch copy bench/mutation.py made (no {WORK_MARKER}); "
                             "pick a new or empty folder")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / WORK_MARKER).write_text("a scratch copy of the checkout for mutmut; bench/mutation.py may replace it\n")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if f.startswith("bench/results/") or not (ROOT / f).is_file():
            continue
        (work / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, work / f)
    sources = [MODULES[m][0] for m in modules]
    tests = sorted({t for m in modules for t in MODULES[m][1]})
    with open(work / "pyproject.toml", "a") as fh:
        fh.write("\n[tool.mutmut]\nsource_paths = [\"rcmae/\"]\n"
                 f"only_mutate = {json.dumps(sources)}\n"
                 f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
                 "also_copy = [\"configs/\", \"tests/\"]\nmutate_only_covered_lines = true\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", default="metrics,pseudo,maha", help=f"comma-separated, of {', '.join(MODULES)}")
    ap.add_argument("--sample", type=int, default=30, help="mutants drawn per module")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="scratch copy of the checkout (default: temporary)")
    ap.add_argument("--render", action="store_true", help="only redraw mutation.md from the committed raw results")
    args = ap.parse_args()
    if args.render:
        render(load_raw(), committed_head())
        return
    modules = args.modules.split(",")
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        raise SystemExit(f"--modules: unknown {', '.join(unknown)}; pick from {', '.join(MODULES)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="rcmae_mutation_"))
    t0 = time.perf_counter()
    prepare(work, modules)
    # Generation and the test-to-function map: mutmut does both before it looks for the mutants it is given, so a
    # name that matches none stops it right after them (it exits with "nothing matches"), and the list exists.
    mutmut(work, "run", "--max-children", "2", "no-such-mutant")
    everything = results(work)
    rng = random.Random(args.seed)
    drawn: dict[str, list[str]] = {}
    for m in modules:
        prefix = MODULES[m][0][:-3].replace("/", ".") + "."
        names = sorted(n for n in everything if n.startswith(prefix))
        drawn[m] = sorted(rng.sample(names, min(args.sample, len(names))))
        print(f"{m}: {len(names)} mutants, {len(drawn[m])} drawn", flush=True)
    mutmut(work, "run", "--max-children", "2", *[n for names in drawn.values() for n in names])
    final = results(work)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    # Modules measured before (other modules, by other runs) stay; the modules of this run replace theirs. Each
    # module's record says which run (commit, seed, sample, command, date) it comes from.
    raw = load_raw()
    wall = round(time.perf_counter() - t0, 1)
    for m in modules:
        prefix = MODULES[m][0][:-3].replace("/", ".") + "."
        status = {n: final.get(n, "not checked") for n in drawn[m]}
        raw["modules"][m] = {"source": MODULES[m][0], "tests": MODULES[m][1],
                             "mutants": sum(n.startswith(prefix) for n in everything), "status": status,
                             "survivor_diffs": {}, "seed": args.seed, "sample": args.sample, "mutmut": "3.8.1",
                             "commit": commit, "command": " ".join(sys.argv), "wall_s": wall,
                             "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        for n, st in status.items():
            if st == "survived":
                raw["modules"][m]["survivor_diffs"][n] = [
                    ln for ln in mutmut(work, "show", n).splitlines()
                    if ln.startswith(("-", "+")) and not ln.startswith(("---", "+++"))]
    RAW.write_text(json.dumps(raw, indent=1) + "\n")
    render(raw, header("mutmut, a seeded sample per module"))


def committed_head() -> str:
    """The machine / date / command header of the committed page (the last run's)."""
    path = ROOT / "bench" / "results" / "mutation.md"
    old = path.read_text() if path.is_file() else ""
    return old[old.index("## "):old.index("| module")].rstrip() + "\n\n" if "| module" in old else header("mutmut")


def render(raw: dict, head: str) -> None:
    text = render_text(raw, head)
    print(text)
    print(write_result("mutation", text))


def render_text(raw: dict, head: str) -> str:
    """bench/results/mutation.md from the raw results and the committed readings of the survivors."""
    readings = json.loads(READINGS.read_text()) if READINGS.is_file() else {}
    lines = ["# Mutation testing\n", head,
             "| module | mutants | drawn | killed | survived | of them changing no number | killed of the "
             "number-changing (95 % interval) |", "|---|---:|---:|---:|---:|---:|---|"]
    survivors = []
    pooled = [0, 0]
    for m in raw["modules"].values():
        status = m["status"]
        killed = sum(s == "killed" for s in status.values())
        survived = [n for n, s in status.items() if s == "survived"]
        # Equivalent (nothing changes) and "no number" (only an error message or a guard on inputs that never occur)
        # survivors are listed but are not number-changing mutants.
        equivalent = [n for n in survived if readings.get(n, "").startswith(("equivalent", "no number"))]
        decided = killed + len(survived) - len(equivalent)
        lo, hi = wilson(killed, decided)
        rate = f"{killed / decided:.1%} ({lo:.1%}-{hi:.1%})" if decided else "-"
        lines.append(f"| `{m['source']}` | {m['mutants']} | {len(status)} | {killed} | {len(survived)} | "
                     f"{len(equivalent)} | {rate} |")
        pooled[0] += killed
        pooled[1] += decided
        survivors += [(n, m["survivor_diffs"].get(n, [])) for n in survived]
    lo, hi = wilson(*pooled)
    rate = pooled[0] / max(pooled[1], 1)
    lines.append(f"| **all drawn** | | | {pooled[0]} | | | **{rate:.1%} ({lo:.1%}-{hi:.1%})** |")
    lines += ["", "Each module's sample (mutmut 3.8.1, mutants on covered lines, drawn with "
                  "`random.Random(seed)`):", ""]
    lines += [f"- `{m['source']}`: {m['sample']} drawn with seed {m['seed']} at commit {m['commit']}"
              + (f", {m['date']}" if m.get("date") else "") + f" (`{m['command']}`, {m['wall_s']:.0f} s)"
              for m in raw["modules"].values()]
    lines += ["", "Survivors and their reading (bench/mutation_readings.json: *equivalent* changes nothing; *no "
                  "number* changes only an error message or a guard against inputs that never occur; *killed now* "
                  "names the test added since; the table counts each survivor at the commit it was measured on):",
              ""]
    for n, diff in survivors:
        lines += [f"- `{n}`: {readings.get(n, 'not read yet')}", "", "  ```diff", *[f"  {d}" for d in diff],
                  "  ```", ""]
    if not survivors:
        lines.append("(none)")
    lines += ["", "Raw: bench/results/mutation.json (`python bench/mutation.py --render` redraws this page from it)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
