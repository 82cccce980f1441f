"""Commit a suite run's raw results: one small JSON per run, from which bench/assemble.py rebuilds the tables.

    python bench/collect_suite.py SUITE_OUT --name report

Reads ``SUITE_OUT/suite.json`` (the sets, machine, command) and every finished run's
``sets/<set>/systems/<system>/seed<k>/`` (``record.json``, ``spec.json``, the run's ``run.json`` and its challenge
CSVs), and writes ``bench/results/raw/suite-<name>/``:

- ``suite.json``: the suite call (suite, systems, preset, overrides, machine, date, command) and each set (name,
  about, source, params, its loudness check, wall and CPU seconds); no result rows: those are recomputed.
- ``<set>/<system>-seed<k>.json``: one run: system, seed, preset, overrides, the commit it ran (``record.json``'s,
  else the rcmae run's ``run.json``; a baseline run from before records carried a commit takes the rcmae run's of
  the same set, seed and suite call, and says so in ``commit_from``), wall / CPU seconds, peak memory, every row's
  per-unit AUC / pAUC (``rows``), and the per-clip scores of its default scorer (``scores``: unit -> clip -> score,
  the challenge CSVs) for the intervals.

Only runs with status ok are collected. Collecting again replaces the folder's files of that suite.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from rcmae.views import load_score_table

ROOT = Path(__file__).resolve().parent.parent
RAW = ROOT / "bench" / "results" / "raw"
MARK = "bench/collect_suite.py"  # suite.json's "collected_by": the folder is this script's to replace


def read_scores(folder: Path) -> dict[str, dict[str, float]]:
    """Per unit ``"type/id"``, each clip's score, from the challenge CSVs (``rcmae.views.load_score_table``)."""
    table = load_score_table(folder)
    return {f"{t}/{i}": dict(zip(g["path"], g["score"].astype(float), strict=True))
            for (t, i), g in table.groupby(["machine_type", "machine_id"], sort=True)}


def replace_folder(dest: Path) -> None:
    """Empty ``dest`` for a new collection: only a folder this script wrote (suite.json says so) is removed."""
    if dest.exists():
        marker = dest / "suite.json"
        mine = marker.is_file() and json.loads(marker.read_text()).get("collected_by") == MARK
        if not mine:
            raise SystemExit(f"{dest}: not a folder bench/collect_suite.py wrote (no suite.json collected_by "
                             f"{MARK!r}); move it away or pick another --name")
        shutil.rmtree(dest)
    dest.mkdir(parents=True)


def collect_run(run_dir: Path) -> dict | None:
    record = json.loads((run_dir / "record.json").read_text())
    if record.get("status") != "ok":
        return None
    spec = json.loads((run_dir / "spec.json").read_text())
    run_json = run_dir / "run" / "run.json"
    commit, source = record.get("commit"), "record.json"
    if not commit and run_json.is_file():
        commit, source = json.loads(run_json.read_text()).get("git_commit"), "run.json"
    scores_dir = next((d for d in (run_dir / "run" / "eval", run_dir / "baseline")
                       if d.is_dir() and any(d.glob("anomaly_score_*.csv"))), None)
    rows = {name: {"average": res["average"],
                   "per_id": [{k: r[k] for k in ("machine_type", "machine_id", "auc", "pauc", "n_normal", "n_anomaly")}
                              for r in res["per_id"]]}
            for name, res in record["rows"].items()}
    return {"system": spec["system"], "kind": spec["kind"], "seed": spec["seed"], "preset": spec.get("preset"),
            "overrides": spec.get("overrides", []), "baseline_kw": spec.get("baseline_kw"),
            "rescore_overrides": record.get("rescore_overrides"), "commit": commit,
            "commit_from": source if commit else None, "wall_s": record.get("wall_s"), "cpu_s": record.get("cpu_s"),
            "peak_mib": record.get("peak_mib"), "rows": rows,
            "scores": read_scores(scores_dir) if scores_dir else {}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite_out", type=Path)
    ap.add_argument("--name", required=True, help="the suite's name in bench/results/raw/suite-<name>/")
    args = ap.parse_args()
    if not re.fullmatch(r"[A-Za-z0-9_-]+", args.name):
        raise SystemExit(f"--name {args.name!r}: letters, digits, '-' and '_' only (it names a folder under {RAW})")
    suite = json.loads((args.suite_out / "suite.json").read_text())
    dest = RAW / f"suite-{args.name}"
    replace_folder(dest)
    keep = ("suite", "systems", "preset", "repeat", "overrides", "machine", "date", "wall_s", "command")
    meta = {"collected_by": MARK, **{k: suite.get(k) for k in keep}}
    meta["sets"] = [{k: s.get(k) for k in ("name", "about", "source", "params", "status", "note", "wall_s", "cpu_s",
                                           "loudness")} for s in suite["sets"]]
    (dest / "suite.json").write_text(json.dumps(meta, indent=1) + "\n")
    count = 0
    for s in suite["sets"]:
        runs = {}
        for run_dir in sorted((args.suite_out / "sets" / s["name"]).glob("systems/*/seed*")):
            if (run_dir / "record.json").is_file() and (raw := collect_run(run_dir)):
                runs[(raw["system"], raw["seed"])] = raw
        for (system, seed), raw in runs.items():
            if not raw["commit"]:
                twin = runs.get(("rcmae", seed))
                if twin and twin["commit"]:
                    raw["commit"] = twin["commit"]
                    raw["commit_from"] = "the rcmae run of the same set, seed and suite call"
            out = dest / s["name"] / f"{system}-seed{seed}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(raw, indent=1, sort_keys=False) + "\n")
            count += 1
    size = sum(p.stat().st_size for p in dest.rglob("*.json"))
    print(f"wrote {count} runs to {dest} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
