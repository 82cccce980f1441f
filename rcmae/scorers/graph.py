"""The scorer families as torch graphs, for ``rcmae export``: one module and one builder per family.

Each builder takes the fitted scorer object of a :class:`rcmae.score.Detector` (its settings ``cfg``, its normal
set) and an :class:`ExportContext` (the bundle's units and models), and returns an ``nn.Module`` with
``forward(x [B, F, T] normalised log-mel, z [B, D] embedding, unit [B] int64) -> score [B] float64`` that carries
its reference tensors as buffers and computes what the family's ``score`` computes (the export tests compare
them scorer by scorer). ``references()`` returns those tensors by name. A family without a builder here is
refused by :func:`build_graph` with one line. torch and numpy only.

Graphs score with the full unit models, as ``Detector`` scores test clips (leave-one-out and fold models only
serve the training clips' thresholds). Under DCASE 2021+ domain shift (``score.domain_banks``) a unit's
references are split into :class:`Banks` (source, target) and the graph takes the minimum over them, as the
scorers do (:mod:`rcmae.scorers.domains`). Shapes other than the batch are fixed by the bundle's clip length,
so Python loops over banks and quantile positions unroll into the traced / exported graph.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from rcmae.datasets import make_generator, window_starts
from rcmae.losses import masked_mse
from rcmae.model import RCMAE, clip_stats
from rcmae.scorers.base import Scorer, ScoringError
from rcmae.scorers.domains import domain_banks
from rcmae.scorers.frames import BAND_QUANTILES, FrameModels
from rcmae.scorers.knn import joint_features
from rcmae.scorers.maha import fit_domain_gaussians, fit_gaussian
from rcmae.scorers.recon import RECON_SEED


class ExportContext:
    """What a builder needs besides the scorer: the bundle's units (in model-input order) and the models.

    Args:
        units: ``(machine_type, machine_id)`` per unit index.
        models: ``{"pretrain": RCMAE, "finetune": RCMAE}``.
        n_frames: Frames of one clip's log-mel.
        crop: The run's crop window (``pretrain.crop_frames``) or ``None``.
        family: ``name -> fitted scorer object`` (an ensemble builds its members).
    """

    def __init__(self, units: Sequence[tuple[str, str]], models: dict[str, RCMAE], n_frames: int,
                 crop: int | None, family: Callable[[str], Scorer]) -> None:
        self.units = [tuple(u) for u in units]
        self.models, self.n_frames, self.crop, self.family = models, n_frames, crop, family

    def unit_rows(self, table: dict) -> np.ndarray:
        """Unit index of each row of a normal-set table (``-1`` for units the bundle does not carry)."""
        index = {u: i for i, u in enumerate(self.units)}
        return np.array([index.get((str(t), str(i)), -1)
                         for t, i in zip(table["machine_type"], table["machine_id"], strict=True)], dtype=np.int64)

    def check_covered(self, rows: np.ndarray, what: str, minimum: int = 1) -> None:
        """One clear line when a unit has fewer than ``minimum`` normal training clips."""
        counts = np.bincount(rows[rows >= 0], minlength=len(self.units))
        thin = [f"{t}/{i}" for (t, i), c in zip(self.units, counts, strict=True) if c < minimum]
        if thin:
            raise ScoringError(f"{what}: unit(s) {', '.join(thin)} have fewer than {minimum} normal training clips; "
                               "run `rcmae evaluate --run RUN` to refit, or export another --scorer")

    def embedder(self, space: str) -> WindowEmbedder:
        """The crop-window embedder of an embedding space."""
        return WindowEmbedder(self.models[space if space in self.models else "pretrain"], self.n_frames, self.crop)


class WindowEmbedder(nn.Module):
    """``x [B, F, T]`` -> ``z [B, D]``: the mean embedding over the run's crop windows (``Detector.embed``)."""

    def __init__(self, model: RCMAE, n_frames: int, crop: int | None) -> None:
        super().__init__()
        self.model = model
        self.crop = crop or n_frames
        self.starts = window_starts(n_frames, crop) if crop else [0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.model.embed(x[..., s : s + self.crop]) for s in self.starts]).mean(0)


def mean_k_smallest(d: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Row-wise mean of the ``k[b]`` smallest values of ``d [B, n]`` (other banks' rows are ``inf``)."""
    sorted_d = torch.sort(d, dim=1).values
    csum = torch.cumsum(torch.where(torch.isfinite(sorted_d), sorted_d, torch.zeros_like(sorted_d)), dim=1)
    return csum.gather(1, (k - 1)[:, None])[:, 0] / k.to(d.dtype)


class Banks:
    """The reference banks of a bundle's units: one per unit, or one per domain of a unit (DCASE 2021+).

    With ``score.domain_banks`` a unit whose normal clips come from both domains has a source and a target
    bank (:func:`rcmae.scorers.domains.domain_banks`) and is scored by its minimum over them, as the scorers do.

    Args:
        rows: Per bank, its row indices into the reference table.
        unit: Per bank, its unit index.
        n_units: Units of the bundle.
    """

    def __init__(self, rows: list[np.ndarray], unit: list[int], n_units: int) -> None:
        self.rows, self.unit = rows, np.asarray(unit, dtype=np.int64)
        per_unit = [np.flatnonzero(self.unit == u) for u in range(n_units)]
        width = max(len(b) for b in per_unit)
        # [C, M] bank indices per unit, padded with the unit's first bank (a repeated bank leaves the min as is).
        self.of_unit = np.array([np.r_[b, np.full(width - len(b), b[0])] for b in per_unit], dtype=np.int64)

    @classmethod
    def of(cls, scorer, table: dict, unit_rows: np.ndarray, n_units: int, by_domain: bool | None = None) -> Banks:
        """The banks a scorer keeps for each unit (``unit_rows``: the unit index of each table row).

        ``by_domain`` defaults to the scorer's ``score.domain_banks``; ``False`` for families that pool domains.
        """
        if by_domain is None:
            by_domain = getattr(scorer.cfg, "domain_banks", True)
        rows, unit = [], []
        for u in range(n_units):
            unit_r = np.flatnonzero(unit_rows == u)
            for bank in (domain_banks(table, unit_r) if by_domain else [unit_r]):
                rows.append(bank)
                unit.append(u)
        return cls(rows, unit, n_units)

    def row_bank(self, n_rows: int) -> np.ndarray:
        """The bank index of every table row (``-1`` for rows of units the bundle does not carry)."""
        out = np.full(n_rows, -1, dtype=np.int64)
        for b, r in enumerate(self.rows):
            out[r] = b
        return out


class BankKnn(nn.Module):
    """Mean of the ``k`` smallest distances to each of the unit's banks, minimum over the banks.

    Args:
        banks: The units' banks.
        n_rows: Rows of the reference table (``d``'s columns in :meth:`forward`).
        k: Neighbours averaged (capped at each bank's size).
        prefix: Reference name prefix.
    """

    def __init__(self, banks: Banks, n_rows: int, k: int, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.register_buffer("row_bank", torch.from_numpy(banks.row_bank(n_rows)))
        self.register_buffer("unit_banks", torch.from_numpy(banks.of_unit))
        self.register_buffer("k", torch.from_numpy(np.minimum(k, [len(r) for r in banks.rows]).astype(np.int64)))

    def references(self) -> dict[str, np.ndarray]:
        return {f"{self.prefix}_row_bank": self.row_bank.numpy(), f"{self.prefix}_unit_banks": self.unit_banks.numpy(),
                f"{self.prefix}_k": self.k.numpy()}

    def forward(self, d: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        per_bank = []
        for m in range(self.unit_banks.shape[1]):
            bank = self.unit_banks[unit, m]
            dm = torch.where(self.row_bank[None, :] == bank[:, None], d, torch.full_like(d, math.inf))
            per_bank.append(mean_k_smallest(dm, self.k[bank]))
        return torch.stack(per_bank).amin(0)


class KnnGraph(nn.Module):
    """``knn``: mean cosine distance to the ``k`` nearest normal training embeddings of the unit (or domain bank)."""

    def __init__(self, bank: np.ndarray, banks: Banks, k: int) -> None:
        super().__init__()
        bank = np.asarray(bank, dtype=np.float32)
        # Normalised in float32 and compared in float64, as rcmae.scorers.knn.knn_distances does.
        rn = bank / np.maximum(np.linalg.norm(bank, axis=1, keepdims=True), 1e-12)
        self.register_buffer("bank", torch.from_numpy(rn.astype(np.float64)))
        self.knn = BankKnn(banks, len(bank), k, "knn")

    def references(self) -> dict[str, np.ndarray]:
        return {"knn_bank": self.bank.numpy(), **self.knn.references()}

    def forward(self, x: torch.Tensor, z: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        qn = z / torch.clamp(torch.linalg.vector_norm(z, dim=1, keepdim=True), min=1e-12)
        return self.knn(1.0 - qn.double() @ self.bank.T, unit)


class JointSpace(nn.Module):
    """The ``knn_joint``/``maha`` space of :func:`rcmae.scorers.knn.joint_features`, in float64."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, weight: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(np.asarray(mean, dtype=np.float64)))
        self.register_buffer("std", torch.from_numpy(np.maximum(np.asarray(std, dtype=np.float64), 1e-6)))
        self.weight = float(weight)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        z = z.double()
        zn = z / torch.clamp(torch.linalg.vector_norm(z, dim=1, keepdim=True), min=1e-12)
        stats = clip_stats(x).double()
        st = (stats - self.mean) / self.std / math.sqrt(stats.shape[1])
        return torch.cat([zn, self.weight * st], dim=1)


class JointKnnGraph(nn.Module):
    """``knn_joint``: mean Euclidean distance to the ``k`` nearest normal clips of the unit in the joint space."""

    def __init__(self, space: JointSpace, bank: np.ndarray, banks: Banks, k: int) -> None:
        super().__init__()
        self.space = space
        self.register_buffer("bank", torch.from_numpy(np.asarray(bank, dtype=np.float64)))
        self.knn = BankKnn(banks, len(bank), k, "joint")

    def references(self) -> dict[str, np.ndarray]:
        return {"joint_mean": self.space.mean.numpy(), "joint_std": self.space.std.numpy(),
                "joint_bank": self.bank.numpy(), **self.knn.references()}

    def forward(self, x: torch.Tensor, z: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        q = self.space(x, z)
        return self.knn(torch.sqrt(((self.bank[None, :, :] - q[:, None, :]) ** 2).sum(-1)), unit)


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


class GaussianBanks(nn.Module):
    """Mahalanobis distance ``q [B, D] -> [B]`` to the unit's Gaussian, minimum over its (domain) banks.

    The unit's precision is carried compressed (:func:`compress_precisions`):
    ``d^T P d = base |d|^2 + sum_r w_r (v_r^T d)^2``.
    """

    def __init__(self, means: np.ndarray, precisions: np.ndarray, banks: Banks, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        base, vecs, weights = compress_precisions(precisions)
        self.register_buffer("means", torch.from_numpy(np.asarray(means, dtype=np.float64)))  # [K, D]
        self.register_buffer("base", torch.from_numpy(base))  # [C]
        self.register_buffer("vecs", torch.from_numpy(vecs))  # [C, D, R]
        self.register_buffer("weights", torch.from_numpy(weights))  # [C, R]
        self.register_buffer("unit_banks", torch.from_numpy(banks.of_unit))

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


def _lerp(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    # The two-sided form torch.lerp and numpy.quantile use: exact at both ends.
    return a + (b - a) * w if w < 0.5 else b - (b - a) * (1.0 - w)


def band_stats_graph(x: torch.Tensor) -> torch.Tensor:
    """:func:`rcmae.scorers.frames.band_stats` without ``torch.quantile`` (which ONNX lacks): ``[B, F, T] -> [B, 6F]``.

    The 10/50/90 % quantiles are ``numpy.quantile``'s linear interpolation: sort over time, gather the two
    order statistics around ``q (T - 1)`` and interpolate; ``T`` is fixed by the bundle's clip length.
    """
    x = x.float()
    t = x.shape[-1]
    ordered = torch.sort(x, dim=-1).values
    quantiles = []
    for q in BAND_QUANTILES:
        pos = q * (t - 1)
        lo = int(math.floor(pos))
        hi = min(lo + 1, t - 1)
        quantiles.append(_lerp(ordered[..., lo], ordered[..., hi], pos - lo))
    delta = (x[..., 1:] - x[..., :-1]).abs().mean(-1) if t > 1 else torch.zeros_like(x[..., 0])
    return torch.cat([x.mean(-1), x.std(-1, unbiased=False), *quantiles, delta], dim=-1)


class StatsMahaGraph(nn.Module):
    """``stats_maha``: band statistics, standardised per dimension, Mahalanobis to the unit's Gaussian."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, gaussians: GaussianBanks) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(np.asarray(mean, dtype=np.float64)))
        self.register_buffer("std", torch.from_numpy(np.asarray(std, dtype=np.float64)))
        self.gaussians = gaussians

    def references(self) -> dict[str, np.ndarray]:
        return {"stats_mean": self.mean.numpy(), "stats_std": self.std.numpy(), **self.gaussians.references()}

    def forward(self, x: torch.Tensor, z: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        q = (band_stats_graph(x).double() - self.mean) / self.std
        return self.gaussians(q, unit)


class NormKnnGraph(nn.Module):
    """``knn_norm`` (cosine on the embedding) / ``stats_knn`` (Euclidean on standardised band statistics).

    The unit's kNN distance, z-scored with the mean and std of the unit's held-out normal training scores.
    """

    def __init__(self, name: str, bank: np.ndarray, banks: Banks, k: int, moments: np.ndarray,
                 scale: tuple[np.ndarray, np.ndarray] | None) -> None:
        super().__init__()
        self.name = name
        self.cosine = scale is None
        if self.cosine:
            bank = np.asarray(bank, dtype=np.float32)
            bank = bank / np.maximum(np.linalg.norm(bank, axis=1, keepdims=True), 1e-12)
            scale = (np.zeros(0), np.ones(0))
        self.register_buffer("bank", torch.from_numpy(np.asarray(bank, dtype=np.float64)))
        self.register_buffer("mean", torch.from_numpy(np.asarray(scale[0], dtype=np.float64)))
        self.register_buffer("std", torch.from_numpy(np.asarray(scale[1], dtype=np.float64)))
        self.register_buffer("moments", torch.from_numpy(np.asarray(moments, dtype=np.float64)))  # [C, 2]
        self.knn = BankKnn(banks, len(bank), k, name)

    def references(self) -> dict[str, np.ndarray]:
        out = {f"{self.name}_bank": self.bank.numpy(), f"{self.name}_moments": self.moments.numpy(),
               **self.knn.references()}
        if not self.cosine:
            out.update({f"{self.name}_mean": self.mean.numpy(), f"{self.name}_std": self.std.numpy()})
        return out

    def forward(self, x: torch.Tensor, z: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        if self.cosine:
            qn = z / torch.clamp(torch.linalg.vector_norm(z, dim=1, keepdim=True), min=1e-12)
            d = 1.0 - qn.double() @ self.bank.T
        else:
            q = (band_stats_graph(x).double() - self.mean) / self.std
            d = torch.sqrt(((self.bank[None, :, :] - q[:, None, :]) ** 2).sum(-1))
        raw = self.knn(d, unit)
        return (raw - self.moments[unit, 0]) / torch.clamp(self.moments[unit, 1], min=1e-12)


def context_frames_graph(x: torch.Tensor, n: int) -> torch.Tensor:
    """:func:`rcmae.scorers.frames.context_frames` of a batch: ``[B, F, T] -> [B, T-n+1, nF]`` (frame-major)."""
    s = x.shape[-1] - n + 1
    return torch.cat([x[..., k : k + s] for k in range(n)], dim=1).transpose(1, 2)


class FrameGraph(nn.Module):
    """``frame_pca`` / ``frame_maha``: the unit's Gaussian of 5-frame context vectors, mean over the clip's frames.

    ``pca`` keeps only the top ``components`` eigenvectors (the residual is the squared norm minus the projected
    part); ``maha`` keeps them all and divides by the eigenvalues. With domain banks each bank has its mean and
    the unit's banks share the eigenvectors; the score is the minimum over the banks.
    """

    def __init__(self, kind: str, means: np.ndarray, eigvec: np.ndarray, eigval: np.ndarray, banks: Banks,
                 context: int) -> None:
        super().__init__()
        self.kind, self.context = kind, context
        self.register_buffer("means", torch.from_numpy(np.asarray(means, dtype=np.float64)))  # [K, D]
        self.register_buffer("eigvec", torch.from_numpy(np.asarray(eigvec, dtype=np.float64)))  # [C, D, k]
        self.register_buffer("eigval", torch.from_numpy(np.asarray(eigval, dtype=np.float64)))  # [C, k]
        self.register_buffer("unit_banks", torch.from_numpy(banks.of_unit))

    def references(self) -> dict[str, np.ndarray]:
        p = f"frame_{self.kind}"
        out = {f"{p}_means": self.means.numpy(), f"{p}_eigvec": self.eigvec.numpy(),
               f"{p}_unit_banks": self.unit_banks.numpy()}
        if self.kind == "maha":
            out[f"{p}_eigval"] = self.eigval.numpy()
        return out

    def forward(self, x: torch.Tensor, z: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        frames = context_frames_graph(x.double(), self.context)  # [B, S, D]
        vec = self.eigvec[unit]
        per_bank = []
        for m in range(self.unit_banks.shape[1]):
            d = frames - self.means[self.unit_banks[unit, m]][:, None, :]
            proj = torch.bmm(d, vec)
            if self.kind == "pca":
                per_frame = (d**2).sum(-1) - (proj**2).sum(-1)
            else:
                per_frame = ((proj**2) / self.eigval[unit][:, None, :]).sum(-1)
            per_bank.append(per_frame.mean(1))
        return torch.stack(per_bank).amin(0)


class IdProbGraph(nn.Module):
    """``idprob``: ``-log p(own class | clip)`` of the fine-tuned classifier, averaged over crop windows.

    ``members [U, C]`` marks each unit's classifier classes: its own class when the classes are the units
    (machine IDs, sections), else every class of the unit (section + attribute classes). A bundle gets no file
    name, so a unit with several classes is scored as ``Detector`` scores a clip whose attributes are unknown:
    ``-log`` of the largest (``pool="max"``) or of the summed (``"sum"``) probability of its classes. With
    pseudo-classes (``n_transforms = K > 1``) each class has ``K`` outputs and its log-probability is that of the
    class unchanged (``mode="identity"``) or summed over its transforms (``"marginal"``). Windows are averaged
    (``windows="mean"``) or the highest kept (``"max"``). Log-softmax in float64, as the scorer computes it.
    """

    def __init__(self, model: RCMAE, n_frames: int, crop: int | None, members: np.ndarray, pool: str = "max",
                 n_transforms: int = 1, mode: str = "identity", windows: str = "mean") -> None:
        super().__init__()
        self.embedder = WindowEmbedder(model, n_frames, crop)
        self.register_buffer("members", torch.from_numpy(np.asarray(members, dtype=bool)))
        self.pool = pool
        self.n_transforms, self.mode, self.reduce = int(n_transforms), mode, windows

    def references(self) -> dict[str, np.ndarray]:
        return {"idprob_members": self.members.numpy()}

    def forward(self, x: torch.Tensor, z: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        e = self.embedder
        own = self.members[unit]
        k = self.n_transforms
        per_window = []
        for s in e.starts:
            # Batch-size free (the graph is traced): [B, C * K] -> [B, C, K] -> per class [B, C].
            logp = torch.log_softmax(e.model.classify(e.model.embed(x[..., s : s + e.crop])).double(), -1)
            logp = logp.unflatten(-1, (-1, k))
            per_class = logp[..., 0] if self.mode == "identity" else torch.logsumexp(logp, -1)
            # One member: exactly its log-probability (max and logsumexp over one finite value are that value).
            masked = per_class.masked_fill(~own, -math.inf)
            per_window.append(-(masked.amax(1) if self.pool == "max" else torch.logsumexp(masked, 1)))
        stacked = torch.stack(per_window)
        return stacked.amax(0) if self.reduce == "max" else stacked.mean(0)


class ReconGraph(nn.Module):
    """``recon`` (and ``recon_topk`` with ``topk``): masked-patch error of the pretrained MAE.

    The masks are the ones the Detector draws from its fixed-seed generator: that noise is carried as a
    buffer, so the exported graph masks the same patches of every window.
    """

    def __init__(self, model: RCMAE, n_frames: int, crop: int | None, noise: torch.Tensor, mask_ratio: float,
                 topk: float | None = None) -> None:
        super().__init__()
        self.embedder = WindowEmbedder(model, n_frames, crop)
        self.register_buffer("noise", noise.float())
        self.mask_ratio = float(mask_ratio)
        self.topk = topk

    def references(self) -> dict[str, np.ndarray]:
        return {"recon_noise": self.noise.numpy()}

    def _window_errors(self, w: torch.Tensor) -> torch.Tensor:
        """Errors of one window ``w [B, F, t]``: per mask ``[B, n]`` (recon) or per masked patch (topk)."""
        model = self.embedder.model
        b, n = w.shape[0], self.noise.shape[0]
        reps = w.repeat_interleave(n, dim=0)
        latent, mask, ids_restore = model.forward_encoder(reps, self.mask_ratio, noise=self.noise.repeat(b, 1))
        pred = model.forward_decoder(latent, ids_restore)
        if self.topk is None:
            return masked_mse(pred, model.target(reps), mask, norm_pix=model.config.norm_pix_loss,
                              reduction="none").float().view(b, n)
        target = model.target(reps)
        if model.config.norm_pix_loss:
            target = (target - target.mean(dim=-1, keepdim=True)) / (target.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5
        per_patch = ((pred - target) ** 2).mean(dim=-1).float()
        return per_patch[mask.bool()].view(b, -1)

    def forward(self, x: torch.Tensor, z: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        e = self.embedder
        errs = [self._window_errors(x[..., s : s + e.crop]) for s in e.starts]
        if self.topk is None:
            return torch.stack([er.mean(1) for er in errs]).mean(0).double()
        flat = torch.cat(errs, dim=1)
        k = max(1, int(math.ceil(self.topk * flat.shape[1])))
        return torch.topk(flat, k, dim=1).values.double().mean(1)


class EnsembleGraph(nn.Module):
    """``ensemble``: mean of its parts, each standardised with the unit's normal training-score moments."""

    def __init__(self, parts: Sequence[nn.Module], moments: np.ndarray) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.register_buffer("moments", torch.from_numpy(np.asarray(moments, dtype=np.float64)))  # [P, C, 2]

    def references(self) -> dict[str, np.ndarray]:
        out = {"ensemble_moments": self.moments.numpy()}
        for part in self.parts:
            out.update(part.references())
        return out

    def forward(self, x: torch.Tensor, z: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        zs = [(part(x, z, unit) - self.moments[p, unit, 0]) / torch.clamp(self.moments[p, unit, 1], min=1e-12)
              for p, part in enumerate(self.parts)]
        return torch.stack(zs).mean(0)



# --------------------------------------------------------------------------------------------- builders
def _table(scorer, feature: str) -> dict:
    table = scorer.normal.get(feature)
    if table is None:
        raise ScoringError(f"{scorer.run}: no training {feature} references for {scorer.name}; "
                           f"run `rcmae evaluate --run {scorer.run}` first")
    return table


def _joint(scorer, ctx: ExportContext, weight: float) -> tuple[JointSpace, np.ndarray, np.ndarray]:
    ref, cstats = _table(scorer, scorer.space), _table(scorer, "clipstats")
    cs = cstats["z"].astype(np.float64)
    mu, sd = cs.mean(0), cs.std(0)
    return JointSpace(mu, sd, weight), joint_features(ref["z"], cs, mu, sd, weight), ctx.unit_rows(ref)


def build_knn(scorer, ctx: ExportContext) -> nn.Module:
    ref = _table(scorer, scorer.space)
    rows = ctx.unit_rows(ref)
    ctx.check_covered(rows, "knn")
    return KnnGraph(ref["z"], Banks.of(scorer, ref, rows, len(ctx.units)), scorer.cfg.knn_k)


def build_knn_joint(scorer, ctx: ExportContext) -> nn.Module:
    space, bank, rows = _joint(scorer, ctx, scorer.cfg.joint_weight)
    ctx.check_covered(rows, "knn_joint")
    banks = Banks.of(scorer, _table(scorer, scorer.space), rows, len(ctx.units))
    return JointKnnGraph(space, bank, banks, scorer.cfg.knn_k)


def build_maha(scorer, ctx: ExportContext) -> nn.Module:
    space, bank, rows = _joint(scorer, ctx, scorer.cfg.maha_weight)
    ctx.check_covered(rows, "maha", minimum=2)
    banks = Banks.of(scorer, _table(scorer, scorer.space), rows, len(ctx.units))
    return MahaGraph(space, GaussianBanks(*fit_bank_gaussians(bank, banks), banks, "maha"))


def build_stats_maha(scorer, ctx: ExportContext) -> nn.Module:
    table = _table(scorer, scorer.feature)
    mean, std = scorer._scale
    ref = (np.asarray(table["z"], dtype=np.float64) - mean) / std
    rows = ctx.unit_rows(table)
    ctx.check_covered(rows, "stats_maha", minimum=2)
    banks = Banks.of(scorer, table, rows, len(ctx.units))
    return StatsMahaGraph(mean, std, GaussianBanks(*fit_bank_gaussians(ref, banks), banks, "stats_maha"))


def build_norm_knn(scorer, ctx: ExportContext) -> nn.Module:
    table = _table(scorer, scorer.feature())
    rows = ctx.unit_rows(table)
    missing = [f"{t}/{i}" for t, i in ctx.units if f"{t}/{i}" not in scorer.moments]
    if missing:
        raise ScoringError(f"{scorer.name}: unit(s) {', '.join(missing)} have fewer than 2 normal training clips "
                           "(no held-out moments); export another --scorer")
    # These scorers pool the domains (rcmae.scorers.knn.NormKnnScorer): one bank per unit.
    banks = Banks.of(scorer, table, rows, len(ctx.units), by_domain=False)
    moments = np.array([scorer.moments[f"{t}/{i}"] for t, i in ctx.units], dtype=np.float64)
    scale = None if scorer.metric == "cosine" else scorer._scale
    bank = table["z"] if scale is None else (np.asarray(table["z"], dtype=np.float64) - scale[0]) / scale[1]
    return NormKnnGraph(scorer.name, bank, banks, scorer.cfg.knn_k, moments, scale)


def build_frames(scorer, ctx: ExportContext) -> nn.Module:
    models = []
    for t, i in ctx.units:
        model = scorer.frames.models.get(f"{t}/{i}")
        if model is None:
            raise ScoringError(f"{scorer.name}: no frame model of {t}/{i} in {scorer.frames.path}; "
                               f"run `rcmae evaluate --run {scorer.run}` to refit, or export another --scorer")
        models.append(model)
    keep = scorer.cfg.frame_components if scorer.kind == "pca" else None
    # One bank per domain mean of a unit (DCASE 2021+ with score.domain_banks at fit time), else its mean.
    means = [m.domain_means if len(m.domain_means) else m.mean[None] for m in models]
    banks = Banks([np.empty(0)] * sum(map(len, means)), [u for u, m in enumerate(means) for _ in m], len(models))
    return FrameGraph(scorer.kind, np.concatenate(means), np.stack([m.eigvec[:, :keep] for m in models]),
                      np.stack([m.eigval[:keep] for m in models]), banks, FrameModels.context)


def build_idprob(scorer, ctx: ExportContext) -> nn.Module:
    # Per unit, the classes the scorer pools over for a clip without attributes (one clear line for a unit the
    # classifier does not know): one index per unit, or a list when a unit has section + attribute classes.
    sets = scorer.class_indices([t for t, _ in ctx.units], [i for _, i in ctx.units])
    members = np.zeros((len(ctx.units), len(scorer.classes)), dtype=bool)
    for u, classes in enumerate(sets):
        members[u, np.atleast_1d(classes)] = True
    return IdProbGraph(scorer.model, ctx.n_frames, ctx.crop, members, getattr(scorer.cfg, "idprob_pool", "max"),
                       scorer.n_transforms, scorer.cfg.idprob_pseudo, scorer.cfg.idprob_windows)


def _recon_noise(scorer) -> torch.Tensor:
    # The noise RCMAE.random_masking draws from the scorer's fixed-seed generator: the same masks.
    gen = make_generator(RECON_SEED, device="cpu")
    return torch.rand(scorer.cfg.recon_masks, scorer.model.config.num_patches, generator=gen)


def build_recon(scorer, ctx: ExportContext) -> nn.Module:
    return ReconGraph(scorer.model, ctx.n_frames, ctx.crop, _recon_noise(scorer), scorer.cfg.recon_mask_ratio)


def build_recon_topk(scorer, ctx: ExportContext) -> nn.Module:
    return ReconGraph(scorer.model, ctx.n_frames, ctx.crop, _recon_noise(scorer), scorer.cfg.recon_mask_ratio,
                      topk=scorer.cfg.recon_topk)


def build_ensemble(scorer, ctx: ExportContext) -> nn.Module:
    parts, moments = [], []
    for name in scorer.members():
        parts.append(build_graph(ctx.family(name), ctx))
        m = scorer.moments.get(name, {})
        missing = [f"{t}/{i}" for t, i in ctx.units if f"{t}/{i}" not in m]
        if missing:
            raise ScoringError(f"ensemble: no training-score moments of {name} for {', '.join(missing)}; "
                               f"run `rcmae evaluate --run {scorer.run}` after deleting thresholds.json")
        moments.append([m[f"{t}/{i}"] for t, i in ctx.units])
    return EnsembleGraph(parts, np.asarray(moments, dtype=np.float64))


# Scorer name -> builder. A family missing here cannot be exported (build_graph says so).
BUILDERS: dict[str, Callable[[Scorer, ExportContext], nn.Module]] = {
    "knn": build_knn,
    "knn_joint": build_knn_joint,
    "maha": build_maha,
    "idprob": build_idprob,
    "recon": build_recon,
    "recon_topk": build_recon_topk,
    "knn_norm": build_norm_knn,
    "stats_knn": build_norm_knn,
    "stats_maha": build_stats_maha,
    "frame_pca": build_frames,
    "frame_maha": build_frames,
    "ensemble": build_ensemble,
}


def build_graph(scorer: Scorer, ctx: ExportContext) -> nn.Module:
    """The torch graph of a fitted scorer, or :class:`ScoringError` naming why it cannot be exported."""
    builder = BUILDERS.get(scorer.name)
    if builder is None:
        raise ScoringError(f"scorer {scorer.name} cannot be exported: it has no torch graph "
                           f"(exportable: {', '.join(BUILDERS)}); export another --scorer")
    return builder(scorer, ctx)
