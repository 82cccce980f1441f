"""The `idprob` preset on the report suite, three seeds: what the paper's own score is on sets no choice looked at.

    python bench/idprob_report.py --suite-out OUT --suite-data DATA [--seeds 0,1,2] [--work DIR]   # run
    python bench/idprob_report.py --suite design --suite-out OUT --suite-data DATA                 # the design suite
    python bench/idprob_report.py --render [--suite design]                                        # redraw

The `idprob` preset is `tiny`'s pretraining followed by its own fine-tuning (300 epochs, 11 pseudo-classes per
unit) and the score -log p(own ID, unchanged | clip). Its pretraining is `tiny`'s, so each (set, seed) reuses the
report suite's own `tiny` run of that seed (same data, bank and seed; `bench/idprob_pseudo.py` copies it, never
writes it) and runs the preset's fine-tuning and score on it. Sets are done one at a time, all seeds of a set
before the next. Writes bench/results/idprob-<suite>.md and the raw numbers idprob-<suite>.json (each set and seed:
AUC / pAUC of the preset's score, fine-tuning seconds); the page is drawn from that file alone. On the design suite
(the sets the preset was chosen on) ``real-slider`` is left out: it holds one unit, nothing to classify.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, load_raw, save_raw, write_result  # noqa: E402

SETS = {"report": ("report-s10", "report-s11", "report-near-identical", "report-domain-shift",
                   "report-families-hard", "report-families"),
        "design": ("demo-s0", "demo-s1", "near-identical", "domain-shift")}
PRESET_FINETUNE = ("finetune.pseudo_classes=[tilt:-3,tilt:3,band:0.125:6,band:0.375:6,band:0.625:6,band:0.875:6,"
                   "band:0.125:-6,band:0.375:-6,band:0.625:-6,band:0.875:-6];finetune.epochs=300")


def render(raw: dict) -> str:
    suite = raw.get("suite", "report")  # the report page's record predates the key
    lines = ["| set | seeds | idprob AUC (mean ± std over seeds) | idprob pAUC | per seed AUC |",
             "|---|---:|---:|---:|---|"]
    complete = []
    for name in raw["sets"]:
        runs = raw["runs"].get(name, {})
        if not runs:
            continue
        auc = [runs[k]["auc"] for k in sorted(runs)]
        pauc = [runs[k]["pauc"] for k in sorted(runs)]

        def cell(v: list[float]) -> str:
            return f"{100 * np.mean(v):.1f} ± {100 * np.std(v, ddof=1):.1f}" if len(v) > 1 else f"{100 * v[0]:.1f}"

        lines.append(f"| {name} | {len(auc)} | {cell(auc)} | {cell(pauc)} | "
                     f"{', '.join(f'{100 * a:.1f}' for a in auc)} |")
        if len(auc) == len(raw["seeds"]):
            complete.append(name)
    summary = ""
    if complete:
        per_seed = {m: [np.mean([raw["runs"][s][str(k)][m] for s in complete]) for k in raw["seeds"]]
                    for m in ("auc", "pauc")}
        spread = {m: f"{100 * np.mean(v):.1f} ± {100 * np.std(v, ddof=1):.1f}" if len(v) > 1 else f"{100 * v[0]:.1f}"
                  for m, v in per_seed.items()}
        summary = (f"\nMean over the {len(complete)} sets with all {len(raw['seeds'])} seeds (mean ± std over seeds "
                   f"of the per-seed mean; per seed AUC {', '.join(f'{100 * v:.1f}' for v in per_seed['auc'])}): "
                   f"**AUC {spread['auc']} / pAUC {spread['pauc']}**. Compare the `rcmae:idprob` row of "
                   f"{suite}-suite.md (the same runs, fine-tuned as `tiny` does) and the default's row there.\n")
    chosen = (" These are the sets the preset was chosen on (docs/studies/idprob.md): optimistic by construction."
              if suite == "design" else "")
    return (f"# The paper's score on the {suite} suite: the `idprob` preset, three seeds\n\n" + raw["header"] +
            f"Each (set, seed): the {suite} suite's own `tiny` run of that seed, whose pretraining is the `idprob` "
            "preset's, fine-tuned as the preset does (300 epochs, 11 pseudo-classes per unit) and scored with "
            "-log p(own ID, unchanged | clip), mean over crop windows (`bench/idprob_pseudo.py`, variant "
            "`idprob`). AUC / pAUC in %, per set the mean over types of the mean over IDs." + chosen + "\n\n"
            + "\n".join(lines) + "\n" + summary)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite-out", type=Path)
    ap.add_argument("--suite-data", type=Path)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--suite", choices=sorted(SETS), default="report")
    ap.add_argument("--sets", help="comma list (default: the suite's sets with more than one unit)")
    ap.add_argument("--work", type=Path, help="default /tmp/idprob-<suite>")
    ap.add_argument("--render", action="store_true")
    args = ap.parse_args()
    page = f"idprob-{args.suite}"
    if args.render:
        print(write_result(page, render(load_raw(page))))
        return
    work_root = args.work or Path(f"/tmp/idprob-{args.suite}")
    seeds = [int(s) for s in args.seeds.split(",")]
    sets = args.sets.split(",") if args.sets else list(SETS[args.suite])
    raw = {"suite": args.suite, "seeds": seeds, "sets": sets, "runs": {}, "header": header("idprob preset (cpu)")}
    for name in raw["sets"]:
        for seed in seeds:
            work = work_root / f"seed{seed}"
            subprocess.run([sys.executable, str(Path(__file__).parent / "idprob_pseudo.py"), "--suite-data",
                            str(args.suite_data), "--suite-out", str(args.suite_out), "--seed", str(seed), "--work",
                            str(work), "--sets", name, "--scores", "identity", "--variant",
                            f"idprob={PRESET_FINETUNE}"], check=True)
            rec = json.loads((work / name / "idprob.json").read_text())
            raw["runs"].setdefault(name, {})[str(seed)] = {
                "auc": rec["identity"]["auc"], "pauc": rec["identity"]["pauc"], "finetune_s": rec["finetune_s"]}
            save_raw(page, raw)  # after every run: a stopped study keeps what it has
            write_result(page, render(raw))


if __name__ == "__main__":
    main()
