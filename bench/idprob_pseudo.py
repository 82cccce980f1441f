"""The idprob study, part 2: augmented pseudo-classes and score-side choices on the generalization suite.

Fine-tunes the suite's finished RC-MAE runs again (their pretraining is reused: each set's
``sets/<set>/systems/rcmae/seed<S>/run`` is copied, never written) with the fine-tuning overrides of each
variant, then keeps the classifier's logits of every crop window of every labelled test clip, so that the
score-side choices are computed from one fine-tuning each:

- ``identity``: ``-log p(own ID, unchanged | clip)`` (softmax over all ``N * K`` classes), mean over windows
  (the scorer's default, ``score.idprob_pseudo=identity``, ``score.idprob_windows=mean``);
- ``marginal``: ``-log sum_k p(own ID, transform k | clip)``;
- ``*_max``: the highest window score instead of the mean;
- ``*_type``: the softmax over the classes of the clip's own machine type only.

For plain runs (no pseudo-classes) ``identity`` and ``marginal`` are both the paper's idprob.

    python bench/idprob_pseudo.py --suite-data /tmp/i9/suite-data --suite-out /tmp/i9/suite-out \\
        --work /tmp/idp/pseudo --sets demo-s0 --variant base= \\
        --variant "speed3=finetune.pseudo_classes=[speed:0.97,speed:1.03]"
    python bench/idprob_pseudo.py --work /tmp/idp/pseudo --report

Each variant's numbers go to ``WORK/<set>/<variant>.json`` (its window logits to ``<variant>.npz``).
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
from idprob_study import test_logmels  # noqa: E402

from rcmae.evaluation.metrics import evaluate_scores  # noqa: E402
from rcmae.files import read_json, write_json  # noqa: E402
from rcmae.scorers import detector as score  # noqa: E402
from rcmae.training import stages as train

SCORES = ("identity", "marginal", "identity_max", "marginal_max", "identity_type", "marginal_type")


def pretrained(suite_out: Path, name: str, seed: int, work: Path) -> Path:
    """A copy of the suite's finished run of set ``name`` without its fine-tuning (``work/pretrained``)."""
    run = work / "pretrained"
    if (run / "checkpoints" / "pretrain-last.ckpt").is_file():
        return run
    src = suite_out / "sets" / name / "systems" / "rcmae" / f"seed{seed}" / "run"
    if not (src / "checkpoints" / "pretrain-last.ckpt").is_file():
        raise FileNotFoundError(f"{src}: no finished suite run to reuse; run `rcmae benchmark --suite` first")
    remove_run(run)
    shutil.copytree(src, run, ignore=shutil.ignore_patterns("finetune-*", "eval"))
    return run


@torch.no_grad()
def window_logits(det: score.Detector, x: torch.Tensor) -> np.ndarray:
    """Classifier logits ``[W, n, C]`` of every crop window of the log-mels ``x [n, F, T]``."""
    model = det.models["finetune"]
    out = []
    for b in range(0, len(x), 32):
        out.append(torch.stack([model.classify(model.embed(w)) for w in det._windows(x[b : b + 32])]))
    return torch.cat(out, 1).double().numpy()


def scores_from_logits(logits: np.ndarray, unit: np.ndarray, k: int, mode: str, reduce: str,
                       allowed: np.ndarray | None = None) -> np.ndarray:
    """Clip scores from window logits ``[W, n, N * K]``; ``allowed [n, N]`` masks units out of the softmax."""
    w, n, c = logits.shape
    lg = torch.as_tensor(logits).reshape(w, n, c // k, k)
    if allowed is not None:
        lg = lg.masked_fill(~torch.as_tensor(allowed)[None, :, :, None], float("-inf"))
    logp = torch.log_softmax(lg.reshape(w, n, c), -1).reshape(w, n, c // k, k)
    own = logp[:, torch.arange(n), torch.as_tensor(unit)]  # [W, n, K]
    per = -own[..., 0] if mode == "identity" else -torch.logsumexp(own, -1)
    return (per.amax(0) if reduce == "max" else per.mean(0)).numpy()


def run_variant(data: Path, work: Path, name: str, overrides: list[str], pre: Path, x: torch.Tensor,
                test: pd.DataFrame) -> dict:
    out = work / f"{name}.json"
    if out.is_file():
        return read_json(out)
    run = work / "runs" / name
    remove_run(run)
    shutil.copytree(pre, run, ignore=shutil.ignore_patterns("finetune-*", "embeddings", "eval"))
    started = time.time()
    train.finetune(run=run, data=data, overrides=overrides, progress=False)
    wall = time.time() - started
    det = score.Detector.load(run, fit=False)
    k = det._families["idprob"].n_transforms
    types, ids = list(test["machine_type"].astype(str)), list(test["machine_id"].astype(str))
    # One class per clip here (machine-ID classes; attribute classes would give several).
    classes = det._class_indices(types, ids)
    if any(len(c) != 1 for c in classes):
        raise ValueError(f"{data}: a test clip maps to several classes; this study needs one class per clip")
    unit = np.asarray([c[0] for c in classes])
    logits = window_logits(det, x)
    np.savez_compressed(work / f"{name}.npz", logits=logits.astype(np.float32), unit=unit,
                        anomaly=(test["label"] == "anomaly").to_numpy())
    same_type = np.array([[c[0] == t for c in det.classes] for t in types])
    record: dict = {"variant": name, "overrides": overrides, "n_transforms": k, "finetune_s": round(wall, 1)}
    for sc in SCORES:
        mode, _, rest = sc.partition("_")
        s = scores_from_logits(logits, unit, k, mode, "max" if rest == "max" else "mean",
                               same_type if rest == "type" else None)
        res = evaluate_scores(test.assign(score=s), system=f"idprob-{name}-{sc}", data=str(data))
        record[sc] = {"auc": res["average"]["auc"], "pauc": res["average"]["pauc"]}
    # The Detector's own idprob (the run's config: score.idprob_pseudo / idprob_windows) must equal one of them.
    det_s = det.score_logmels(x, types, ids, "idprob")
    res = evaluate_scores(test.assign(score=det_s), system=f"idprob-{name}", data=str(data))
    record["detector"] = {"auc": res["average"]["auc"], "pauc": res["average"]["pauc"]}
    p = np.exp(-scores_from_logits(logits, unit, k, "identity", "mean"))
    anomalous = (test["label"] == "anomaly").to_numpy()
    record["p_med_normal"], record["p_med_anomaly"] = float(np.median(p[~anomalous])), float(np.median(p[anomalous]))
    write_json(out, record)
    remove_run(run, "checkpoints")
    return record


def temperature_table(work: Path, suite_data: Path, temps: list[float]) -> str:
    """AUC / pAUC of ``-log softmax(logits / T)[own ID, unchanged]`` (mean over windows) from the saved logits."""
    lines = ["| set | variant | " + " | ".join(f"T = {t:g}" for t in temps) + " |", "|---|---|" + "---:|" * len(temps)]
    for npz in sorted(work.glob("*/*.npz"), key=lambda p: p.stat().st_mtime):
        saved = np.load(npz)
        set_work = npz.parent
        _, test = test_logmels(suite_data / set_work.name, set_work / "pretrained", set_work)
        k = int(read_json(npz.with_suffix(".json"))["n_transforms"])
        cells = []
        for t in temps:
            s = scores_from_logits(saved["logits"].astype(np.float64) / t, saved["unit"], k, "identity", "mean")
            res = evaluate_scores(test.assign(score=s), system="t", data=str(set_work))["average"]
            cells.append(f"{res['auc']:.3f} / {res['pauc']:.3f}")
        lines.append(f"| {set_work.name} | {npz.stem} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(work: Path, score_names: tuple[str, ...] = SCORES) -> str:
    """Markdown: one row per (variant, score), AUC / pAUC per set and the mean over the sets it has."""
    files = sorted((p for p in work.glob("*/*.json") if p.name != "test_paths.json"), key=lambda p: p.stat().st_mtime)
    recs = [read_json(p) | {"set": p.parent.name} for p in files]
    sets = sorted({r["set"] for r in recs})
    by = {(r["variant"], r["set"]): r for r in recs}
    variants = list(dict.fromkeys(r["variant"] for r in recs))
    head = ["variant", "score"] + sets + ["mean AUC / pAUC (sets)"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for v in variants:
        for sc in score_names:
            cells = [by.get((v, s), {}).get(sc) for s in sets]
            have = [c for c in cells if c]
            if not have:
                continue
            mean = (f"{np.mean([c['auc'] for c in have]):.3f} / {np.mean([c['pauc'] for c in have]):.3f} "
                    f"({len(have)})")
            row = [v, sc] + [f"{c['auc']:.3f} / {c['pauc']:.3f}" if c else "-" for c in cells] + [mean]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite-data", type=Path, default=Path("/tmp/i9/suite-data"))
    ap.add_argument("--suite-out", type=Path, default=Path("/tmp/i9/suite-out"))
    ap.add_argument("--seed", type=int, default=0, help="which suite seed's runs to reuse")
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--sets", default="demo-s0,demo-s1,near-identical,domain-shift")
    ap.add_argument("--variant", action="append", dest="variants",
                    help="NAME=key=value;key=value (repeatable); 'base=' is the run's own fine-tuning")
    ap.add_argument("--report", action="store_true", help="only print the table of the finished variants")
    ap.add_argument("--scores", default=",".join(SCORES))
    ap.add_argument("--temperatures", default=None, help="e.g. 0.5,1,2,4: the identity score at each softmax "
                    "temperature, from the saved logits of every finished variant")
    args = ap.parse_args()
    if args.temperatures:
        print(temperature_table(args.work, args.suite_data, [float(t) for t in args.temperatures.split(",")]))
        return
    if args.report:
        print(report(args.work, tuple(args.scores.split(","))))
        return
    for spec in args.variants or ["base="]:
        name, _, rest = spec.partition("=")
        overrides = [o for o in rest.split(";") if o]
        for set_name in args.sets.split(","):
            data = args.suite_data / set_name
            work = args.work / set_name
            work.mkdir(parents=True, exist_ok=True)
            pre = pretrained(args.suite_out, set_name, args.seed, work)
            x, test = test_logmels(data, pre, work)
            rec = run_variant(data, work, name, overrides, pre, x, test)
            cells = "  ".join(f"{sc} {rec[sc]['auc']:.3f}/{rec[sc]['pauc']:.3f}" for sc in SCORES)
            print(f"{set_name:15s} {name:14s} {cells}  p_med {rec['p_med_normal']:.3f}/{rec['p_med_anomaly']:.3f} "
                  f"({rec['finetune_s']} s)", flush=True)


if __name__ == "__main__":
    main()
