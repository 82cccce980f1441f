"""Bootstrap intervals for a suite run: each set's AUC / pAUC of two systems and of their difference.

    python bench/suite_intervals.py SUITE_OUT [--a ae] [--b rcmae] [--n 1000] [--name report]

Reads every set's challenge CSVs (``anomaly_score_<type>_id_XX.csv``: the rcmae run's default scorer in
``run/eval/``, a baseline's in ``baseline/``) of every seed both systems finished, labels from the clip names, and
runs :func:`rcmae.evaluation.intervals.paired_bootstrap` (clips resampled within each unit, both systems and all
their seeds on the same draw; numbers are seed means). Writes bench/results/intervals-<name>.md and the raw numbers
as intervals-<name>.json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, write_result  # noqa: E402

from rcmae.evaluation.intervals import paired_bootstrap  # noqa: E402

CSV = re.compile(r"anomaly_score_(.+)_id_(\d+)\.csv$")


def read_scores(folder: Path) -> dict[tuple[str, str], dict[str, float]]:
    out: dict[tuple[str, str], dict[str, float]] = {}
    for path in sorted(folder.glob("anomaly_score_*_id_*.csv")):
        m = CSV.search(path.name)
        rows = [line.split(",") for line in path.read_text().splitlines() if line.strip()]
        out[(m.group(1), m.group(2))] = {name: float(score) for name, score in rows}
    return out


def finished_seeds(set_dir: Path, system: str) -> list[int]:
    seeds = []
    for record in sorted((set_dir / "systems" / system).glob("seed*/record.json")):
        if json.loads(record.read_text()).get("status") == "ok":
            seeds.append(int(record.parent.name.removeprefix("seed")))
    return sorted(seeds)


def system_scores(set_dir: Path, system: str, seed: int = 0) -> dict:
    base = set_dir / "systems" / system / f"seed{seed}"
    for folder in (base / "run" / "eval", base / "baseline"):
        if folder.is_dir() and any(folder.glob("anomaly_score_*.csv")):
            return read_scores(folder)
    raise FileNotFoundError(f"{base}: no challenge CSVs (run/eval/ or baseline/); has the system finished?")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite_out", type=Path)
    ap.add_argument("--a", default="ae")
    ap.add_argument("--b", default="rcmae")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--name", default="report")
    args = ap.parse_args()
    rows, raw = [], {}
    for set_dir in sorted((args.suite_out / "sets").iterdir()):
        seeds = sorted(set(finished_seeds(set_dir, args.a)) & set(finished_seeds(set_dir, args.b)))
        try:
            if not seeds:
                raise FileNotFoundError(f"{set_dir}: no seed that both {args.a} and {args.b} finished")
            a = [system_scores(set_dir, args.a, k) for k in seeds]
            b = [system_scores(set_dir, args.b, k) for k in seeds]
        except FileNotFoundError as err:
            print(f"skipped: {err}")
            continue
        units = sorted(set.intersection(*(set(x) for x in a + b)))
        labels, sa, sb = {}, {}, {}
        for u in units:
            names = sorted(set.intersection(*(set(x[u]) for x in a + b)))
            labels[u] = np.array([1 if n.startswith("anomaly") else 0 for n in names])
            sa[u] = np.array([[x[u][n] for n in names] for x in a])
            sb[u] = np.array([[x[u][n] for n in names] for x in b])
        res = paired_bootstrap(labels, sa, sb, n=args.n)
        raw[set_dir.name] = {"units": [list(u) for u in units], "clips": int(sum(len(v) for v in labels.values())),
                             "seeds": seeds, **res}

        def cell(x: dict) -> str:
            return f"{100 * x['value']:.1f} [{100 * x['lo']:.1f}, {100 * x['hi']:.1f}]"

        d = res["diff"]
        verdict = ", ".join(f"{m.upper() if m == 'auc' else 'pAUC'}: "
                            + ({"b": f"{args.b} wins", "a": f"{args.a} wins"}.get(d[m]["win"]) or "no call")
                            for m in ("auc", "pauc"))
        rows.append(f"| {set_dir.name} | {raw[set_dir.name]['clips']} | {len(seeds)} | {cell(res['b']['auc'])} | "
                    f"{cell(res['b']['pauc'])} | {cell(res['a']['auc'])} | {cell(res['a']['pauc'])} | "
                    f"{100 * d['auc']['value']:+.1f} [{100 * d['auc']['lo']:+.1f}, {100 * d['auc']['hi']:+.1f}] | "
                    f"{100 * d['pauc']['value']:+.1f} [{100 * d['pauc']['lo']:+.1f}, {100 * d['pauc']['hi']:+.1f}] | "
                    f"{verdict} |")
    text = header(f"Suite `{args.name}`: {args.b} against {args.a}, with 95 % bootstrap intervals")
    text += (f"Per set: AUC / pAUC in % (mean over types of the mean over IDs) with the 2.5-97.5 % range of "
             f"{args.n} paired bootstrap resamples (test clips drawn with replacement within each unit, normal and "
             f"anomalous separately, both systems on the same draw; `rcmae.evaluation.intervals`). With several "
             "end-to-end seeds, every number is the seed mean and every seed scores the same resampled clips, so "
             "the interval is over clips; the spread between seeds is in the suite table (mean ± std). A "
             "difference is called a win only when its interval excludes zero. Suite output: "
             f"`{args.suite_out}`; raw numbers: bench/results/intervals-{args.name}.json.\n\n"
             f"| set | test clips | seeds | {args.b} AUC | {args.b} pAUC | {args.a} AUC | {args.a} pAUC | AUC diff | "
             "pAUC diff | call |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n" + "\n".join(rows) + "\n")
    path = write_result(f"intervals-{args.name}", text)
    (path.parent / f"intervals-{args.name}.json").write_text(json.dumps(raw, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
