"""How hard the second generator's anomalies should be: the `knn` baseline on a calibration seed (decision 2).

    python bench/families_calibration.py [--seed 90] [--severities 1,0.5,0.25,0.125] [--work DIR]

The rule (bench/results/decisions.md, decision 2, written before this ran): on a seed that is never reported,
generate the families (``rcmae.data.families``, the report sets' sizes) at each severity, run only the `knn`
baseline (per-clip log-mel mean/std, nearest neighbour: neither rcmae nor the AE), and take the largest severity at
which its AUC is at most 0.90. Writes bench/results/families-calibration.md and its raw numbers
families-calibration.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, write_result  # noqa: E402

from rcmae.data.families import make_family_data  # noqa: E402
from rcmae.evaluation.baselines import run_baseline  # noqa: E402
from rcmae.evaluation.loudness import loudness_auc  # noqa: E402

LIMIT = 0.90


def render(raw: dict) -> str:
    rows = [f"| {r['severity']:g} | {r['added_db']:+.0f} | {100 * r['knn']['auc']:.1f} | "
            f"{100 * r['knn']['pauc']:.1f} | {100 * r['loudness']['auc']:.1f} |" for r in raw["rows"]]
    chosen = raw["chosen"]
    verdict = (f"**Chosen: severity {chosen:g}** (the largest with `knn` AUC <= {100 * LIMIT:.0f})."
               if chosen is not None else f"**No severity tried brings `knn` to {100 * LIMIT:.0f} or below.**")
    return ("# The second generator's difficulty (decision 2)\n\n" + raw["header"] +
            f"Calibration seed {raw['seed']} (never reported), 2 types x 3 IDs, 30 train + 10 + 10 test per ID. "
            "`knn`: the baseline on per-clip log-mel mean/std (k = 1, euclidean), the only system run here. "
            "Loudness: the per-clip loudness detector's AUC (`rcmae.evaluation.loudness`).\n\n"
            "| severity | added anomaly (dB) | knn AUC | knn pAUC | loudness AUC |\n|---:|---:|---:|---:|---:|\n"
            + "\n".join(rows) + f"\n\n{verdict}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=90)
    ap.add_argument("--severities", default="1,0.5,0.25,0.125")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="families_calibration_"))
    raw = {"seed": args.seed, "limit": LIMIT, "rows": [], "header": header("knn baseline per severity (cpu)")}
    for sev in (float(s) for s in args.severities.split(",")):
        data = make_family_data(work / f"sev{sev:g}", seed=args.seed, ids=3, train_per_id=30, test_per_id=10,
                                severity=sev, progress=False)
        res = run_baseline("knn", data, work / f"sev{sev:g}-knn", progress=False)
        row = {"severity": sev, "added_db": 20 * math.log10(sev), "knn": res["average"],
               "loudness": loudness_auc(data)["deviation"]}
        raw["rows"].append(row)
        print(row, flush=True)
    ok = [r["severity"] for r in raw["rows"] if r["knn"]["auc"] <= LIMIT]
    raw["chosen"] = max(ok) if ok else None
    text = render(raw)
    (Path(__file__).parent / "results" / "families-calibration.json").write_text(json.dumps(raw, indent=1) + "\n")
    print(text)
    print(write_result("families-calibration", text))


if __name__ == "__main__":
    main()
