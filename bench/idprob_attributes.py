"""idprob with section + attribute classes on a 2023-style set (issue 10): does it leave chance?

Starts from a finished rcmae run on a DCASE 2023-style labelled set (e.g. the ``rcmae`` row of ``rcmae benchmark``),
whose fine-tuning learned section + attribute classes (``finetune.classes=auto``), and measures ``idprob``:

1. on the development test clips (attributes in the names: each clip scored against its own attribute class);
2. on an evaluation-style copy of the same clips (bare shuffled names ``section_00_NNNN.wav``, the ground truth in
   the evaluator's CSVs): the attribute class is unknown, so the section's classes are pooled, by ``max`` and by
   ``sum`` (``score.idprob_pool``);
3. against the same pretrained encoder fine-tuned on section classes (``finetune.classes=id``; from 2023 that is
   one class per machine type), on both test sets.

    python bench/idprob_attributes.py --run RUN --data DATA --work WORK
    python bench/idprob_attributes.py ... --arm "attribute e100:finetune.epochs=100"   # more fine-tuning arms

Each arm's numbers go to ``WORK/idprob_attributes.json`` and a table to stdout (the study log
docs/studies/dcase2023.md quotes them). A new result a claim rests on keeps its JSON and draws its page from
it (see docs/studies/README.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import remove_run  # noqa: E402

from rcmae.data.index import index_dataset  # noqa: E402
from rcmae.evaluation.evaluate import evaluate_run  # noqa: E402
from rcmae.files import write_json  # noqa: E402
from rcmae.run import config as rconfig  # noqa: E402
from rcmae.training import stages as train  # noqa: E402


def eval_style_copy(dev: Path, root: Path, seed: int = 0) -> Path:
    """The test clips of ``dev`` under bare shuffled names, with the evaluator's ground-truth CSVs in
    ``root/evaluator/ground_truth_{data,domain,attributes}`` (found by ``index_dataset``)."""
    rng = np.random.default_rng(seed)
    index = index_dataset(dev)
    for (mtype, section), group in index[index["split"] == "test"].groupby(["machine_type", "section"]):
        out = root / "eval_data" / "raw" / mtype / "test"
        out.mkdir(parents=True, exist_ok=True)
        files: dict[str, list] = {"data": [], "domain": [], "attributes": []}
        for n, (_, row) in zip(rng.permutation(len(group)), group.iterrows(), strict=True):
            name = f"section_{section}_{n:04d}.wav"
            shutil.copy(row["path"], out / name)
            files["data"].append([name, int(row["label"] == "anomaly")])
            files["domain"].append([name, int(row["domain"] == "target")])
            files["attributes"].append([name, Path(row["path"]).stem])
        for kind, rows in files.items():
            path = root / "evaluator" / f"ground_truth_{kind}" / f"ground_truth_{mtype}_section_{section}_test.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", newline="") as f:
                csv.writer(f, lineterminator="\n").writerows(sorted(rows))
    return root


def summary(res: dict) -> dict:
    """The protocol's headline numbers of one idprob results dict (in %)."""
    off, d21 = res["official"], res["dcase2021"]
    pct = {"hmean_auc_source": off["hmean_source"], "hmean_auc_target": off["hmean_target"],
           "hmean_pauc": off["pauc_hmean"], "official": off["score"], "dcase2021": d21["score"],
           "within_domain_auc_mean": d21["amean"]["auc"]}
    return {k: round(100 * v, 2) for k, v in pct.items()}


def copy_run(run: Path, dest: Path, overrides: list[str]) -> Path:
    remove_run(dest)
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("eval"))
    cfg = rconfig.load_config(dest / "config.yaml", overrides)
    rconfig.save_config(cfg, dest / "config.yaml")
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished rcmae run on a 2023-style labelled set")
    ap.add_argument("--data", type=Path, default=None, help="its data folder (default: the run's)")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--arm", action="append", default=[],
                    help="an extra fine-tuning arm, LABEL:KEY=V,KEY=V (re-fine-tuned from the run's pretraining)")
    ap.add_argument("--skip-base", action="store_true", help="only the --arm arms (the base ones are in the JSON)")
    args = ap.parse_args()
    info = json.loads((args.run / "run.json").read_text())
    data = args.data or Path(info["data"])
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    evaluation = eval_style_copy(data, work / "eval")
    out: dict = {"n_classes": len(info["classes"])}
    result_file = work / "idprob_attributes.json"
    if args.skip_base and result_file.is_file():
        out = json.loads(result_file.read_text())
    started = time.time()
    for arm in args.arm:
        label, _, sets = arm.partition(":")
        run = copy_run(args.run, work / label.replace(" ", "_"), [s for s in sets.split(",") if s])
        for ckpt in (run / "checkpoints").glob("finetune-*.ckpt"):
            ckpt.unlink()
        train.finetune(run, data=data, progress=False)
        out[f"{label} / dev names"] = summary(evaluate_run(run, data=data, scorer="idprob", progress=False)["idprob"])
        out[f"{label} / bare names"] = summary(evaluate_run(run, data=evaluation, scorer="idprob",
                                                            progress=False)["idprob"])
    for pool in () if args.skip_base else ("max", "sum"):
        run = copy_run(args.run, work / f"attribute_{pool}", [f"score.idprob_pool={pool}"])
        if pool == "max":
            out["attribute / dev names"] = summary(evaluate_run(run, data=data, scorer="idprob",
                                                                progress=False)["idprob"])
        out[f"attribute / bare names, {pool}"] = summary(evaluate_run(run, data=evaluation, scorer="idprob",
                                                                      progress=False)["idprob"])
    if not args.skip_base:
        # The same pretrained encoder fine-tuned on section classes (the behaviour before attribute classes).
        run = copy_run(args.run, work / "section", ["finetune.classes=id"])
        for ckpt in (run / "checkpoints").glob("finetune-*.ckpt"):
            ckpt.unlink()
        train.finetune(run, data=data, progress=False)
        out["n_section_classes"] = len(json.loads((run / "run.json").read_text())["classes"])
        out["section / dev names"] = summary(evaluate_run(run, data=data, scorer="idprob", progress=False)["idprob"])
        out["section / bare names"] = summary(evaluate_run(run, data=evaluation, scorer="idprob",
                                                           progress=False)["idprob"])
    out["wall_s"] = round(time.time() - started, 1)
    write_json(result_file, out)
    cols = ["hmean_auc_source", "hmean_auc_target", "hmean_pauc", "official", "dcase2021", "within_domain_auc_mean"]
    print("| classes / test names | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for arm, vals in out.items():
        if isinstance(vals, dict):
            print(f"| {arm} | " + " | ".join(f"{vals[c]:.2f}" for c in cols) + " |")
    print(f"{out['n_classes']} attribute classes, {out.get('n_section_classes')} section classes; {out['wall_s']} s")


if __name__ == "__main__":
    main()
