"""Export graphs of the nearest-neighbour scorers (memory banks per unit and domain)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from rcmae.deploy.graph.features import band_stats_graph
from rcmae.deploy.graph.spec import recorded
from rcmae.models.rcmae import clip_stats
from rcmae.scorers.domains import domain_banks


def mean_k_smallest(d: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Row-wise mean of the ``k[b]`` smallest values of ``d [B, n]`` (other banks' rows are ``inf``)."""
    sorted_d = torch.sort(d, dim=1).values
    csum = torch.cumsum(torch.where(torch.isfinite(sorted_d), sorted_d, torch.zeros_like(sorted_d)), dim=1)
    return csum.gather(1, (k - 1)[:, None])[:, 0] / k.to(d.dtype)


@recorded
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


@recorded
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


@recorded
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


@recorded
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


@recorded
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


@recorded
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
