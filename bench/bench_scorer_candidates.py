"""Training-free scorer candidates on cached log-mels (issue 9): which members generalise, set by set.

For each data set (any DCASE-layout folder) the log-mels of the tiny preset (128 mels, hop 512, per-band
normalisation with the training clips) are computed; then each candidate is fitted per unit on the normal training
clips and scores the test clips. AUC/pAUC come from ``rcmae.evaluation.metrics.evaluate_scores`` (per ID, mean per
type, mean over types). ``--write`` keeps the numbers in bench/results/scorer-candidates.json and draws
bench/results/scorer-candidates.md from them alone (``render``; bench/assemble.py redraws it).

Usage: ``python bench/bench_scorer_candidates.py --data NAME=FOLDER [...] [--write]``; the committed page used the
design suite's three generated sets ``demo-s0``, ``near-identical`` and ``domain-shift``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.covariance import ledoit_wolf

from rcmae.data.datasets import compute_logmels
from rcmae.data.features import LogMel
from rcmae.data.index import index_dataset
from rcmae.evaluation.metrics import evaluate_scores
from rcmae.models.rcmae import clip_stats
from rcmae.run import config as rconfig
from rcmae.scorers.frames import FrameGaussian, band_stats, context_frames

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, save_raw, write_result  # noqa: E402


def logmels(folder: Path) -> dict:
    """Normalised log-mels and index rows of a set's train and labelled test clips."""
    cfg = rconfig.load_config("tiny")
    index = index_dataset(folder)
    train = index[index["split"] == "train"].reset_index(drop=True)
    test = index[(index["split"] == "test") & index["label"].isin(["normal", "anomaly"])].reset_index(drop=True)
    lm = LogMel(cfg.features)
    xtr, _, _ = compute_logmels(list(train["path"]), lm, 16000, cfg.data.duration, progress=False)
    xte, _, _ = compute_logmels(list(test["path"]), lm, 16000, cfg.data.duration, progress=False)
    mean, std = xtr.mean(dim=(0, 2), keepdim=True), xtr.std(dim=(0, 2), keepdim=True).clamp_min(1e-5)
    return {"xtr": (xtr - mean) / std, "xte": (xte - mean) / std, "train": train, "test": test}


def _units(frame):
    return list(zip(frame["machine_type"].astype(str), frame["machine_id"].astype(str), strict=True))


FOLDS = 5


def per_unit(score_fn, ftr, fte, tr_units, te_units):
    """Per unit: test scores from ``score_fn(train rows, queries)`` fitted on all its normal training clips, and
    held-out training scores (each clip scored by a fit on the other folds; 5 folds, seeded)."""
    out, held = np.empty(len(te_units)), np.empty(len(tr_units))
    rng = np.random.default_rng(0)
    for u in sorted(set(tr_units)):
        a = np.array([i for i, v in enumerate(tr_units) if v == u])
        b = [i for i, v in enumerate(te_units) if v == u]
        out[b] = score_fn(ftr[a], fte[b])
        fold = rng.permutation(len(a)) % FOLDS
        for k in range(FOLDS):
            held[a[fold == k]] = score_fn(ftr[a[fold != k]], ftr[a[fold == k]])
    return out, held


def knn1(ref, q):
    mu, sd = ref.mean(0), ref.std(0) + 1e-6
    r, qq = (ref - mu) / sd, (q - mu) / sd
    return np.sqrt(((qq[:, None, :] - r[None]) ** 2).sum(-1)).min(1)


def maha_lw(ref, q):
    cov, _ = ledoit_wolf(ref)
    p = np.linalg.inv(cov)
    d = q - ref.mean(0)
    return np.sqrt(np.einsum("ij,jk,ik->i", d, p, d))


def candidates(d: dict) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """``{candidate: (test scores, held-out train scores, seconds)}``."""
    tr_u, te_u = _units(d["train"]), _units(d["test"])
    res = {}
    t = time.time()
    s2tr, s2te = clip_stats(d["xtr"]).double().numpy(), clip_stats(d["xte"]).double().numpy()
    bstr, bste = band_stats(d["xtr"]).double().numpy(), band_stats(d["xte"]).double().numpy()
    feat_s = time.time() - t
    for name, (ftr, fte) in {"stats": (s2tr, s2te), "bandstats": (bstr, bste)}.items():
        for kind, fn in {"knn": knn1, "maha": maha_lw}.items():
            t = time.time()
            res[f"{name}_{kind}"] = (*per_unit(fn, ftr, fte, tr_u, te_u), time.time() - t + feat_s)
    # Frame-level: one Gaussian per unit over 5-frame context vectors (exact fold models from per-clip sums).
    t = time.time()
    suff = [FrameGaussian.sufficient(context_frames(d["xtr"][i].numpy())) for i in range(len(tr_u))]
    te_frames = [context_frames(d["xte"][i].numpy()) for i in range(len(te_u))]
    variants = {"frame_maha": lambda g, f: g.maha(f)}
    variants.update({f"frame_pca{m}": (lambda g, f, m=m: g.pca_residual(f, m)) for m in (8, 32, 128)})
    test = {v: np.empty(len(te_u)) for v in variants}
    held = {v: np.empty(len(tr_u)) for v in variants}
    rng = np.random.default_rng(0)

    def gauss(rows):
        return FrameGaussian().fit_sufficient(sum(suff[i][0] for i in rows), sum(suff[i][1] for i in rows),
                                              sum(suff[i][2] for i in rows))

    for u in sorted(set(tr_u)):
        a = np.array([i for i, v in enumerate(tr_u) if v == u])
        g = gauss(a)
        for i in [i for i, v in enumerate(te_u) if v == u]:
            for v, fn in variants.items():
                test[v][i] = fn(g, te_frames[i])
        fold = rng.permutation(len(a)) % FOLDS
        for k in range(FOLDS):
            gk = gauss(a[fold != k])
            for i in a[fold == k]:
                f = context_frames(d["xtr"][i].numpy())
                for v, fn in variants.items():
                    held[v][i] = fn(gk, f)
    secs = time.time() - t
    for v in variants:
        res[v] = (test[v], held[v], secs)
    return res


def zmean(res: dict, names, d) -> np.ndarray:
    """Equal-weight mean of per-unit z-scores; each member's mean/std per unit come from its held-out normal
    training scores (never from test clips)."""
    tr_u, te_u = _units(d["train"]), _units(d["test"])
    out = np.zeros(len(te_u))
    for name in names:
        s, h = res[name][0], res[name][1]
        for u in set(te_u):
            a = [i for i, v in enumerate(tr_u) if v == u]
            b = [i for i, v in enumerate(te_u) if v == u]
            out[b] += (s[b] - h[a].mean()) / max(h[a].std(), 1e-12)
    return out / len(names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True, help="NAME=FOLDER")
    ap.add_argument("--write", action="store_true", help="write bench/results/scorer-candidates.json and .md")
    args = ap.parse_args()
    raw = {"header": header("Training-free scorer candidates (no run)"), "load_before": os.getloadavg()[0],
           "sets": {}, "rows": []}
    for item in args.data:
        name, folder = item.split("=", 1)
        d = logmels(Path(folder))
        raw["sets"][name] = {"data": folder, "n_train": len(d["train"]), "n_test": len(d["test"])}
        res = candidates(d)
        for combo in (("stats_maha", "frame_maha"), ("bandstats_maha", "frame_maha"),
                      ("bandstats_maha", "frame_pca32")):
            res["+".join(combo)] = (zmean(res, combo, d), None, sum(res[c][2] for c in combo))
        for cand, (scores, _, secs) in res.items():
            avg = evaluate_scores(d["test"].assign(score=scores), system=cand, data=name)["average"]
            raw["rows"].append({"set": name, "candidate": cand, "auc": avg["auc"], "pauc": avg["pauc"],
                                "seconds": round(secs, 2)})
        print(pd.DataFrame([r for r in raw["rows"] if r["set"] == name]).to_string(index=False), flush=True)
    raw["load_after"] = os.getloadavg()[0]
    text = render(raw)
    print(text)
    if args.write:
        save_raw("scorer-candidates", raw)
        print(write_result("scorer-candidates", text))


def render(raw: dict) -> str:
    """bench/results/scorer-candidates.md from the raw numbers alone (bench/assemble.py calls it)."""
    table = pd.DataFrame(raw["rows"])
    sets = list(raw["sets"])
    auc = table.pivot(index="candidate", columns="set", values="auc")[sets]
    pauc = table.pivot(index="candidate", columns="set", values="pauc")[sets]
    auc["mean"], pauc["mean"] = auc.mean(axis=1), pauc.mean(axis=1)
    order = auc["mean"].sort_values(ascending=False, kind="stable").index
    lines = ["| candidate | " + " | ".join(f"{c} AUC / pAUC" for c in auc.columns) + " |",
             "|---|" + "---:|" * len(auc.columns)]
    lines += [f"| {c} | " + " | ".join(f"{auc.loc[c, s]:.3f} / {pauc.loc[c, s]:.3f}" for s in auc.columns) + " |"
              for c in order]
    about = "; ".join(f"`{n}`: {s['data']} ({s['n_train']} training, {s['n_test']} test clips)"
                      for n, s in raw["sets"].items())
    return "\n".join([
        raw["header"].rstrip(), "",
        f"Sets: {about}. Candidates fitted per unit on the normalised log-mels only (`stats` = per-band mean/std, "
        "`bandstats` = the 6 statistics of `rcmae.scorers.frames.band_stats`; kNN = 1-NN Euclidean on per-unit "
        "standardised features; maha = Ledoit-Wolf; `frame_*` = one Gaussian per unit over 5-frame context "
        "vectors, `frame_pcaK` its residual outside K principal components; `+` = equal-weight mean of per-unit "
        "z-scores from 5-fold held-out training scores). These are the design sets: the shipped members "
        "(`stats_maha`, `frame_pca` with 32 components) were chosen among such candidates on sets like these. "
        f"1-minute load average {raw['load_before']:.1f} before and {raw['load_after']:.1f} after (2 cores).", "",
        *lines, ""])


if __name__ == "__main__":
    main()
