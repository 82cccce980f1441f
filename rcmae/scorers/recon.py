"""Reconstruction scorers of the pretrained MAE: ``recon`` (mean masked error) and ``recon_topk`` (local).

Both use ``score.recon_masks`` masks drawn from one fixed stream per clip (:data:`RECON_SEED`), so a clip gets
the same masks wherever and however it is scored (per-clip, batch-independent). ``recon_topk`` averages the
highest ``score.recon_topk`` fraction of masked-patch errors, which a local anomaly lifts more than the mean.
Neither needs references: fitting only keeps the normal set (for thresholds, done by the caller).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from rcmae.data.datasets import make_generator
from rcmae.scorers.base import Clips, Scorer

# Fixed stream for the recon masks: a clip gets the same masks wherever and however it is scored.
RECON_SEED = 20231


def topk_mean(errors: np.ndarray, fraction: float) -> float:
    """Mean of the largest ``ceil(fraction * n)`` values (at least one) of ``errors``."""
    errors = np.asarray(errors, dtype=np.float64).ravel()
    k = max(1, int(np.ceil(fraction * errors.size)))
    return float(np.partition(errors, errors.size - k)[errors.size - k :].mean())


class ReconScorer(Scorer):
    """``recon``: masked-reconstruction MSE averaged over ``score.recon_masks`` fixed masks (and crop windows).

    Args:
        cfg, run: As :class:`Scorer`.
        model: The pretrained ``RCMAE``.
        windows: Crop windows of a log-mel batch (the run's ``pretrain.crop_frames``).
        device: Where the model runs.
    """

    name = "recon"

    def __init__(self, cfg, run, model, windows: Callable[[torch.Tensor], list[torch.Tensor]],
                 device: torch.device) -> None:
        super().__init__(cfg, run)
        self.model, self.windows, self.device = model, windows, device

    @torch.no_grad()
    def score(self, clips: Clips) -> np.ndarray:
        x, n = clips.x, self.cfg.recon_masks
        out = np.empty(len(x), dtype=np.float64)
        for row in range(len(x)):
            errs = []
            for w in self.windows(x[row : row + 1].to(self.device)):
                # The clip repeated once per mask, drawn from a fixed stream: per-clip, batch-independent.
                gen = make_generator(RECON_SEED, device=self.device)
                reps = w.expand(n, -1, -1)
                errs.append(self.model.reconstruction_error(reps, self.cfg.recon_mask_ratio, gen, n_masks=1).mean())
            out[row] = float(torch.stack(errs).mean())
        return out


class ReconTopkScorer(ReconScorer):
    """``recon_topk``: mean of the highest ``score.recon_topk`` fraction of masked-patch errors."""

    name = "recon_topk"

    @torch.no_grad()
    def score(self, clips: Clips) -> np.ndarray:
        x = clips.x
        out = np.empty(len(x), dtype=np.float64)
        for row in range(len(x)):
            errs = []
            for w in self.windows(x[row : row + 1].to(self.device)):
                gen = make_generator(RECON_SEED, device=self.device)  # the recon scorer's masks
                errs.append(self.model.masked_patch_errors(w.expand(self.cfg.recon_masks, -1, -1),
                                                           self.cfg.recon_mask_ratio, gen).flatten())
            out[row] = topk_mean(torch.cat(errs).cpu().numpy(), self.cfg.recon_topk)
        return out
