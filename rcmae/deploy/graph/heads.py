"""Export graphs of the frame, class-probability, reconstruction and ensemble scorers, and the window embedder."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from rcmae.deploy.graph.features import WindowEmbedder, band_stats_graph, context_frames_graph  # noqa: F401
from rcmae.deploy.graph.knn import Banks
from rcmae.deploy.graph.spec import recorded
from rcmae.models.rcmae import RCMAE
from rcmae.scorers.base import Scorer, ScoringError
from rcmae.scorers.frames import context_dots, context_projections


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

    def embedder(self, space: str) -> nn.Module:
        """The crop-window embedder of an embedding space; a training-free run (no network) embeds a clip by its
        band statistics, which is what its scorers see and what the bundle's nearest examples compare."""
        if not self.models:
            return BandStatsEmbedder()
        return WindowEmbedder(self.models[space if space in self.models else "pretrain"], self.n_frames, self.crop)


@recorded
class BandStatsEmbedder(nn.Module):
    """``x [B, F, T]`` -> the clip's band statistics ``[B, 6F]`` (the embedding of a training-free bundle)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return band_stats_graph(x)


@recorded
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
        # From the frames, as the scorers (rcmae.scorers.frames.context_projections): no context-vector matrix.
        x = x.double()
        vec = self.eigvec[unit]  # [B, c F, k]
        proj, norms = context_projections(x, vec, self.context)
        per_bank = []
        for m in range(self.unit_banks.shape[1]):
            mean = self.means[self.unit_banks[unit, m]]  # [B, c F]
            p = proj - torch.matmul(mean[:, None, :], vec)
            if self.kind == "pca":
                d2 = norms - 2.0 * context_dots(x, mean, self.context) + (mean * mean).sum(-1)[:, None]
                per_frame = d2 - (p * p).sum(-1)
            else:
                per_frame = ((p * p) / self.eigval[unit][:, None, :]).sum(-1)
            per_bank.append(per_frame.mean(1))
        return torch.stack(per_bank).amin(0)


@recorded
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


@recorded
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
        return self.embedder.model.fixed_mask_errors(w, self.mask_ratio, self.noise, per_patch=self.topk is not None)

    def forward(self, x: torch.Tensor, z: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        e = self.embedder
        errs = [self._window_errors(x[..., s : s + e.crop]) for s in e.starts]
        if self.topk is None:
            return torch.stack([er.mean(1) for er in errs]).mean(0).double()
        flat = torch.cat(errs, dim=1)
        k = max(1, int(math.ceil(self.topk * flat.shape[1])))
        return torch.topk(flat, k, dim=1).values.double().mean(1)


@recorded
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


@recorded
class ExportedDetector(nn.Module):
    """Wave in, score out: log-mel, normalisation, embedding and one scorer in one graph.

    ``forward(wave [B, N] float32, unit [B] int64) -> (score [B] float64, embedding [B, D], logmel [B, F, T])``.
    """

    def __init__(self, logmel: nn.Module, mean: np.ndarray, std: np.ndarray, embedder: WindowEmbedder,
                 scorer: nn.Module) -> None:
        super().__init__()
        self.logmel = logmel
        # float32 like FeatureStats.apply on a float32 tensor.
        self.register_buffer("feat_mean", torch.as_tensor(np.asarray(mean), dtype=torch.float32)[:, None])
        self.register_buffer("feat_std", torch.as_tensor(np.asarray(std), dtype=torch.float32)[:, None])
        self.embedder = embedder
        self.scorer = scorer

    def forward(self, wave: torch.Tensor, unit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        db = self.logmel(wave)
        score, z = self.score_db(db, unit)
        return score, z, db

    def score_db(self, db: torch.Tensor, unit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(score [B], embedding [B, D])`` of dB log-mels ``[B, F, T]`` (what ``forward`` does after the log-mel;
        the streaming monitor computes the log-mels itself, :mod:`rcmae.deploy.stream`)."""
        x = (db - self.feat_mean) / self.feat_std
        z = self.embedder(x)
        return self.scorer(x, z, unit), z
