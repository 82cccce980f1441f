"""`rcmae fit`, `rcmae evaluate` and `rcmae score`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


# ---------------------------------------------------------------- fit / evaluate / score
def _cmd_fit(args: argparse.Namespace) -> int:
    from rcmae.scorers.training_free import fit_training_free

    run = fit_training_free(Path(args.data), Path(args.out), preset=args.preset, overrides=args.set)
    print(f"training-free run in {run}; next: rcmae evaluate --run {run}")
    return 0


def add_fit(sub) -> None:
    p = sub.add_parser("fit", help="a detector in seconds, no training: fit the training-free scorers on a data "
                                   "folder (the tiny default's ensemble)")
    p.add_argument("--data", required=True, help="DCASE-layout data folder")
    p.add_argument("--out", required=True, help="run folder to write (evaluate, score, export and monitor read it)")
    p.add_argument("--preset", default="tiny", help="config preset: front-end and score settings (default tiny)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    p.set_defaults(func=_cmd_fit)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from rcmae.evaluation import evaluate as score

    results = score.evaluate_run(
        Path(args.run), data=Path(args.data) if args.data else None, scorer=args.scorer,
        allow_partial=args.allow_partial,
    )
    for name, res in results.items():
        avg = res["average"]
        line = (f"{name:>8}: AUC {avg['auc']:.4f}  pAUC {avg['pauc']:.4f}" if avg["auc"] is not None else
                f"{name:>8}: no labelled test clips (scores and decisions written for submission)")
        official = res.get("official") or {}
        if official.get("score") is not None:  # DCASE 2021+ data (docs/metrics.md)
            line += (f"  | AUC source {official['hmean_source']:.4f}  AUC target {official['hmean_target']:.4f}  "
                     f"pAUC {official['pauc_hmean']:.4f}  official score {official['score']:.4f} (harmonic means)")
        print(line)
    print(f"results in {Path(args.run) / 'eval'}")
    return 0


def add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score every labelled test clip; write eval/results*.json and challenge CSVs")
    p.add_argument("--run", required=True, help="a run folder")
    p.add_argument("--data", default=None, help="data folder (default: the run's)")
    p.add_argument("--scorer", default=None, help="only this scorer (default: all; results.json holds the default)")
    p.add_argument("--allow-partial", action="store_true",
                   help="replace earlier results even when some machine units cannot be measured (they are named)")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_score(args: argparse.Namespace) -> int:
    import json

    from rcmae.scorers.detector import Detector

    detector = Detector.load(Path(args.run))
    for note in detector.notes:
        print(note, file=sys.stderr)
    rows = detector.score_paths(
        [Path(p) for p in args.paths], scorer=args.scorer, machine_type=args.machine_type, machine_id=args.machine_id
    )
    for r in rows:
        if r.get("note"):  # clips of another length than the run's: said, never silently padded or cut
            print(f"{r['path']}: {r['note']}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            if r.get("error"):
                hint = " with --machine-type and --machine-id" if "which machine" in r["error"] else ""
                print(f"{r['path']}: skipped ({r['error']}{hint})")
            elif r["threshold"] is None:
                print(f"{r['path']}: score {r['score']:.4f}  ({r['scorer']}; no threshold fitted)")
            else:
                print(f"{r['path']}: score {r['score']:.4f}  threshold {r['threshold']:.4f}  {r['decision']}")
    return 1 if any(r.get("error") for r in rows) else 0


def add_score(sub) -> None:
    p = sub.add_parser("score", help="score clips with a trained run: score, threshold, decision")
    p.add_argument("--run", required=True, help="a run folder")
    p.add_argument("paths", nargs="+", help="wav files or folders")
    p.add_argument("--scorer", default=None, help="idprob | knn | recon (default: the run's default)")
    p.add_argument("--machine-type", default=None, help="machine type when file names do not carry it")
    p.add_argument("--machine-id", default=None, help="machine ID when file names do not carry it")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_score)
