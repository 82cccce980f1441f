"""Scorer families behind one interface (:class:`Scorer`: fit on the normal clips per unit, score clips).

One module per family: ``idprob`` (the paper's classifier score), ``knn`` (``knn``, ``knn_joint``), ``maha``,
``recon`` (``recon``, ``recon_topk``) and ``ensemble``. :class:`rcmae.score.Detector` composes them; thresholds
come from :func:`fit_unit_thresholds` of held-out normal training scores. numpy and torch only.
"""

from rcmae.scorers.base import (
    Clips,
    NormalSet,
    Scorer,
    ScoringError,
    fit_threshold,
    fit_unit_thresholds,
)
from rcmae.scorers.ensemble import EnsembleScorer, zscore
from rcmae.scorers.idprob import IdProbScorer
from rcmae.scorers.knn import JointKnnScorer, KnnScorer, joint_features, knn_distances, knn_euclidean
from rcmae.scorers.maha import MahaScorer, fit_gaussian, mahalanobis
from rcmae.scorers.recon import RECON_SEED, ReconScorer, ReconTopkScorer, topk_mean

# Every scorer name, in the order ``rcmae evaluate`` computes them (an ensemble comes after its members).
SCORERS = ("idprob", "knn", "recon", "knn_joint", "maha", "recon_topk", "ensemble")

__all__ = [
    "RECON_SEED", "SCORERS", "Clips", "EnsembleScorer", "IdProbScorer", "JointKnnScorer", "KnnScorer", "MahaScorer",
    "NormalSet", "ReconScorer", "ReconTopkScorer", "Scorer", "ScoringError", "fit_gaussian", "fit_threshold",
    "fit_unit_thresholds", "joint_features", "knn_distances", "knn_euclidean", "mahalanobis", "topk_mean", "zscore",
]
