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
    with pytest.raises(ValueError, match="unit fan/00 has 40 labels but 40 and 39 scores"):
        paired_bootstrap(labels, a, b)
