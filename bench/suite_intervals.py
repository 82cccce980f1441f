"""Bootstrap intervals for a suite run: each set's AUC / pAUC of two systems and of their difference.

    python bench/collect_suite.py SUITE_OUT --name report      # the raw files this reads
    python bench/suite_intervals.py [--name report] [--a ae] [--b rcmae] [--n 1000]

Reads the committed raw results of a suite (bench/results/raw/suite-<name>/: every run's per-clip scores of its
default scorer, labels from the clip names) for every seed both systems finished, and runs
:func:`rcmae.evaluation.intervals.paired_bootstrap` (clips resampled within each unit, both systems and all their
seeds on the same draw; numbers are seed means). Writes bench/results/intervals-<name>.md and the numbers as
intervals-<name>.json. Deterministic (a fixed resampling seed): bench/assemble.py reruns it and gets the same
file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import write_result  # noqa: E402

from rcmae.evaluation.intervals import paired_bootstrap  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
RAW = RESULTS / "raw"


def load_runs(name: str) -> tuple[dict, dict[str, dict[tuple[str, int], dict]]]:
    """The suite call's metadata and, per set, its runs ``{(system, seed): raw}``."""
    base = RAW / f"suite-{name}"
    meta = json.loads((base / "suite.json").read_text())
    runs: dict[str, dict[tuple[str, int], dict]] = {}
    for s in meta["sets"]:
        for path in sorted((base / s["name"]).glob("*.json")) if (base / s["name"]).is_dir() else []:
            raw = json.loads(path.read_text())
            runs.setdefault(s["name"], {})[(raw["system"], raw["seed"])] = raw
    return meta, runs


def set_intervals(runs: dict[tuple[str, int], dict], a: str, b: str, n: int) -> dict | None:
    seeds = sorted({k for s, k in runs if s == a} & {k for s, k in runs if s == b})
    if not seeds:
        return None
    sa = [runs[(a, k)]["scores"] for k in seeds]
    sb = [runs[(b, k)]["scores"] for k in seeds]
    units = sorted(set.intersection(*(set(x) for x in sa + sb)))
    labels, xa, xb = {}, {}, {}
    for u in units:
        names = sorted(set.intersection(*(set(x[u]) for x in sa + sb)))
        key = tuple(u.rsplit("/", 1))
        labels[key] = np.array([1 if c.startswith("anomaly") else 0 for c in names])
        xa[key] = np.array([[x[u][c] for c in names] for x in sa])
        xb[key] = np.array([[x[u][c] for c in names] for x in sb])
    res = paired_bootstrap(labels, xa, xb, n=n)
    return {"units": units, "clips": int(sum(len(v) for v in labels.values())), "seeds": seeds, **res}


def compute(name: str = "report", a: str = "ae", b: str = "rcmae", n: int = 1000) -> dict:
    """The intervals of every set, from the committed raw files alone (written to intervals-<name>.json)."""
    meta, runs = load_runs(name)
    out = {"suite": name, "a": a, "b": b, "n": n, "sets": {}}
    for s in meta["sets"]:
        res = set_intervals(runs.get(s["name"], {}), a, b, n)
        if res is not None:
            out["sets"][s["name"]] = res
    return out


def render(name: str = "report") -> str:
    """bench/results/intervals-<name>.md from intervals-<name>.json and the suite's metadata."""
    res_all = json.loads((RESULTS / f"intervals-{name}.json").read_text())
    meta = json.loads((RAW / f"suite-{name}" / "suite.json").read_text())
    a, b, n = res_all["a"], res_all["b"], res_all["n"]

    def cell(x: dict) -> str:
        return f"{100 * x['value']:.1f} [{100 * x['lo']:.1f}, {100 * x['hi']:.1f}]"

    rows = []
    for set_name, res in res_all["sets"].items():
        d = res["diff"]
        verdict = ", ".join(f"{m.upper() if m == 'auc' else 'pAUC'}: "
                            + ({"b": f"{b} wins", "a": f"{a} wins"}.get(d[m]["win"]) or "no call")
                            for m in ("auc", "pauc"))
        rows.append(f"| {set_name} | {res['clips']} | {len(res['seeds'])} | {cell(res['b']['auc'])} | "
                    f"{cell(res['b']['pauc'])} | {cell(res['a']['auc'])} | {cell(res['a']['pauc'])} | "
                    f"{100 * d['auc']['value']:+.1f} [{100 * d['auc']['lo']:+.1f}, {100 * d['auc']['hi']:+.1f}] | "
                    f"{100 * d['pauc']['value']:+.1f} [{100 * d['pauc']['lo']:+.1f}, {100 * d['pauc']['hi']:+.1f}] | "
                    f"{verdict} |")
    m = meta["machine"]
    return (f"## Suite `{name}`: {b} against {a}, with 95 % bootstrap intervals\n\n"
            f"- runs: `{meta['command']}` ({meta['date']}; {m['cpu']}, {m['usable_cores']} cores, torch "
            f"{m['torch']})\n"
            f"- intervals: `python bench/suite_intervals.py --name {name} --a {a} --b {b} --n {n}`, from the "
            f"committed raw files (bench/results/raw/suite-{name}/) into intervals-{name}.json; this page is drawn "
            "from that file by bench/assemble.py\n\n"
            f"Per set: AUC / pAUC in % (mean over types of the mean over IDs) with the 2.5-97.5 % range of "
            f"{n} paired bootstrap resamples (test clips drawn with replacement within each unit, normal and "
            f"anomalous separately, both systems on the same draw; `rcmae.evaluation.intervals`). With several "
            "end-to-end seeds, every number is the seed mean and every seed scores the same resampled clips, so "
            "the interval is over clips; the spread between seeds is in the suite table (mean ± std). A "
            "difference is called a win only when its interval excludes zero.\n\n"
            f"| set | test clips | seeds | {b} AUC | {b} pAUC | {a} AUC | {a} pAUC | AUC diff | "
            "pAUC diff | call |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n" + "\n".join(rows) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="report")
    ap.add_argument("--a", default="ae")
    ap.add_argument("--b", default="rcmae")
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args()
    raw = compute(args.name, args.a, args.b, args.n)
    (RESULTS / f"intervals-{args.name}.json").write_text(json.dumps(raw, indent=1) + "\n")
    text = render(args.name)
    write_result(f"intervals-{args.name}", text)
    print(text)


if __name__ == "__main__":
    main()
