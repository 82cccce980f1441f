"""The scorer families as torch graphs, for ``rcmae export``: one module and one builder per family.

Each builder takes the fitted scorer object of a :class:`rcmae.score.Detector` (its settings ``cfg``, its normal
set) and an :class:`ExportContext` (the bundle's units and models), and returns an ``nn.Module`` with
``forward(x [B, F, T] normalised log-mel, z [B, D] embedding, unit [B] int64) -> score [B] float64`` that carries
its reference tensors as buffers and computes what the family's ``score`` computes (the export tests compare
them scorer by scorer). ``references()`` returns those tensors by name. A family without a builder here is
refused by :func:`build_graph` with one line. torch and numpy only.
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
from rcmae.scorers.knn import joint_features
from rcmae.scorers.maha import fit_gaussian
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
    """Row-wise mean of the ``k[b]`` smallest values of ``d [B, n]`` (other units' rows are ``inf``)."""
    sorted_d = torch.sort(d, dim=1).values
    csum = torch.cumsum(torch.where(torch.isfinite(sorted_d), sorted_d, torch.zeros_like(sorted_d)), dim=1)
    return csum.gather(1, (k - 1)[:, None])[:, 0] / k.to(d.dtype)


class KnnGraph(nn.Module):
    """``knn``: mean cosine distance to the ``k`` nearest normal training embeddings of the same unit."""

    def __init__(self, bank: np.ndarray, units: np.ndarray, n_units: int, k: int) -> None:
        super().__init__()
        bank = np.asarray(bank, dtype=np.float32)
        # Normalised in float32 and compared in float64, as rcmae.score.knn_distances does.
        rn = bank / np.maximum(np.linalg.norm(bank, axis=1, keepdims=True), 1e-12)
        self.register_buffer("bank", torch.from_numpy(rn.astype(np.float64)))
        self.register_buffer("units", torch.from_numpy(np.asarray(units, dtype=np.int64)))
        counts = np.bincount(units, minlength=n_units)
        self.register_buffer("k", torch.from_numpy(np.minimum(k, counts).astype(np.int64)))

    def references(self) -> dict[str, np.ndarray]:
        return {"knn_bank": self.bank.numpy(), "knn_units": self.units.numpy(), "knn_k": self.k.numpy()}

    def forward(self, x: torch.Tensor, z: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        qn = z / torch.clamp(torch.linalg.vector_norm(z, dim=1, keepdim=True), min=1e-12)
        d = 1.0 - qn.double() @ self.bank.T
        d = torch.where(self.units[None, :] == unit[:, None], d, torch.full_like(d, math.inf))
        return mean_k_smallest(d, self.k[unit])


class JointSpace(nn.Module):
    """The ``knn_joint``/``maha`` space of :func:`rcmae.score.joint_features`, in float64."""

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

    def __init__(self, space: JointSpace, bank: np.ndarray, units: np.ndarray, n_units: int, k: int) -> None:
        super().__init__()
        self.space = space
        self.register_buffer("bank", torch.from_numpy(np.asarray(bank, dtype=np.float64)))
        self.register_buffer("units", torch.from_numpy(np.asarray(units, dtype=np.int64)))
        self.register_buffer("k", torch.from_numpy(np.minimum(k, np.bincount(units, minlength=n_units))))

    def references(self) -> dict[str, np.ndarray]:
        return {"joint_mean": self.space.mean.numpy(), "joint_std": self.space.std.numpy(),
                "joint_bank": self.bank.numpy(), "joint_units": self.units.numpy(), "joint_k": self.k.numpy()}

    def forward(self, x: torch.Tensor, z: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        q = self.space(x, z)
        d = torch.sqrt(((self.bank[None, :, :] - q[:, None, :]) ** 2).sum(-1))
        d = torch.where(self.units[None, :] == unit[:, None], d, torch.full_like(d, math.inf))
        return mean_k_smallest(d, self.k[unit])


class MahaGraph(nn.Module):
    """``maha``: Mahalanobis distance to the unit's Gaussian (mean, Ledoit-Wolf precision) in the joint space."""

    def __init__(self, space: JointSpace, means: np.ndarray, precisions: np.ndarray) -> None:
        super().__init__()
        self.space = space
        self.register_buffer("means", torch.from_numpy(np.asarray(means, dtype=np.float64)))
        self.register_buffer("precisions", torch.from_numpy(np.asarray(precisions, dtype=np.float64)))

    def references(self) -> dict[str, np.ndarray]:
        return {"joint_mean": self.space.mean.numpy(), "joint_std": self.space.std.numpy(),
                "maha_means": self.means.numpy(), "maha_precisions": self.precisions.numpy()}

    def forward(self, x: torch.Tensor, z: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        d = self.space(x, z) - self.means[unit]
        m = (torch.bmm(self.precisions[unit], d[:, :, None])[:, :, 0] * d).sum(-1)
        return torch.sqrt(torch.clamp(m, min=0.0))


class IdProbGraph(nn.Module):
    """``idprob``: ``-log p(unit | clip)`` of the fine-tuned classifier, averaged over crop windows."""

    def __init__(self, model: RCMAE, n_frames: int, crop: int | None, n_transforms: int = 1,
                 mode: str = "identity", windows: str = "mean") -> None:
        super().__init__()
        self.embedder = WindowEmbedder(model, n_frames, crop)
        # Pseudo-class runs: K classes per unit, the score reads the unit's block (rcmae.scorers.idprob).
        self.n_transforms, self.mode, self.reduce = int(n_transforms), mode, windows

    def references(self) -> dict[str, np.ndarray]:
        return {}

    def forward(self, x: torch.Tensor, z: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        e = self.embedder
        k = self.n_transforms
        # Batch-size free (the graph is traced): [B, N * K] -> [B, N, K] -> the unit's row [B, K].
        logp = [torch.log_softmax(e.model.classify(e.model.embed(x[..., s : s + e.crop])).float(), -1)
                .unflatten(-1, (-1, k)).gather(1, unit[:, None, None].expand(-1, 1, k))[:, 0] for s in e.starts]
        per_window = torch.stack([-(w[:, 0] if self.mode == "identity" else torch.logsumexp(w, -1)) for w in logp])
        return (per_window.amax(0) if self.reduce == "max" else per_window.mean(0)).double()


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
    keep = rows >= 0
    return KnnGraph(ref["z"][keep], rows[keep], len(ctx.units), scorer.cfg.knn_k)


def build_knn_joint(scorer, ctx: ExportContext) -> nn.Module:
    space, bank, rows = _joint(scorer, ctx, scorer.cfg.joint_weight)
    ctx.check_covered(rows, "knn_joint")
    keep = rows >= 0
    return JointKnnGraph(space, bank[keep], rows[keep], len(ctx.units), scorer.cfg.knn_k)


def build_maha(scorer, ctx: ExportContext) -> nn.Module:
    space, bank, rows = _joint(scorer, ctx, scorer.cfg.maha_weight)
    ctx.check_covered(rows, "maha", minimum=2)
    fits = [fit_gaussian(bank[rows == u]) for u in range(len(ctx.units))]
    return MahaGraph(space, np.stack([f[0] for f in fits]), np.stack([f[1] for f in fits]))


def build_idprob(scorer, ctx: ExportContext) -> nn.Module:
    if [tuple(u) for u in ctx.units] != [tuple(c) for c in scorer.classes]:
        raise ScoringError(f"idprob: the bundle's units must be the classifier's classes {scorer.classes}")
    return IdProbGraph(scorer.model, ctx.n_frames, ctx.crop, scorer.n_transforms, scorer.cfg.idprob_pseudo,
                       scorer.cfg.idprob_windows)


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
    "ensemble": build_ensemble,
}


def build_graph(scorer: Scorer, ctx: ExportContext) -> nn.Module:
    """The torch graph of a fitted scorer, or :class:`ScoringError` naming why it cannot be exported."""
    builder = BUILDERS.get(scorer.name)
    if builder is None:
        raise ScoringError(f"scorer {scorer.name} cannot be exported: it has no torch graph "
                           f"(exportable: {', '.join(BUILDERS)}); export another --scorer")
    return builder(scorer, ctx)
