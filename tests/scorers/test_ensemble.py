"""The ensemble's arithmetic on its own (rcmae.scorers.ensemble): per-unit z-scores by hand, and its refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rcmae.scorers.base import Clips, ScoringError
from rcmae.scorers.ensemble import EnsembleScorer, zscore


def _clips(types, ids):
    return Clips(torch.zeros(len(types), 4, 4), types, ids, None, lambda name: np.zeros((len(types), 1)))


def test_ensemble_is_the_mean_of_each_members_per_unit_z_scores_by_hand():
    types, ids = ["fan", "fan", "pump"], ["00", "02", "00"]
    raw = {"a": np.array([3.0, 5.0, 10.0]), "b": np.array([1.0, -1.0, 0.5])}
    moments = {"a": {"fan/00": [1.0, 2.0], "fan/02": [5.0, 0.5], "pump/00": [4.0, 3.0]},
               "b": {"fan/00": [0.0, 1.0], "fan/02": [1.0, 4.0], "pump/00": [0.5, 0.25]}}
    ens = EnsembleScorer(None, "run", lambda: ["a", "b"], lambda name, clips: raw[name], moments, lambda m: "")
    got = ens.score(_clips(types, ids))
    # a: (3-1)/2 = 1, (5-5)/0.5 = 0, (10-4)/3 = 2; b: (1-0)/1 = 1, (-1-1)/4 = -0.5, (0.5-0.5)/0.25 = 0.
    np.testing.assert_allclose(got, [(1 + 1) / 2, (0 - 0.5) / 2, (2 + 0) / 2], rtol=0, atol=1e-12)


def test_a_unit_without_moments_is_refused_naming_the_member():
    moments = {"frame_pca": {"fan/00": [0.0, 1.0]}}
    ens = EnsembleScorer(None, "run", lambda: ["frame_pca"], lambda name, clips: np.zeros(2), moments,
                         lambda m: "")
    with pytest.raises(ScoringError, match="no training-score moments of frame_pca"):
        ens.score(_clips(["fan", "fan"], ["00", "04"]))
    with pytest.raises(ScoringError, match="no training-score moments of stats_maha for the ensemble"):
        EnsembleScorer(None, "run", lambda: ["stats_maha"], lambda name, clips: np.zeros(1), {},
                       lambda m: "").score(_clips(["fan"], ["00"]))


def test_zscore_refuses_units_that_do_not_match_the_scores():
    with pytest.raises(ValueError):  # one machine ID too few: never a silently shorter result
        zscore(np.zeros(2), ["fan", "fan"], ["00"], {"fan/00": [0.0, 1.0]}, "a")
