"""Decision 1's ranking of eight default-ensemble candidates, re-measured on the design suite from raw results.

    python bench/ensemble_ranking.py --suite-out OUT --suite-data SETS --work WORK   # rescore, then write
    python bench/ensemble_ranking.py --render                                        # redraw from the JSON

``OUT`` is a finished ``rcmae benchmark --suite design`` folder (its seed-0 rcmae runs are used; nothing in it is
changed); ``WORK`` gets a copy of those runs, which is rescored once per candidate with
``rcmae benchmark --suite design --systems rcmae --rescore --set score.ensemble=[...]`` (the flag, never a hand
edit). The ``rcmae:ensemble`` row's per-unit AUC / pAUC of every set is kept per candidate in
bench/results/ensemble-ranking.json, from which ``render`` draws bench/results/ensemble-ranking.md (bench/assemble.py
redraws it): per set, the mean over machine types of the mean over units; the suite mean over the sets.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, load_raw, save_raw, write_result  # noqa: E402

# Decision 1's candidates (bench/results/decisions.md), in its order; the first is the shipped default.
CANDIDATES = [["stats_maha", "frame_pca"], ["knn", "stats_maha", "frame_pca"], ["maha", "stats_maha", "frame_pca"],
              ["maha", "stats_maha", "frame_pca", "knn"], ["maha", "frame_pca"], ["knn_norm", "maha", "frame_pca"],
              ["maha", "stats_maha"], ["knn", "maha"]]
MARK = ".rcmae-ensemble-ranking-work"


def prepare(out: Path, work: Path) -> list[str]:
    """Copy the suite's seed-0 rcmae runs (and its suite.json) into ``work``; returns the set names."""
    if work.exists():
        if not (work / MARK).is_file():
            sys.exit(f"{work}: not a work folder of this script (no {MARK}); pass a new --work")
        shutil.rmtree(work)
    meta = json.loads((out / "suite.json").read_text())
    sets = [s["name"] for s in meta["sets"] if s["status"] == "ok"]
    work.mkdir(parents=True)
    (work / MARK).write_text("bench/ensemble_ranking.py\n")
    shutil.copy2(out / "suite.json", work / "suite.json")
    for name in sets:
        src = out / "sets" / name / "systems" / "rcmae" / "seed0"
        shutil.copytree(src, work / "sets" / name / "systems" / "rcmae" / "seed0",
                        ignore=shutil.ignore_patterns("rescore"))
    return sets


def rescore(work: Path, data: Path, members: list[str], sets: list[str]) -> dict:
    cmd = [sys.executable, "-m", "rcmae.cli", "benchmark", "--suite", "design", "--out", str(work), "--suite-data",
           str(data), "--systems", "rcmae", "--rescore", "--set", f"score.ensemble=[{','.join(members)}]"]
    subprocess.run(cmd, check=True)
    rows = {}
    for name in sets:
        rec = json.loads((work / "sets" / name / "systems" / "rcmae" / "seed0" / "record.json").read_text())
        if rec.get("rescore_error"):
            raise RuntimeError(f"{name}: {rec['rescore_error']}")
        rows[name] = [{k: u[k] for k in ("machine_type", "machine_id", "auc", "pauc")}
                      for u in rec["rows"]["rcmae:ensemble"]["per_id"]]
    return {"members": members, "command": " ".join(cmd[2:]), "per_set": rows}


def set_average(units: list[dict], metric: str) -> float:
    """Mean over machine types of the mean over units (the DCASE 2020 average)."""
    types = sorted({u["machine_type"] for u in units})
    return float(np.mean([np.mean([u[metric] for u in units if u["machine_type"] == t]) for t in types]))


def render(raw: dict) -> str:
    """bench/results/ensemble-ranking.md from the raw numbers alone."""
    sets = raw["sets"]
    scored = []
    for cand in raw["candidates"]:
        per = {s: {m: set_average(cand["per_set"][s], m) for m in ("auc", "pauc")} for s in sets}
        mean = {m: float(np.mean([per[s][m] for s in sets])) for m in ("auc", "pauc")}
        scored.append((cand["members"], per, mean))
    default = scored[0]
    lines = [raw["header"].rstrip(), "",
             "Decision 1's eight candidate ensembles (bench/results/decisions.md), each rescoring the design suite's "
             f"seed-0 `tiny` runs (trained at {raw['trained_commit'][:7]}, rescored at {raw['commit'][:7]}) with "
             "`--rescore --set score.ensemble=[...]`. AUC / pAUC in %, per set the mean over machine types of the "
             "mean over units, then the mean over the sets; sorted by mean AUC. The rule of decision 1: a candidate "
             "replaces the incumbent only if it beats it on both means.", "",
             "| ensemble | " + " | ".join(sets) + " | mean |", "|---|" + "---:|" * (len(sets) + 1)]
    for members, per, mean in sorted(scored, key=lambda r: -r[2]["auc"]):
        name = f"`[{', '.join(members)}]`" + (" (shipped default)" if members == default[0] else "")
        cells = [f"{100 * per[s]['auc']:.1f} / {100 * per[s]['pauc']:.1f}" for s in sets]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * mean['auc']:.1f} / {100 * mean['pauc']:.1f} |")
    beat = [m for m, _, mean in scored[1:]
            if mean["auc"] > default[2]["auc"] and mean["pauc"] > default[2]["pauc"]]
    lines += ["", "Candidates that beat the shipped default on both means on these runs: "
              + (", ".join(f"`[{', '.join(m)}]`" for m in beat) if beat else "none") + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite-out", type=Path, help="a finished `rcmae benchmark --suite design` folder")
    ap.add_argument("--suite-data", type=Path, help="its --suite-data folder")
    ap.add_argument("--work", type=Path, help="scratch folder for the rescored copies (replaced if it is ours)")
    ap.add_argument("--render", action="store_true", help="only redraw the page from the committed JSON")
    args = ap.parse_args()
    if not args.render:
        if not (args.suite_out and args.suite_data and args.work):
            ap.error("--suite-out, --suite-data and --work are needed (or --render)")
        from rcmae.files import current_git_commit

        sets = prepare(args.suite_out, args.work)
        trained = json.loads((args.work / "sets" / sets[0] / "systems" / "rcmae" / "seed0" / "record.json")
                             .read_text()).get("commit") or "unknown"
        raw = {"header": header("Decision 1's candidates re-measured on the design suite"), "sets": sets,
               "trained_commit": trained, "commit": current_git_commit() or "unknown", "candidates": []}
        for members in CANDIDATES:
            raw["candidates"].append(rescore(args.work, args.suite_data, members, sets))
            print(f"{members}: done", flush=True)
        save_raw("ensemble-ranking", raw)
    text = render(load_raw("ensemble-ranking"))
    print(text)
    print(write_result("ensemble-ranking", text))


if __name__ == "__main__":
    main()
