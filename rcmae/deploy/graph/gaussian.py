"""Export graphs of the Gaussian scorers (Mahalanobis on embeddings and band statistics)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rcmae.deploy.graph.features import band_stats_graph
from rcmae.deploy.graph.knn import Banks, JointSpace
from rcmae.deploy.graph.spec import recorded
from rcmae.scorers.maha import fit_domain_gaussians, fit_gaussian


def fit_bank_gaussians(ref: np.ndarray, banks: Banks) -> tuple[np.ndarray, np.ndarray]:
    """Per bank its mean ``[K, D]``, per unit one Ledoit-Wolf precision ``[C, D, D]`` (as ``maha`` fits them).

    A unit with one bank: the Gaussian of its clips. With domain banks: each domain's mean and the precision
    of the within-domain scatter, shared by the unit's banks (:func:`rcmae.scorers.maha.fit_domain_gaussians`).
    """
    means, precisions = [None] * len(banks.rows), []
    for u in range(len(banks.of_unit)):
        own = np.flatnonzero(banks.unit == u)
        fits = ([fit_gaussian(ref[banks.rows[own[0]]])] if len(own) == 1
                else fit_domain_gaussians(ref, [banks.rows[b] for b in own]))
        for b, (mean, _) in zip(own, fits, strict=True):
            means[b] = mean
        precisions.append(fits[0][1])
    return np.stack(means), np.stack(precisions)


# Precision eigenvalues within this relative distance of the largest form the flat part of a shrunk covariance.
FLAT_RTOL = 1e-9


def compress_precisions(precisions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each precision ``P [C, D, D]`` as ``base I + V diag(w) V^T``: ``(base [C], V [C, D, R], w [C, R])``.

    A Ledoit-Wolf covariance of ``n < D`` clips is a sample covariance of rank ``n - 1`` plus a multiple of the
    identity, so its precision is a multiple of the identity (``base``, the repeated largest eigenvalue) plus a
    rank ``n - 1`` correction: ``R`` columns instead of ``D``, which keeps bundles small when units have few
    clips. With as many clips as dimensions there is no flat part: ``base = 0`` and ``V`` holds every
    eigenvector. Units are padded to the largest ``R`` with zero columns.
    """
    parts = []
    for p in np.asarray(precisions, dtype=np.float64):
        val, vec = np.linalg.eigh((p + p.T) / 2)
        flat = val >= val[-1] * (1.0 - FLAT_RTOL)
        if flat.sum() >= 2:
            parts.append((float(val[-1]), vec[:, ~flat], val[~flat] - val[-1]))
        else:
            parts.append((0.0, vec, val))
    rank = max(len(w) for _, _, w in parts)
    d = precisions.shape[1]
    base = np.array([b for b, _, _ in parts])
    vecs = np.zeros((len(parts), d, rank))
    weights = np.zeros((len(parts), rank))
    for c, (_, v, w) in enumerate(parts):
        vecs[c, :, : len(w)], weights[c, : len(w)] = v, w
    return base, vecs, weights


@recorded
class GaussianBanks(nn.Module):
    """Mahalanobis distance ``q [B, D] -> [B]`` to the unit's Gaussian, minimum over its (domain) banks.

    The unit's precision is carried compressed (:func:`compress_precisions`):
    ``d^T P d = base |d|^2 + sum_r w_r (v_r^T d)^2``.
    """

    def __init__(self, means: np.ndarray, precisions: np.ndarray | tuple, banks: Banks, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        # Full precisions [C, D, D], or already compressed (base, vecs, weights), as a graph spec stores them.
        base, vecs, weights = (tuple(np.asarray(a, dtype=np.float64) for a in precisions)
                               if isinstance(precisions, tuple) else compress_precisions(precisions))
        self.register_buffer("means", torch.from_numpy(np.asarray(means, dtype=np.float64)))  # [K, D]
        self.register_buffer("base", torch.from_numpy(base))  # [C]
        self.register_buffer("vecs", torch.from_numpy(vecs))  # [C, D, R]
        self.register_buffer("weights", torch.from_numpy(weights))  # [C, R]
        self.register_buffer("unit_banks", torch.from_numpy(banks.of_unit))

    def spec_args(self, args: dict) -> dict:
        """What a graph spec stores: the compressed precisions (a fraction of the full ``[C, D, D]``)."""
        return {**args, "precisions": (self.base.numpy(), self.vecs.numpy(), self.weights.numpy())}

    def references(self) -> dict[str, np.ndarray]:
        p = self.prefix
        return {f"{p}_means": self.means.numpy(), f"{p}_precision_base": self.base.numpy(),
                f"{p}_precision_vecs": self.vecs.numpy(), f"{p}_precision_weights": self.weights.numpy(),
                f"{p}_unit_banks": self.unit_banks.numpy()}

    def forward(self, q: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        vecs, weights, base = self.vecs[unit], self.weights[unit], self.base[unit]
        per_bank = []
        for m in range(self.unit_banks.shape[1]):
            d = q - self.means[self.unit_banks[unit, m]]
            proj = torch.bmm(d[:, None, :], vecs)[:, 0, :]
            per_bank.append(base * (d**2).sum(-1) + (weights * proj**2).sum(-1))
        return torch.sqrt(torch.clamp(torch.stack(per_bank).amin(0), min=0.0))


@recorded
class MahaGraph(nn.Module):
    """``maha``: Mahalanobis distance to the unit's Gaussian (mean, Ledoit-Wolf precision) in the joint space."""

    def __init__(self, space: JointSpace, gaussians: GaussianBanks) -> None:
        super().__init__()
        self.space, self.gaussians = space, gaussians

    def references(self) -> dict[str, np.ndarray]:
        return {"joint_mean": self.space.mean.numpy(), "joint_std": self.space.std.numpy(),
                **self.gaussians.references()}

    def forward(self, x: torch.Tensor, z: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        return self.gaussians(self.space(x, z), unit)


@recorded
class StatsMahaGraph(nn.Module):
    """``stats_maha``: band statistics, standardised per dimension, Mahalanobis to the unit's Gaussian."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, gaussians: GaussianBanks,
                 embedded: bool = False) -> None:
        super().__init__()
        # embedded: the detector's embedding z is already these band statistics (a training-free run's
        # BandStatsEmbedder), so they are not computed twice.
        self.embedded = bool(embedded)
        self.register_buffer("mean", torch.from_numpy(np.asarray(mean, dtype=np.float64)))
        self.register_buffer("std", torch.from_numpy(np.asarray(std, dtype=np.float64)))
        self.gaussians = gaussians

    def references(self) -> dict[str, np.ndarray]:
        return {"stats_mean": self.mean.numpy(), "stats_std": self.std.numpy(), **self.gaussians.references()}

    def forward(self, x: torch.Tensor, z: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        q = ((z if self.embedded else band_stats_graph(x)).double() - self.mean) / self.std
        return self.gaussians(q, unit)
