"""The paired bootstrap (rcmae.evaluation.intervals): point values are sklearn's, intervals behave as they must."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from rcmae.evaluation.intervals import paired_bootstrap


def _units(rng, sep_a: float, sep_b: float, n0: int = 20, n1: int = 20):
    labels, a, b = {}, {}, {}
    for t in ("fan", "pump"):
        for i in ("00", "02"):
            y = np.r_[np.zeros(n0, int), np.ones(n1, int)]
            noise = rng.normal(size=len(y))
            labels[(t, i)] = y
            a[(t, i)] = noise + sep_a * y + 0.3 * rng.normal(size=len(y))
            b[(t, i)] = noise + sep_b * y
    return labels, a, b


def test_point_values_are_sklearns_mean_over_types_of_the_mean_over_ids():
    labels, a, b = _units(np.random.default_rng(0), 0.5, 1.5)
    res = paired_bootstrap(labels, a, b, n=50)
    for side, scores in (("a", a), ("b", b)):
        per_type = [np.mean([roc_auc_score(labels[(t, i)], scores[(t, i)]) for i in ("00", "02")])
                    for t in ("fan", "pump")]
        assert res[side]["auc"]["value"] == pytest.approx(np.mean(per_type), abs=1e-12)
        pauc = [np.mean([roc_auc_score(labels[(t, i)], scores[(t, i)], max_fpr=0.1) for i in ("00", "02")])
                for t in ("fan", "pump")]
        assert res[side]["pauc"]["value"] == pytest.approx(np.mean(pauc), abs=1e-9)
        assert res[side]["auc"]["lo"] <= res[side]["auc"]["value"] <= res[side]["auc"]["hi"]
    assert res["diff"]["auc"]["value"] == pytest.approx(res["b"]["auc"]["value"] - res["a"]["auc"]["value"])


def test_a_clear_difference_is_a_win_and_identical_detectors_are_not():
    labels, a, b = _units(np.random.default_rng(1), 0.0, 3.0)
    res = paired_bootstrap(labels, a, b, n=60, seed=3)
    assert res["diff"]["auc"]["win"] == "b" and res["diff"]["auc"]["lo"] > 0
    # Paired: the same detector twice differs by exactly zero in every resample.
    same = paired_bootstrap(labels, b, b, n=30)
    assert same["diff"]["auc"] == {"value": 0.0, "lo": 0.0, "hi": 0.0, "win": None}
    # The same seed gives the same intervals; another seed other ones.
    assert paired_bootstrap(labels, a, b, n=60, seed=3) == res
    assert paired_bootstrap(labels, a, b, n=60, seed=4)["diff"]["auc"]["lo"] != res["diff"]["auc"]["lo"]


def test_mismatched_units_or_lengths_are_refused():
    labels, a, b = _units(np.random.default_rng(2), 1.0, 1.0)
    with pytest.raises(ValueError, match="cover the same units"):
        paired_bootstrap(labels, a, {k: v for k, v in b.items() if k[0] == "fan"})
    b[("fan", "00")] = b[("fan", "00")][:-1]
    with pytest.raises(ValueError, match=r"unit fan/00 has 40 labels but scores of shape \(40,\) and \(39,\)"):
        paired_bootstrap(labels, a, b)


def test_several_seeds_give_seed_means_on_the_same_resampled_clips():
    rng = np.random.default_rng(5)
    labels, a, b = _units(rng, 0.8, 1.2, n0=12, n1=8)
    # Three seeds of each system: the same clips, other scores.
    a3 = {u: np.stack([v + 0.4 * rng.normal(size=len(v)) for _ in range(3)]) for u, v in a.items()}
    b3 = {u: np.stack([v + 0.4 * rng.normal(size=len(v)) for _ in range(3)]) for u, v in b.items()}
    n, seed = 25, 7
    res = paired_bootstrap(labels, a3, b3, n=n, seed=seed)

    def set_number(scores, picks, max_fpr=None):
        per_type = []
        for t in ("fan", "pump"):
            per_id = []
            for i in ("00", "02"):
                y, rows = labels[(t, i)], picks[(t, i)]
                per_id.append(np.mean([roc_auc_score(y[rows], s[rows], max_fpr=max_fpr) for s in scores[(t, i)]]))
            per_type.append(np.mean(per_id))
        return np.mean(per_type)

    every = {u: np.arange(len(y)) for u, y in labels.items()}
    assert res["a"]["auc"]["value"] == pytest.approx(set_number(a3, every), abs=1e-12)
    assert res["b"]["pauc"]["value"] == pytest.approx(set_number(b3, every, 0.1), abs=1e-9)
    # The resamples, written out: one stratified draw per unit (sorted), shared by both systems and all seeds.
    draw = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        picks = {}
        for u in sorted(labels):
            y = labels[u]
            normal, anomalous = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
            picks[u] = np.concatenate([draw.choice(normal, len(normal)), draw.choice(anomalous, len(anomalous))])
        diffs.append(set_number(b3, picks) - set_number(a3, picks))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    assert (res["diff"]["auc"]["lo"], res["diff"]["auc"]["hi"]) == pytest.approx((lo, hi), abs=1e-12)
    # One seed given as [1, clips] is the plain one-seed bootstrap.
    one = {u: v[:1] for u, v in b3.items()}
    plain = {u: v[0] for u, v in b3.items()}
    assert paired_bootstrap(labels, a, one, n=20) == paired_bootstrap(labels, a, plain, n=20)


def test_roc_areas_equal_the_metrics_module_with_and_without_ties():
    from rcmae.evaluation.intervals import roc_areas
    from rcmae.evaluation.metrics import auc_pauc

    rng = np.random.default_rng(11)
    for trial in range(300):
        n0, n1 = rng.integers(1, 30, 2)
        y = np.r_[np.zeros(n0, int), np.ones(n1, int)]
        s = rng.normal(size=len(y)) + 0.7 * y
        if trial % 3 == 0:
            s = np.round(s, 1)  # ties, within and across the classes
        if trial % 7 == 0:
            s[:] = 1.0  # all tied: chance
        for max_fpr in (0.1, 0.05, 1.0):
            assert roc_areas(y, s, max_fpr) == pytest.approx(auc_pauc(y, s, max_fpr), abs=1e-12)
