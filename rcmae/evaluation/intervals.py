"""Confidence intervals for AUC / pAUC and for the difference between two detectors: a paired bootstrap over clips.

A data set's number is the mean over machine types of the mean over each type's units (DCASE 2020's
convention, :mod:`rcmae.evaluation.metrics`). One bootstrap resample draws, within every unit, its normal clips
and its anomalous clips with replacement (stratified, so each unit keeps its class counts), and recomputes that
number for both detectors on the *same* clips; the interval of the difference is the 2.5-97.5 % percentile range
of those paired differences. A difference is called a win only when its interval excludes zero.

Several end-to-end seeds of a system score the same test clips: give its scores as ``[seeds, clips]`` and every
number (the point value and each resample's) is the mean over the seeds, all seeds on the same resampled clips.
The interval is then the clip-sampling interval of the seed-mean; the spread between seeds is reported beside it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

METRICS = ("auc", "pauc")


def roc_areas(y: np.ndarray, s: np.ndarray, max_fpr: float = 0.1) -> tuple[float, float]:
    """AUC and McClish-standardised pAUC of one unit, as :func:`rcmae.evaluation.metrics.auc_pauc` computes them,
    without sklearn's input checks (the bootstrap calls this tens of thousands of times; tests compare the two).

    The ROC is sklearn's ``roc_curve(drop_intermediate=False)``: scores in descending order, one point per distinct
    score (ties move diagonally), starting at (0, 0).
    """
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]
    tps = np.cumsum(y_sorted)[last]
    fps = 1 + last - tps
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    auc = float(np.trapezoid(tpr, fpr))
    stop = np.searchsorted(fpr, max_fpr, side="right")
    area = float(np.trapezoid(np.append(tpr[:stop], np.interp(max_fpr, fpr, tpr)), np.append(fpr[:stop], max_fpr)))
    min_area = 0.5 * max_fpr**2
    return auc, 0.5 * (1 + (area - min_area) / (max_fpr - min_area))


def _set_means(units: Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray]], pick=None, max_fpr: float = 0.1
               ) -> dict[str, float]:
    per_type: dict[str, list[tuple[float, float]]] = {}
    for (mtype, _), (y, s) in units.items():
        rows = slice(None) if pick is None else pick[(mtype, _)]
        per_seed = [roc_areas(y[rows], row[rows], max_fpr) for row in np.atleast_2d(s)]
        per_type.setdefault(mtype, []).append(np.mean(per_seed, axis=0))
    means = [np.mean(v, axis=0) for v in per_type.values()]
    return {m: float(np.mean([v[k] for v in means])) for k, m in enumerate(METRICS)}


def paired_bootstrap(
    labels: Mapping[tuple[str, str], np.ndarray],
    scores_a: Mapping[tuple[str, str], np.ndarray],
    scores_b: Mapping[tuple[str, str], np.ndarray],
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    max_fpr: float = 0.1,
) -> dict:
    """AUC / pAUC of detectors ``a`` and ``b`` on one data set, and ``b - a``, each with a bootstrap interval.

    Args:
        labels: per unit ``(machine_type, machine_id)``, its test clips' labels (0 normal, 1 anomalous).
        scores_a, scores_b: per unit, the two detectors' scores of the same clips, in the same order: ``[clips]``,
            or ``[seeds, clips]`` for several seeds of a detector (numbers are then seed means).
        n: bootstrap resamples.
        seed: the resampling seed (the same seed gives the same intervals).
        level: the interval's coverage.

    Returns:
        ``{"a": {metric: {"value", "lo", "hi"}}, "b": {...}, "diff": {metric: {"value", "lo", "hi", "win"}}}``;
        ``value`` is the number on all clips, ``win`` is ``"b"`` or ``"a"`` when the difference's interval
        excludes zero, else ``None``.
    """
    units = sorted(labels)
    if not units or set(units) != set(scores_a) or set(units) != set(scores_b):
        raise ValueError("paired_bootstrap: labels and both detectors' scores must cover the same units")
    data_a, data_b = {}, {}
    for u in units:
        y = np.asarray(labels[u], dtype=int)
        a, b = np.asarray(scores_a[u], dtype=np.float64), np.asarray(scores_b[u], dtype=np.float64)
        if not (a.ndim in (1, 2) and b.ndim in (1, 2) and len(y) == a.shape[-1] == b.shape[-1]):
            raise ValueError(f"paired_bootstrap: unit {u[0]}/{u[1]} has {len(y)} labels but scores of shape "
                             f"{a.shape} and {b.shape} (want [clips] or [seeds, clips])")
        data_a[u], data_b[u] = (y, a), (y, b)
    point_a, point_b = _set_means(data_a, max_fpr=max_fpr), _set_means(data_b, max_fpr=max_fpr)
    rng = np.random.default_rng(seed)
    draws = {m: {"a": np.empty(n), "b": np.empty(n)} for m in METRICS}
    for k in range(n):
        pick = {}
        for u in units:
            y = data_a[u][0]
            normal, anomalous = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
            pick[u] = np.concatenate([rng.choice(normal, len(normal)), rng.choice(anomalous, len(anomalous))])
        ra, rb = _set_means(data_a, pick, max_fpr), _set_means(data_b, pick, max_fpr)
        for m in METRICS:
            draws[m]["a"][k], draws[m]["b"][k] = ra[m], rb[m]
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2

    def interval(values: np.ndarray) -> tuple[float, float]:
        lo, hi = np.percentile(values, [lo_q, hi_q])
        return float(lo), float(hi)

    out: dict = {"a": {}, "b": {}, "diff": {}, "n": n, "seed": seed, "level": level}
    for m in METRICS:
        for side, point in (("a", point_a), ("b", point_b)):
            lo, hi = interval(draws[m][side])
            out[side][m] = {"value": point[m], "lo": lo, "hi": hi}
        lo, hi = interval(draws[m]["b"] - draws[m]["a"])
        out["diff"][m] = {"value": point_b[m] - point_a[m], "lo": lo, "hi": hi,
                          "win": "b" if lo > 0 else "a" if hi < 0 else None}
    return out
