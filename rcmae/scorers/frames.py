"""Training-free features of a log-mel and a per-unit Gaussian over them (no network involved).

- :func:`band_stats`: a clip's per-band level statistics over time, richer than ``rcmae.models.rcmae.clip_stats``:
  mean, std, 10th/50th/90th percentiles and the mean absolute frame-to-frame change (temporal modulation).
- :func:`context_frames`: the DCASE 2020 AE baseline's input vectors, ``n`` consecutive frames concatenated.
- :class:`FrameGaussian`: mean and covariance of a unit's normal context frames. It scores a clip by the mean
  over its frames of the squared Mahalanobis distance (``frame_maha``) or of the residual outside the top
  principal components (``frame_pca``: a linear autoencoder, the AE baseline without training).

Domain shift (DCASE 2021+ names, ``score.domain_banks``): a unit with source and target training clips gets one
mean per domain and the shared within-domain covariance, and a clip's score is the minimum over the domains of
its frame-mean score (the ``maha`` scorer's rule, :mod:`rcmae.scorers.domains`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from rcmae.scorers.base import Clips, NormalSet, Scorer, ScoringError
from rcmae.scorers.domains import DOMAINS, path_domains

BAND_QUANTILES = (0.1, 0.5, 0.9)


def band_quantiles(x: torch.Tensor) -> torch.Tensor:
    """``torch.quantile(x, BAND_QUANTILES, dim=-1)`` (linear interpolation) of ``x [..., T]`` -> ``[3, ...]``,
    the same numbers computed faster: on a CPU the sort is numpy's (its SIMD sort is about 10x torch's on rows
    of a few hundred frames), then the two order statistics around ``q (T - 1)`` are interpolated exactly as
    torch.quantile does (ranks in the input dtype, ``torch.lerp``); a row with a NaN gives NaN, as there."""
    t = x.shape[-1]
    if x.device.type == "cpu" and not x.requires_grad:
        ordered = torch.from_numpy(np.sort(x.contiguous().numpy(), axis=-1))
    else:
        ordered = torch.sort(x, dim=-1).values
    ranks = torch.tensor(BAND_QUANTILES, dtype=x.dtype) * (t - 1)
    below, above = ranks.long(), ranks.ceil().long()
    weights = ranks - below
    out = torch.stack([torch.lerp(ordered[..., int(lo)], ordered[..., int(hi)], w.to(x.device))
                       for lo, hi, w in zip(below, above, weights, strict=True)])
    return torch.where(torch.isnan(x).any(-1), torch.full_like(out, float("nan")), out)


def band_stats(x: torch.Tensor) -> torch.Tensor:
    """Per-band statistics over time: ``x [B, F, T]`` -> ``[B, 6F]``.

    Blocks of ``F``: mean, population std, 10th, 50th and 90th percentile (linear interpolation, as
    ``numpy.quantile``), and the mean absolute difference of consecutive frames (0 for a one-frame clip).
    """
    x = x.float()
    q = band_quantiles(x)  # [3, B, F]
    delta = (x[..., 1:] - x[..., :-1]).abs().mean(-1) if x.shape[-1] > 1 else torch.zeros_like(x[..., 0])
    return torch.cat([x.mean(-1), x.std(-1, unbiased=False), q[0], q[1], q[2], delta], dim=-1)


def context_frames(x: np.ndarray | torch.Tensor, n: int = 5) -> np.ndarray:
    """Context vectors of one log-mel ``x [F, T]``: row ``t`` is frames ``t .. t+n-1`` concatenated, ``[T-n+1, nF]``.

    The layout is frame-major (frame ``t``'s ``F`` bins, then frame ``t+1``'s ...), as the AE baseline's.
    """
    x = np.asarray(x, dtype=np.float64)
    f, t = x.shape
    if t < n:
        raise ValueError(f"context_frames: a clip of {t} frames is shorter than the context of {n} frames")
    windows = np.lib.stride_tricks.sliding_window_view(x, n, axis=1)  # [F, T-n+1, n]
    return windows.transpose(1, 2, 0).reshape(t - n + 1, n * f)


def context_projections(x: torch.Tensor, vec: torch.Tensor, n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """``V^T f_t`` ``[B, S, k]`` and ``|f_t|^2`` ``[B, S]`` of the context vectors ``f_t`` of log-mels ``x [B, F, T]``,
    from the frames: ``f_t`` is frames ``t .. t+n-1`` frame-major (:func:`context_frames`), so ``V^T f_t`` is the
    sum of the per-frame block products ``V_j^T x_{t+j}``, and no ``[S, n F]`` matrix is built.

    ``vec`` is ``[1 or B, n F, k]`` (one basis for every clip, or one per clip). Plain tensor operations only: the
    scorers and the export graph (TorchScript, ONNX) share it.
    """
    b, f, t = x.shape
    s = t - n + 1
    if s < 1:
        raise ValueError(f"context_frames: a clip of {t} frames is shorter than the context of {n} frames")
    xt = x.transpose(1, 2)  # [B, T, F]
    k = vec.shape[-1]
    blocks = vec.reshape(vec.shape[0], n, f, k).transpose(1, 2).reshape(vec.shape[0], f, n * k)
    y = torch.matmul(xt, blocks).reshape(b, t, n, k)  # y[b, u, j] = V_j^T x_bu
    proj, sq = y[:, 0:s, 0], (xt * xt).sum(-1)
    norms = sq[:, 0:s]
    for j in range(1, n):
        proj = proj + y[:, j : j + s, j]
        norms = norms + sq[:, j : j + s]
    return proj, norms


def context_dots(x: torch.Tensor, means: torch.Tensor, n: int = 5) -> torch.Tensor:
    """``f_t . m`` ``[B, S]`` for the context vectors of ``x [B, F, T]`` and ``means [1 or B, n F]`` (per-frame blocks,
    as :func:`context_projections`)."""
    b, f, t = x.shape
    s = t - n + 1
    d = torch.matmul(means.reshape(means.shape[0], n, f), x)  # [B, n, T]: m_j . x_bu
    out = d[:, 0, 0:s]
    for j in range(1, n):
        out = out + d[:, j, j : j + s]
    return out


class FrameGaussian:
    """Mean and covariance of a unit's normal context frames, from per-clip sufficient statistics.

    Per-clip sums (count, sum, sum of outer products) are kept so that a model without some clips (the
    held-out folds) is exact and costs one eigendecomposition.

    Args:
        ridge: Added to the covariance's eigenvalues, relative to their mean (keeps it invertible).
    """

    def __init__(self, ridge: float = 1e-3) -> None:
        self.ridge = ridge
        self.mean = np.empty(0)
        self.eigval = np.empty(0)
        self.eigvec = np.empty((0, 0))
        # [M, D] per-domain means when fitted on several domains (the score is the minimum over them), else [0, D].
        self.domain_means = np.empty((0, 0))

    @staticmethod
    def sufficient(frames: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
        """``(n, sum [D], sum of outer products [D, D])`` of ``frames [n, D]``."""
        frames = torch.as_tensor(np.asarray(frames, dtype=np.float64))
        return len(frames), frames.sum(0).numpy(), (frames.T @ frames).numpy()  # torch's BLAS: several x numpy's

    def fit_sufficient(self, n: int, total: np.ndarray, outer: np.ndarray) -> FrameGaussian:
        """Fit from summed sufficient statistics (population covariance + ridge)."""
        if n < 2:
            raise ValueError("FrameGaussian: needs at least 2 frames")
        self.mean = total / n
        self.domain_means = np.empty((0, len(self.mean)))
        return self._eig(outer / n - np.outer(self.mean, self.mean))

    def fit_domains(self, parts: list[tuple[int, np.ndarray, np.ndarray]]) -> FrameGaussian:
        """Fit one mean per domain and their shared within-domain covariance from per-domain sufficient statistics.

        The covariance is the pooled scatter of every frame around its own domain's mean (population), so the
        shift between the domains' means does not inflate it. Domains without frames are ignored.
        """
        parts = [p for p in parts if p[0] > 0]
        if len(parts) < 2:
            return self.fit_sufficient(*parts[0])
        n = sum(p[0] for p in parts)
        means = [p[1] / p[0] for p in parts]
        scatter = sum(p[2] - p[0] * np.outer(m, m) for p, m in zip(parts, means, strict=True))
        self.mean = sum(p[1] for p in parts) / n
        self.domain_means = np.stack(means)
        return self._eig(scatter / n)

    def _eig(self, cov: np.ndarray) -> FrameGaussian:
        # torch.linalg.eigh: the same LAPACK problem, about 10x numpy's on this project's CPUs (bench, docs).
        val, vec = (t.numpy() for t in torch.linalg.eigh(torch.as_tensor((cov + cov.T) / 2)))
        val = np.maximum(val, 0.0)
        order = np.argsort(val)[::-1]
        self.eigval = val[order] + self.ridge * max(float(val.mean()), 1e-12)
        self.eigvec = vec[:, order]
        return self

    def fit(self, frames: np.ndarray) -> FrameGaussian:
        """Fit on context frames ``[n, D]``."""
        return self.fit_sufficient(*self.sufficient(frames))

    def _means(self) -> np.ndarray:
        return self.domain_means if len(self.domain_means) else self.mean[None]

    def maha(self, frames: np.ndarray) -> float:
        """Mean over ``frames [n, D]`` of the squared Mahalanobis distance (the minimum over domain means)."""
        frames = np.asarray(frames, dtype=np.float64)
        return min(float((((frames - m) @ self.eigvec) ** 2 / self.eigval).sum(1).mean()) for m in self._means())

    def pca_residuals(self, x: np.ndarray, components: int, context: int = 5) -> np.ndarray:
        """:meth:`pca_residual` of ``context_frames(x_b, context)`` for each log-mel of ``x [B, F, T]`` -> ``[B]``.

        ``|f - m|^2 - |V^T (f - m)|^2`` with ``|f - m|^2 = |f|^2 - 2 f.m + |m|^2``, all in float64, computed from
        the log-mels themselves (:func:`context_projections`); equal to the context-vector form to rounding
        (tests/scorers/test_scorers.py).
        """
        x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
        vec = torch.from_numpy(np.ascontiguousarray(self.eigvec[:, :components]))
        proj, norms = context_projections(x, vec[None], context)
        out = []
        for m in map(torch.from_numpy, self._means()):
            d2 = norms - 2.0 * context_dots(x, m[None], context) + m @ m
            p = proj - m @ vec
            out.append((d2 - (p * p).sum(-1)).mean(-1))
        return torch.stack(out).amin(0).numpy()

    def mahas(self, x: np.ndarray, context: int = 5) -> np.ndarray:
        """:meth:`maha` of ``context_frames(x_b, context)`` for each log-mel of ``x [B, F, T]`` -> ``[B]``."""
        x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
        vec, val = torch.from_numpy(self.eigvec), torch.from_numpy(self.eigval)
        proj, _ = context_projections(x, vec[None], context)
        return torch.stack([(((proj - m @ vec) ** 2) / val).sum(-1).mean(-1)
                            for m in map(torch.from_numpy, self._means())]).amin(0).numpy()

    def pca_residual(self, frames: np.ndarray, components: int) -> float:
        """Mean over ``frames [n, D]`` of the squared error after projecting on the top ``components``.

        With domain means, the minimum over the domains of that mean (each domain's frames centred on its mean).
        """
        frames = np.asarray(frames, dtype=np.float64)
        out = []
        for m in self._means():
            d = frames - m
            proj = d @ self.eigvec[:, :components]
            out.append(float(((d**2).sum(1) - (proj**2).sum(1)).mean()))
        return min(out)


FOLDS = 5
FOLD_SEED = 20240
FRAME_BATCH = 16  # log-mels per batched frame-model product (bounded memory: 16 x 313 x 640 doubles for maha)


def fold_of(n: int, folds: int = FOLDS, seed: int = FOLD_SEED) -> np.ndarray:
    """Seeded fold number of each of ``n`` clips (a permutation, so fold sizes differ by at most one)."""
    return np.random.default_rng(seed).permutation(n) % min(folds, n)


class FrameModels:
    """The per-unit :class:`FrameGaussian` models of a run, shared by ``frame_pca`` and ``frame_maha``.

    Fitted from the training log-mels with 5 seeded folds per unit: per fold, the summed sufficient statistics
    of its clips (memory ``folds x D^2`` per unit, not per clip); the unit model is the sum over folds and a
    clip's held-out model the sum over the other folds (exact). Saved to / read from ``path``.
    """

    context = 5

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.models: dict[str, FrameGaussian] = {}
        self.held_out: dict[str, FrameGaussian] = {}  # clip path -> the model of the folds without it
        self._fitted_on: object = None

    def fit(self, normal: NormalSet, by_domain: bool = True) -> None:
        """Fit on ``normal.logmels`` when given (and save), else read the saved models.

        Args:
            normal: The normal training clips.
            by_domain: Give a unit with source and target clips (DCASE 2021+ names) one mean per domain
                (``score.domain_banks``; it takes effect at the next fit on log-mels, as the models are saved).
        """
        if normal.logmels is None:
            self.held_out, self._fitted_on = {}, None
            self.models = load_frame_models(self.path) if self.path.is_file() else {}
            return
        x, types, ids, paths = normal.logmels
        if self._fitted_on is x:
            return  # the other frame scorer already fitted on these clips
        self.models, self.held_out = {}, {}
        dim = self.context * int(x.shape[1])
        empty = (0, np.zeros(dim), np.zeros((dim, dim)))
        units = list(zip(map(str, types), map(str, ids), strict=True))
        for key in sorted(set(units)):
            rows = np.array([i for i, u in enumerate(units) if u == key])
            groups = _domain_groups([paths[i] for i in rows]) if by_domain else np.zeros(len(rows), dtype=int)
            fold = fold_of(len(rows))
            sums = []  # [fold][group] -> (n, sum, outer)
            for k in range(int(fold.max()) + 1):
                per_group = []
                for g in range(int(groups.max()) + 1):
                    parts = [FrameGaussian.sufficient(context_frames(x[i].cpu().numpy(), self.context))
                             for i in rows[(fold == k) & (groups == g)]]
                    per_group.append(tuple(sum(p[j] for p in parts) for j in range(3)) if parts else empty)
                sums.append(per_group)
            total = [tuple(sum(f[g][j] for f in sums) for j in range(3)) for g in range(len(sums[0]))]
            self.models[f"{key[0]}/{key[1]}"] = _fit_groups(total)
            for k, fold_sum in enumerate(sums):
                rest = [tuple(t[j] - f[j] for j in range(3)) for t, f in zip(total, fold_sum, strict=True)]
                if sum(r[0] for r in rest) < 2:
                    continue  # a unit with one fold: its clips keep the unit model
                model = _fit_groups(rest)
                self.held_out.update({str(paths[i]): model for i in rows[fold == k]})
        save_frame_models(self.path, self.models)
        self._fitted_on = x


def _domain_groups(paths) -> np.ndarray:
    """Per clip of one unit: 0 for source, 1 for target (DCASE 2021+ names); all 0 unless both domains are named."""
    dom = path_domains(paths)
    if (dom == "").any() or len(set(dom)) < 2:
        return np.zeros(len(dom), dtype=int)
    return np.array([DOMAINS.index(d) for d in dom])


def _fit_groups(parts: list[tuple[int, np.ndarray, np.ndarray]]) -> FrameGaussian:
    """One :class:`FrameGaussian` from per-group sufficient statistics (one mean per group with frames)."""
    if len(parts) == 1:
        return FrameGaussian().fit_sufficient(*parts[0])
    return FrameGaussian().fit_domains(parts)


class FrameScorer(Scorer):
    """``frame_pca`` / ``frame_maha``: a per-unit :class:`FrameGaussian` of 5-frame context vectors, no network.

    ``frame_pca`` scores the mean residual outside the top ``score.frame_components`` principal components (a
    linear autoencoder); ``frame_maha`` the mean squared Mahalanobis distance. Fitting needs the training
    log-mels (:attr:`NormalSet.logmels`, given by ``fit_run``); the unit models are then saved to
    ``references/frames.npz`` and later fits read them back. Held-out training scores come from 5 seeded folds
    per unit: a clip is scored by the model of the other folds (:class:`FrameModels`).

    Args:
        cfg, run: As :class:`Scorer`.
        kind: ``pca`` or ``maha``.
        shared: Models shared with the other frame scorer (default: this scorer's own).
    """

    def __init__(self, cfg, run, kind: str, shared: FrameModels | None = None) -> None:
        super().__init__(cfg, run)
        self.kind, self.name = kind, f"frame_{kind}"
        self.frames = shared or FrameModels(self.run / "references" / "frames.npz")

    def fit(self, normal: NormalSet) -> None:
        super().fit(normal)
        self.frames.fit(normal, by_domain=getattr(self.cfg, "domain_banks", True))

    def score(self, clips: Clips) -> np.ndarray:
        out = np.empty(len(clips))
        groups: dict[int, tuple[FrameGaussian, list[int]]] = {}
        for n, (t, i) in enumerate(zip(clips.machine_types, clips.machine_ids, strict=True)):
            model = self.frames.models.get(f"{t}/{i}")
            if model is None:
                raise ScoringError(f"machine {t} id {i} was not in this run's training data ({self.name}: no frame "
                                   "model); pass the right --machine-type/--machine-id or train on it")
            if clips.paths is not None:
                model = self.frames.held_out.get(str(clips.paths[n]), model)
            groups.setdefault(id(model), (model, []))[1].append(n)
        for model, rows in groups.values():  # the clips of one model at once, a few at a time
            for start in range(0, len(rows), FRAME_BATCH):
                part = rows[start : start + FRAME_BATCH]
                x = clips.x[part].cpu().numpy()
                out[part] = (model.pca_residuals(x, self.cfg.frame_components, FrameModels.context)
                             if self.kind == "pca" else model.mahas(x, FrameModels.context))
        return out


def save_frame_models(path: Path, models: dict[str, FrameGaussian]) -> None:
    """Write unit models (mean, eigenvalues, eigenvectors, per-domain means; float32) to an ``.npz`` atomically.

    ``domain_means [U, M, D]`` holds up to ``M`` domain means per unit and ``n_domain_means [U]`` how many a unit
    has (0: one Gaussian, the unit mean).
    """
    keys = sorted(models)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    dim = len(models[keys[0]].mean) if keys else 0
    m = max((len(models[k].domain_means) for k in keys), default=0)
    domain_means = np.zeros((len(keys), m, dim), dtype=np.float32)
    for n, k in enumerate(keys):
        dm = models[k].domain_means
        domain_means[n, : len(dm)] = dm
    np.savez(tmp, unit=np.asarray(keys, dtype=str),
             mean=np.stack([models[k].mean for k in keys]).astype(np.float32),
             eigval=np.stack([models[k].eigval for k in keys]).astype(np.float32),
             eigvec=np.stack([models[k].eigvec for k in keys]).astype(np.float32),
             domain_means=domain_means,
             n_domain_means=np.array([len(models[k].domain_means) for k in keys], dtype=np.int64))
    os.replace(tmp, path)


def load_frame_models(path: Path) -> dict[str, FrameGaussian]:
    """Read :func:`save_frame_models` output (no pickle; files without domain means load as one mean per unit)."""
    out = {}
    with np.load(path, allow_pickle=False) as npz:
        has_domains = "n_domain_means" in npz.files
        for n, key in enumerate(npz["unit"].astype(str)):
            g = FrameGaussian()
            g.mean, g.eigval = npz["mean"][n].astype(np.float64), npz["eigval"][n].astype(np.float64)
            g.eigvec = npz["eigvec"][n].astype(np.float64)
            k = int(npz["n_domain_means"][n]) if has_domains else 0
            g.domain_means = npz["domain_means"][n, :k].astype(np.float64) if k else np.empty((0, len(g.mean)))
            out[str(key)] = g
    return out
