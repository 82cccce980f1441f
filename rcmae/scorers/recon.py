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


RECON_BATCH = 16  # clips per batched forward (x recon_masks rows)


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

    def _noise(self) -> torch.Tensor:
        """The uniform noise ``[recon_masks, L]`` that the scorer's fixed-seed generator draws for its masks (what
        ``RCMAE.random_masking`` would draw for the clip repeated once per mask): the same masks for every clip."""
        gen = make_generator(RECON_SEED, device=self.device)
        return torch.rand(self.cfg.recon_masks, self.model.config.num_patches, generator=gen, device=self.device)

    @torch.no_grad()
    def window_errors(self, clips: Clips, per_patch: bool = False) -> list[torch.Tensor]:
        """Per crop window, the errors of every clip: ``[B, masks]`` masked-patch MSEs, or with ``per_patch`` each
        masked patch's MSE ``[B, masks * masked]``. A batch of clips at a time, each repeated once per mask with
        the scorer's fixed noise, so a clip's errors do not depend on the batch (as one clip at a time)."""
        noise = self._noise()
        out: list[list[torch.Tensor]] = []
        for b in range(0, len(clips.x), RECON_BATCH):
            xb = clips.x[b : b + RECON_BATCH].to(self.device)
            out.append([self.model.fixed_mask_errors(w, self.cfg.recon_mask_ratio, noise, per_patch)
                        for w in self.windows(xb)])
        return [torch.cat([batch[k] for batch in out]) for k in range(len(out[0]))] if out else []

    @torch.no_grad()
    def score(self, clips: Clips) -> np.ndarray:
        if not len(clips.x):
            return np.empty(0, dtype=np.float64)
        errs = self.window_errors(clips)
        return torch.stack([e.mean(1) for e in errs]).mean(0).double().cpu().numpy()


class ReconTopkScorer(ReconScorer):
    """``recon_topk``: mean of the highest ``score.recon_topk`` fraction of masked-patch errors."""

    name = "recon_topk"

    @torch.no_grad()
    def score(self, clips: Clips) -> np.ndarray:
        if not len(clips.x):
            return np.empty(0, dtype=np.float64)
        flat = torch.cat(self.window_errors(clips, per_patch=True), dim=1).cpu().numpy()
        return np.array([topk_mean(row, self.cfg.recon_topk) for row in flat])
