"""Training-free scorer candidates on cached log-mels (issue 9): which members generalise, set by set.

For each data set (``bench/scorer_sets.py`` or any DCASE-layout folder) the log-mels of the tiny preset
(128 mels, hop 512, per-band normalisation with the training clips) are computed once and cached; then each
candidate is fitted per unit on the normal training clips and scores the test clips. AUC/pAUC come from
``rcmae.evaluation.metrics.evaluate_scores`` (per ID, mean per type, mean over types).

Usage: ``python bench/bench_scorer_candidates.py --data NAME=FOLDER [...] --cache DIR``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.covariance import ledoit_wolf

from rcmae.data.datasets import compute_logmels
from rcmae.data.features import LogMel
from rcmae.data.index import index_dataset
from rcmae.evaluation.metrics import evaluate_scores
from rcmae.models.rcmae import clip_stats
from rcmae.run import config as rconfig
from rcmae.scorers.frames import FrameGaussian, band_stats, context_frames


def logmels(folder: Path, cache: Path) -> dict:
    """Normalised log-mels and index rows of a set's train and labelled test clips (cached)."""
    if cache.is_file():
        return torch.load(cache, weights_only=False)
    cfg = rconfig.load_config("tiny")
    index = index_dataset(folder)
    train = index[index["split"] == "train"].reset_index(drop=True)
    test = index[(index["split"] == "test") & index["label"].isin(["normal", "anomaly"])].reset_index(drop=True)
    lm = LogMel(cfg.features)
    xtr, _, _ = compute_logmels(list(train["path"]), lm, 16000, cfg.data.duration, progress=False)
    xte, _, _ = compute_logmels(list(test["path"]), lm, 16000, cfg.data.duration, progress=False)
    mean, std = xtr.mean(dim=(0, 2), keepdim=True), xtr.std(dim=(0, 2), keepdim=True).clamp_min(1e-5)
    out = {"xtr": (xtr - mean) / std, "xte": (xte - mean) / std, "train": train, "test": test}
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, cache)
    return out


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
    ap.add_argument("--cache", type=Path, default=Path("/tmp/rcmae-scorer-cache"))
    args = ap.parse_args()
    rows = []
    for item in args.data:
        name, folder = item.split("=", 1)
        d = logmels(Path(folder), args.cache / f"{name}.pt")
        res = candidates(d)
        for combo in (("stats_maha", "frame_maha"), ("bandstats_maha", "frame_maha"),
                      ("bandstats_maha", "frame_pca32")):
            res["+".join(combo)] = (zmean(res, combo, d), None, sum(res[c][2] for c in combo))
        for cand, (scores, _, secs) in res.items():
            avg = evaluate_scores(d["test"].assign(score=scores), system=cand, data=name)["average"]
            rows.append({"set": name, "candidate": cand, "auc": avg["auc"], "pauc": avg["pauc"],
                         "seconds": round(secs, 2)})
        print(pd.DataFrame([r for r in rows if r["set"] == name]).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    print(table.pivot(index="candidate", columns="set", values="auc").round(3).to_string())


if __name__ == "__main__":
    main()
