"""Log-mel features inside export graphs: band statistics, 5-frame context vectors, window embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn

from rcmae.data.datasets import window_starts
from rcmae.data.features import graph_capture
from rcmae.deploy.graph.spec import recorded
from rcmae.models.rcmae import RCMAE
from rcmae.scorers.frames import BAND_QUANTILES, band_quantiles


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
    if not graph_capture():  # eager (a graph bundle): the scorers' own, faster quantiles, bit for bit
        quantiles = list(band_quantiles(x))
    else:
        ordered = torch.sort(x, dim=-1).values
        quantiles = []
        for q in BAND_QUANTILES:
            pos = q * (t - 1)
            lo = int(math.floor(pos))
            hi = min(lo + 1, t - 1)
            quantiles.append(_lerp(ordered[..., lo], ordered[..., hi], pos - lo))
    delta = (x[..., 1:] - x[..., :-1]).abs().mean(-1) if t > 1 else torch.zeros_like(x[..., 0])
    return torch.cat([x.mean(-1), x.std(-1, unbiased=False), *quantiles, delta], dim=-1)


@recorded
class WindowEmbedder(nn.Module):
    """``x [B, F, T]`` -> ``z [B, D]``: the mean embedding over the run's crop windows (``Detector.embed``)."""

    def __init__(self, model: RCMAE, n_frames: int, crop: int | None) -> None:
        super().__init__()
        self.model = model
        self.crop = crop or n_frames
        self.starts = window_starts(n_frames, crop) if crop else [0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.model.embed(x[..., s : s + self.crop]) for s in self.starts]).mean(0)


def context_frames_graph(x: torch.Tensor, n: int) -> torch.Tensor:
    """:func:`rcmae.scorers.frames.context_frames` of a batch: ``[B, F, T] -> [B, T-n+1, nF]`` (frame-major)."""
    s = x.shape[-1] - n + 1
    return torch.cat([x[..., k : k + s] for k in range(n)], dim=1).transpose(1, 2)
