"""Scorer families behind one interface (:class:`Scorer`: fit on the normal clips per unit, score clips).

One module per family: ``idprob`` (the paper's classifier score), ``knn`` (``knn``, ``knn_joint``, the per-unit
normalised ``knn_norm`` and ``stats_knn``), ``maha`` (``maha``, ``stats_maha``), ``recon`` (``recon``,
``recon_topk``) and ``ensemble``; ``frames`` holds the training-free features (band statistics, context frames).
:class:`rcmae.scorers.Detector` composes them; thresholds come from :func:`fit_unit_thresholds` of held-out normal
training scores. numpy and torch only.
"""

from rcmae.scorers.base import (
    INVALID_REASON,
    Clips,
    NormalSet,
    Scorer,
    ScoringError,
    decide,
    fit_threshold,
    fit_unit_thresholds,
)
from rcmae.scorers.ensemble import EnsembleScorer, zscore
from rcmae.scorers.frames import FrameGaussian, FrameModels, FrameScorer, band_stats, context_frames
from rcmae.scorers.idprob import IdProbScorer
from rcmae.scorers.knn import (
    JointKnnScorer,
    KnnScorer,
    NormKnnScorer,
    joint_features,
    knn_distances,
    knn_euclidean,
)
from rcmae.scorers.maha import MahaScorer, StatsMahaScorer, fit_gaussian, mahalanobis
from rcmae.scorers.recon import RECON_SEED, ReconScorer, ReconTopkScorer, topk_mean

# Every scorer name, in the order ``rcmae evaluate`` computes them (an ensemble comes after its members).
SCORERS = ("idprob", "knn", "recon", "knn_joint", "maha", "recon_topk", "knn_norm", "stats_knn", "stats_maha",
           "frame_pca", "frame_maha", "ensemble")

__all__ = [
    "Detector", "fit_run",
    "INVALID_REASON", "decide",
    "RECON_SEED", "SCORERS", "Clips", "EnsembleScorer", "FrameGaussian", "FrameModels", "FrameScorer", "IdProbScorer",
    "JointKnnScorer", "KnnScorer", "MahaScorer", "NormKnnScorer", "NormalSet", "ReconScorer", "ReconTopkScorer",
    "Scorer", "ScoringError", "StatsMahaScorer", "band_stats", "context_frames", "fit_gaussian", "fit_threshold",
    "fit_unit_thresholds", "joint_features", "knn_distances", "knn_euclidean", "mahalanobis", "topk_mean", "zscore",
]


def __getattr__(name: str):
    # Detector (and fit_run) load a whole run: imported on first use, so the scorer families stay light.
    if name in ("Detector", "fit_run"):
        from rcmae.scorers import detector

        return getattr(detector, name)
    raise AttributeError(f"module 'rcmae.scorers' has no attribute {name!r}")
