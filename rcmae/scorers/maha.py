"""``maha``: Mahalanobis distance to a Gaussian of the unit's normal clips in the joint space.

The joint space is :func:`rcmae.scorers.knn.joint_features` with the statistics block weighted by
``score.maha_weight``; the covariance is Ledoit-Wolf shrunk (few clips, many dimensions).

Domain shift (DCASE 2021+, ``score.domain_banks``): one Gaussian per domain of the unit and the minimum
distance over them, the idea of the 2023-2024 baselines' "selective Mahalanobis". Each domain has its own
mean; the covariance is shared: Ledoit-Wolf of every clip's deviation from its own domain's mean (the
within-domain scatter). Ten target clips cannot estimate a covariance in this many dimensions (the baselines
estimate theirs on thousands of frame vectors per domain; a clip-level score has one vector per clip), and
a covariance of the pooled clips would absorb the domain shift itself.
"""

from __future__ import annotations

import numpy as np

from rcmae.scorers.base import Clips, NormalSet, Scorer, ScoringError
from rcmae.scorers.domains import domain_banks
from rcmae.scorers.knn import EmbeddingScorer, joint_space


def fit_gaussian(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and precision matrix of ``z [n, D]`` with a Ledoit-Wolf shrunk covariance (few clips, many dims)."""
    from sklearn.covariance import ledoit_wolf

    z = np.asarray(z, dtype=np.float64)
    if len(z) < 2:
        raise ScoringError("maha: a machine ID needs at least 2 normal training clips for a covariance")
    _check_varies(z)
    cov, _ = ledoit_wolf(z)
    # The shrunk covariance is well conditioned: a plain inverse is ~10x faster than the estimator's pinvh,
    # which matters for the leave-one-out fits (one per training clip).
    return z.mean(axis=0), np.linalg.inv(cov)


def _check_varies(z: np.ndarray) -> None:
    """Refuse clips without any variation (every covariance estimate is zero, so no precision exists)."""
    if not np.any(z != z[:1]):
        raise ScoringError(f"maha: the {len(z)} normal training clips of a machine ID are all identical, so no "
                           "covariance can be fitted; check for duplicated or silent training files")


def fit_domain_gaussians(z: np.ndarray, banks: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """One ``(mean, precision)`` per domain bank (rows of ``z``), the precision shared by all banks.

    The shared covariance is Ledoit-Wolf of every row's deviation from its own bank's mean (the within-domain
    scatter): a handful of target clips cannot estimate a covariance of their own, and a pooled covariance
    would absorb the domain shift itself.
    """
    z = np.asarray(z, dtype=np.float64)
    means = [z[b].mean(axis=0) for b in banks]
    within = np.concatenate([z[b] - m for b, m in zip(banks, means, strict=True)])
    precision = fit_gaussian(within)[1]
    return [(m, precision) for m in means]


def mahalanobis(z: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Mahalanobis distances ``sqrt((z - mean) P (z - mean))`` of the rows of ``z``."""
    d = np.asarray(z, dtype=np.float64) - mean
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, precision, d), 0.0))


class ShrunkGaussian:
    """sklearn's Ledoit-Wolf Gaussian of ``z [n, D]``, kept in the clips' own ``n``-dimensional space.

    The Ledoit-Wolf covariance is ``a I + b Xc^T Xc`` (``Xc`` the centred clips): a scaled identity plus a rank
    ``n - 1`` term. With fewer clips than dimensions (every DCASE unit: tens of clips, hundreds of features) its
    shrinkage and its inverse need only the ``n x n`` Gram matrix ``Xc Xc^T`` (sklearn's sums, rewritten over
    clips) and Woodbury's identity, so a fit costs ``O(n^2 D)`` instead of a ``D x D`` inverse: the leave-one-out
    fits behind held-out scores (one per training clip) take milliseconds. With ``n >= D`` it inverts the
    covariance as :func:`fit_gaussian` does. Both equal ``fit_gaussian`` + :func:`mahalanobis` to rounding
    (tests/scorers/test_scorers.py checks against sklearn).

    Args:
        z: The clips ``[n, D]`` (``n >= 2``).
        location: The mean distances are taken from (default: the clips' mean); the covariance is always that
            of the clips around their own mean, as sklearn's estimator.
    """

    def __init__(self, z: np.ndarray, location: np.ndarray | None = None) -> None:
        z = np.asarray(z, dtype=np.float64)
        n, dim = z.shape
        if n < 2:
            raise ScoringError("maha: a machine ID needs at least 2 normal training clips for a covariance")
        _check_varies(z)
        own = z.mean(axis=0)
        self.mean = own if location is None else np.asarray(location, dtype=np.float64)
        self.precision: np.ndarray | None = None
        if n >= dim:
            self.precision = fit_gaussian(z)[1]
            return
        x = z - own
        gram = x @ x.T
        sq = np.diag(gram).copy()  # squared norms of the centred clips
        trace = sq.sum() / n  # trace of the empirical covariance
        mu = trace / dim
        delta_ = float((gram**2).sum()) / n**2  # sum of squared entries of X^T X / n^2, over clips
        beta = ((sq**2).sum() / n - delta_) / (dim * n)
        delta = (delta_ - 2.0 * mu * trace + dim * mu**2) / dim
        beta = min(beta, delta)
        shrinkage = 0.0 if beta == 0 else beta / delta
        self.a, self.b = shrinkage * mu, (1.0 - shrinkage) / n
        if self.a <= 0.0:  # no shrinkage: singular with n < D; take the dense (pseudo-)inverse path
            self.precision = fit_gaussian(z)[1]
            return
        self.x = x
        self.kernel = self.a * np.eye(n) + self.b * gram

    def distances(self, q: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
        """Mahalanobis distances of the rows of ``q`` from ``mean`` (default: :attr:`mean`)."""
        d = np.asarray(q, dtype=np.float64) - (self.mean if mean is None else mean)
        if self.precision is not None:
            return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, self.precision, d), 0.0))
        xd = self.x @ d.T  # [n, B]
        quad = ((d**2).sum(1) - self.b * (xd * np.linalg.solve(self.kernel, xd)).sum(0)) / self.a
        return np.sqrt(np.maximum(quad, 0.0))


def domain_shrunk_gaussians(z: np.ndarray, banks: list[np.ndarray]) -> list[tuple[np.ndarray, ShrunkGaussian]]:
    """As :func:`fit_domain_gaussians`: per bank its mean, sharing one within-domain :class:`ShrunkGaussian`."""
    z = np.asarray(z, dtype=np.float64)
    means = [z[b].mean(axis=0) for b in banks]
    shared = ShrunkGaussian(np.concatenate([z[b] - m for b, m in zip(banks, means, strict=True)]))
    return [(m, shared) for m in means]


def unit_mahalanobis(q: np.ndarray, ref: np.ndarray, table: dict, rows: list[np.ndarray], exclude: list[int | None],
                     by_domain: bool, cache: dict, tag: tuple) -> np.ndarray:
    """Per query, the Mahalanobis distance to its unit's Gaussian, or the minimum over its unit's domain Gaussians.

    Args:
        q: Queries ``[B, D]``; ``ref``: the reference rows ``[n, D]`` of ``table`` (its ``path`` gives domains).
        rows, exclude: Per query, its unit's row indices and the position among them to leave out (or ``None``).
        by_domain: One Gaussian per domain (:func:`fit_domain_gaussians`) where the unit has two.
        cache: Fitted models by ``(*tag, first row, n rows, excluded, by_domain)``, reused across calls (one fit per
            unit, or per left-out clip when fitting thresholds).
        tag: What else the models depend on (the space, a weight).
    """
    out = np.empty(len(q))
    for n, (r, e) in enumerate(zip(rows, exclude, strict=True)):
        key = (*tag, int(r[0]), len(r), e, by_domain)
        models = cache.get(key)
        if models is None:
            banks = domain_banks(table, r, e) if by_domain else [r]
            if len(banks) == 1:
                g = ShrunkGaussian(np.delete(ref[r], e, axis=0) if e is not None else ref[r])
                models = [(g.mean, g)]
            else:
                models = domain_shrunk_gaussians(ref, banks)
            cache[key] = models
        out[n] = min(g.distances(q[n : n + 1], m)[0] for m, g in models)
    return out


class MahaScorer(EmbeddingScorer):
    """``maha``: one Ledoit-Wolf Gaussian per unit (per left-out clip for held-out training scores)."""

    name = "maha"

    def __init__(self, cfg, run, spaces) -> None:
        super().__init__(cfg, run, spaces)
        self._cache: dict[tuple, list[tuple[np.ndarray, np.ndarray]]] = {}

    def fit(self, normal: NormalSet) -> None:
        super().fit(normal)
        self._cache.clear()

    def score(self, clips: Clips) -> np.ndarray:
        w = self.cfg.maha_weight
        q, ref_joint = joint_space(self, clips, w)
        rows, excl = self.normal.rows_and_exclusions(self.space, clips, "maha")
        return unit_mahalanobis(q, ref_joint, self.normal.get(self.space), rows, excl,
                                getattr(self.cfg, "domain_banks", True), self._cache, (self.space, w))


class StatsMahaScorer(Scorer):
    """``stats_maha``: Mahalanobis distance to a Ledoit-Wolf Gaussian of the unit's band statistics, no network.

    The features are :func:`rcmae.scorers.frames.band_stats` (per-band mean, std, percentiles, temporal change),
    standardised per dimension with all normal training clips, so that the shrinkage target (a scaled identity)
    treats them alike (``score.stats_scale: dimension``), or used as they are (``none``). Held-out training
    scores leave each clip out of its own Gaussian, as ``maha``.
    Under domain shift (``score.domain_banks``, DCASE 2021+ names) it keeps one mean per domain with a shared
    within-domain covariance and takes the minimum distance, as ``maha`` does.
    """

    name = "stats_maha"
    feature = "bandstats"

    def __init__(self, cfg, run) -> None:
        super().__init__(cfg, run)
        self._cache: dict[tuple, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._scale: tuple[np.ndarray, np.ndarray] | None = None

    def fit(self, normal: NormalSet) -> None:
        super().fit(normal)
        self._cache.clear()
        table = normal.get(self.feature)
        if table is not None:
            z = np.asarray(table["z"], dtype=np.float64)
            if getattr(self.cfg, "stats_scale", "dimension") == "none":
                self._scale = (np.zeros(z.shape[1]), np.ones(z.shape[1]))
            else:
                self._scale = (z.mean(0), np.maximum(z.std(0), 1e-6))

    def score(self, clips: Clips) -> np.ndarray:
        table = self.normal.get(self.feature)
        if table is None:
            raise ScoringError(f"{self.run}: no training band statistics for stats_maha; "
                               f"run `rcmae evaluate --run {self.run}`")
        mean, std = self._scale
        ref = (np.asarray(table["z"], dtype=np.float64) - mean) / std
        q = (clips.feature(self.feature).astype(np.float64) - mean) / std
        rows, excl = self.normal.rows_and_exclusions(self.feature, clips, self.name)
        return unit_mahalanobis(q, ref, table, rows, excl, getattr(self.cfg, "domain_banks", True), self._cache, ())
