"""The idprob study (issue 9, part 3): what moves the paper's score ``-log p(true ID | clip)``.

One RC-MAE pretraining per data set (preset ``--preset``, cached in ``WORK/<set>/pretrained``), then one
fine-tuning per variant (the choices the paper leaves open: lambda_SCL / lambda_CE, tau, augmentation,
mixup, class-balanced batches, label smoothing, an ArcFace margin, epochs), each scored with ``idprob``
through :class:`rcmae.scorers.Detector` on the labelled test clips. Besides AUC/pAUC it records the
calibration of the classifier: the median ``p(true ID)`` on normal and on anomalous test clips, the
fraction of clips with ``p(true ID) > 0.999`` (saturated), and the fraction of test clips whose score ties
with another's (a float32 ``-log p`` of a saturated softmax is exactly 0).

    python bench/idprob_study.py --data /tmp/cls/demoA /tmp/cls/demoB --work /tmp/cls/idprob
    python bench/idprob_study.py ... --variants base,ls0.1      # a subset; finished variants are reused

Each variant's numbers go to ``WORK/<set>/<variant>.json``; the table to stdout (the study log
docs/studies/idprob.md quotes them). A new result a claim rests on keeps its JSON and draws its page from
it (see docs/studies/README.md).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import remove_run  # noqa: E402

from rcmae.data.datasets import compute_logmels  # noqa: E402
from rcmae.data.index import index_dataset  # noqa: E402
from rcmae.evaluation.metrics import evaluate_scores  # noqa: E402
from rcmae.files import read_json, write_json  # noqa: E402
from rcmae.scorers import detector as score  # noqa: E402
from rcmae.training import stages as train

VARIANTS: dict[str, list[str]] = {
    "base": [],
    "ls0.3": ["finetune.label_smoothing=0.3"],
    "arcface": ["finetune.head=arcface", "finetune.margin=0.2", "finetune.scale=16"],
    "mixup0.4": ["finetune.mixup_alpha=0.4"],
    "epochs5": ["finetune.epochs=5"],
    "ce_only": ["finetune.w_supcon=0"],
    "scl_heavy": ["finetune.w_ce=0.2"],
    "tau0.5": ["finetune.tau=0.5"],
    "balanced": ["finetune.balanced=true"],
    "noaug": ["finetune.augment=false"],
    "ls0.1": ["finetune.label_smoothing=0.1"],
    "epochs60": ["finetune.epochs=60"],
    "frozen": ["finetune.freeze_encoder=true"],
}


def pretrained(data: Path, work: Path, preset: str, overrides: list[str]) -> Path:
    run = work / "pretrained"
    if (run / "checkpoints" / "pretrain-last.ckpt").is_file():
        return run
    remove_run(run)
    started = time.time()
    train.pretrain(data=data, out=run, preset=preset, overrides=overrides, progress=False, fit_scores=False)
    write_json(work / "pretrain_time.json", {"wall_s": round(time.time() - started, 1)})
    return run


def test_logmels(data: Path, run: Path, work: Path) -> tuple[torch.Tensor, pd.DataFrame]:
    cache = work / "test_logmels.pt"
    index = index_dataset(data)
    test = index[(index["split"] == "test") & index["label"].isin(["normal", "anomaly"])].reset_index(drop=True)
    if cache.is_file():
        saved = torch.load(cache, weights_only=True)
        return saved["x"], test.set_index("path").loc[list(read_json(work / "test_paths.json"))].reset_index()
    det = score.Detector.load(run, fit=False)
    x, kept, _ = compute_logmels(list(test["path"]), det.logmel, det.cfg.data.sample_rate, det.cfg.data.duration,
                                 progress=False, transform=det.stats.apply)
    torch.save({"x": x}, cache)
    write_json(work / "test_paths.json", list(kept))
    return x, test.set_index("path").loc[kept].reset_index()


@torch.no_grad()
def idprob_float32(det: score.Detector, x: torch.Tensor, types: list[str], ids: list[str]) -> np.ndarray:
    """``-log p(true ID)`` as the Detector computed it before (float32 log-softmax, mean over windows)."""
    model = det.models["finetune"]
    idx = torch.tensor([det.class_index[(t, i)] for t, i in zip(types, ids, strict=True)])
    out = []
    for b in range(0, len(x), 32):
        xb, ib = x[b : b + 32], idx[b : b + 32]
        per = [-torch.log_softmax(model.classify(model.embed(w)).float(), -1).gather(1, ib[:, None])[:, 0]
               for w in det._windows(xb)]
        out.append(torch.stack(per).mean(0))
    return torch.cat(out).double().numpy()


def run_variant(data: Path, work: Path, name: str, overrides: list[str], pre: Path, x: torch.Tensor,
                test: pd.DataFrame) -> dict:
    out = work / f"{name}.json"
    if out.is_file():
        return read_json(out)
    run = work / "runs" / name
    remove_run(run)
    shutil.copytree(pre, run, ignore=shutil.ignore_patterns("finetune-*", "embeddings", "eval"))
    started = time.time()
    train.finetune(run=run, data=data, overrides=overrides, progress=False, fit_scores=False)
    wall = time.time() - started
    det = score.Detector.load(run, fit=False)
    types, ids = list(test["machine_type"].astype(str)), list(test["machine_id"].astype(str))
    s = det.score_logmels(x, types, ids, "idprob")
    res = evaluate_scores(test.assign(score=s), system=f"idprob-{name}", data=str(data))
    # The same score computed in float32 (how rcmae computed it before this study): saturated clips tie at 0.
    s32 = idprob_float32(det, x, types, ids)
    res32 = evaluate_scores(test.assign(score=s32), system=f"idprob32-{name}", data=str(data))
    p = np.exp(-s)
    anomalous = (test["label"] == "anomaly").to_numpy()
    _, counts = np.unique(s, return_counts=True)
    record = {
        "variant": name, "overrides": overrides, "auc": res["average"]["auc"], "pauc": res["average"]["pauc"],
        "auc_float32": res32["average"]["auc"], "pauc_float32": res32["average"]["pauc"],
        "tied_float32": float(1 - len(np.unique(s32)) / len(s32)),
        "p_med_normal": float(np.median(p[~anomalous])), "p_med_anomaly": float(np.median(p[anomalous])),
        "saturated": float(np.mean(p > 0.999)), "tied": float(counts[counts > 1].sum() / len(s)),
        "finetune_s": round(wall, 1),
    }
    write_json(out, record)
    remove_run(run, "checkpoints")  # keep the disk small; the numbers are in the json
    return record


def report(work: Path) -> str:
    """Markdown table of every finished variant under ``work`` (AUC/pAUC and calibration per set, AUC mean)."""
    recs = [read_json(p) | {"set": p.parent.name} for p in sorted(work.glob("*/*.json"))
            if p.name not in ("pretrain_time.json", "test_paths.json")]
    sets = sorted({r["set"] for r in recs})
    by = {(r["variant"], r["set"]): r for r in recs}
    order = [v for v in VARIANTS if any((v, s) in by for s in sets)]
    order += sorted({r["variant"] for r in recs} - set(order))
    head = ["variant", "overrides"] + [f"{s} AUC / pAUC" for s in sets] + ["mean AUC"]
    head += [f"{s} median p(true ID) normal / anomalous" for s in sets]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for v in order:
        cells = [by.get((v, s)) for s in sets]
        ov = next(c["overrides"] for c in cells if c)
        aucs = [c["auc"] for c in cells if c]
        mean = f"{np.mean(aucs):.3f}" if len(aucs) == len(sets) else "-"
        row = [v, "`" + " ".join(ov) + "`" if ov else "(tiny fine-tuning as is)"]
        row += [f"{c['auc']:.3f} / {c['pauc']:.3f}" if c else "-" for c in cells] + [mean]
        row += [f"{c['p_med_normal']:.3f} / {c['p_med_anomaly']:.3f}" if c else "-" for c in cells]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", required=True, type=Path)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--set", action="append", default=[], dest="overrides", help="pretraining override")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="comma list of variant names, or NAME=key=value;key=value for a combination")
    ap.add_argument("--report", action="store_true", help="only print the table of the finished variants")
    args = ap.parse_args()
    if args.report:
        print(report(args.work))
        return
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for spec in args.variants.split(","):
        name, _, rest = spec.partition("=")
        overrides = VARIANTS[name] if not rest else rest.split(";")
        for data in args.data:
            work = args.work / data.name
            work.mkdir(parents=True, exist_ok=True)
            pre = pretrained(data, work, args.preset, args.overrides)
            x, test = test_logmels(data, pre, work)
            rec = run_variant(data, work, name, overrides, pre, x, test)
            rows.append({"set": data.name, **rec})
            print(f"{data.name:10s} {name:12s} AUC {rec['auc']:.3f} pAUC {rec['pauc']:.3f} "
                  f"p_med normal {rec['p_med_normal']:.4f} anomaly {rec['p_med_anomaly']:.4f} "
                  f"saturated {rec['saturated']:.2f} tied {rec['tied']:.2f} | float32 AUC {rec['auc_float32']:.3f} "
                  f"tied {rec['tied_float32']:.2f} ({rec['finetune_s']} s)", flush=True)
    frame = pd.DataFrame(rows)
    table = frame.pivot_table(index="variant", columns="set", values="auc", sort=False)
    table["mean"] = table.mean(axis=1)
    print("| variant | " + " | ".join(map(str, table.columns)) + " |")
    print("|---|" + "---:|" * len(table.columns))
    for name, row in table.iterrows():
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |")


if __name__ == "__main__":
    main()
