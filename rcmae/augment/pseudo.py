"""Augmented pseudo-classes for fine-tuning: each (machine ID, transform) pair is its own class.

Self-supervised classification for anomalous sound detection (Giri et al., DCASE 2020 task 2; Inoue et
al. 2020): a classifier that only has to tell machine IDs apart learns whatever separates the units (a
speed, a resonance, a level) and ignores the fine structure that anomalies disturb, so its
``p(own ID | clip)`` hardly moves on anomalous clips. Asking it also to tell each unit from slightly
sped-up, pitch-shifted, time-stretched or tilted copies of itself makes the task hard enough that it has to
model that structure; the anomaly score stays ``-log p(own ID, unchanged | clip)``
(:mod:`rcmae.scorers.idprob`).

The transforms act on dB log-mels ``[B, F, T]`` (before normalisation) and are cheap (one bilinear
resampling per batch, ``torch.nn.functional.grid_sample``):

- ``speed:f``: the machine running ``f`` times faster: every frequency times ``f`` and time compressed by
  ``f`` (output frame ``j`` reads input frame ``start + j * f``);
- ``pitch:f``: frequencies times ``f``, time unchanged;
- ``stretch:f``: time read at rate ``f`` (``f > 1`` faster), frequencies unchanged;
- ``tilt:d``: a spectral tilt adding ``d`` dB at the top mel bin and ``-d`` dB at the bottom one (linear in
  the bin index);
- ``band:c:d``: ``d`` dB added to a band a quarter of the mel bins wide centred at the fraction ``c`` of the
  mel axis (a raised-cosine bump: ``d`` at its centre, 0 at its edges).

A frequency factor moves each mel bin's centre frequency ``c_i`` to read the input at ``c_i / f``
(linearly interpolated between bin centres; outside the filterbank the edge bin is repeated). The
transform index 0 is always the identity; class ``label * K + k`` is machine ID ``label`` under transform
``k`` of ``K``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import librosa
import numpy as np
import torch

KINDS = ("speed", "pitch", "stretch", "tilt", "band")


@dataclass(frozen=True)
class PseudoTransform:
    """One pseudo-class transform: ``kind`` (see :data:`KINDS`, or ``identity``) and its value."""

    kind: str
    value: float
    centre: float = 0.0  # band: where the bump sits (fraction of the mel axis)

    @property
    def freq_factor(self) -> float:
        """Factor on every frequency (1 = unchanged)."""
        return self.value if self.kind in ("speed", "pitch") else 1.0

    @property
    def time_rate(self) -> float:
        """Input frames read per output frame (1 = unchanged, > 1 faster)."""
        return self.value if self.kind in ("speed", "stretch") else 1.0

    def gains(self, n_mels: int) -> np.ndarray:
        """dB added to each mel bin ``[n_mels]`` (zeros for the transforms that do not change levels)."""
        if self.kind == "tilt":
            return self.value * np.linspace(-1.0, 1.0, n_mels)
        if self.kind == "band":
            half = n_mels / 8.0
            d = (np.arange(n_mels) - self.centre * (n_mels - 1)) / half
            return self.value * np.where(np.abs(d) < 1.0, 0.5 * (1.0 + np.cos(np.pi * d)), 0.0)
        return np.zeros(n_mels)


IDENTITY = PseudoTransform("identity", 0.0)


def parse_pseudo_classes(specs: Sequence[str]) -> list[PseudoTransform]:
    """The transforms of ``finetune.pseudo_classes`` (``["speed:1.03", "tilt:2"]``), the identity first.

    Raises:
        ValueError: a spec is not ``kind:value`` with a known kind, a factor is not in (0.5, 2), a tilt is not
            within +-24 dB, a transform is the identity, or one is given twice.
    """
    out = [IDENTITY]
    for spec in specs:
        kind, *raw = str(spec).split(":")
        kind = kind.strip()
        try:
            nums = [float(r) for r in raw]
        except ValueError:
            nums = []
        if kind not in KINDS or len(nums) != (2 if kind == "band" else 1) or not np.all(np.isfinite(nums)):
            raise ValueError(f"finetune.pseudo_classes: {spec!r} is not KIND:VALUE (band:CENTRE:DB) with KIND one of "
                             f"{', '.join(KINDS)} (e.g. speed:1.03, pitch:0.97, stretch:1.1, tilt:3, band:0.25:6)")
        value, centre = nums[-1], (nums[0] if kind == "band" else 0.0)
        if kind in ("tilt", "band") and not (0 < abs(value) <= 24):
            raise ValueError(f"finetune.pseudo_classes: {spec!r}: a {kind} gain is a non-zero dB value within +-24")
        if kind == "band" and not 0.0 <= centre <= 1.0:
            raise ValueError(f"finetune.pseudo_classes: {spec!r}: a band centre is in [0, 1]")
        if kind not in ("tilt", "band") and not (0.5 < value < 2.0 and value != 1.0):
            raise ValueError(f"finetune.pseudo_classes: {spec!r}: a factor must be in (0.5, 2) and not 1")
        t = PseudoTransform(kind, value, centre)
        if t in out:
            raise ValueError(f"finetune.pseudo_classes: {spec!r} is given twice")
        out.append(t)
    return out


def pseudo_labels(labels: torch.Tensor, transform: torch.Tensor, n_transforms: int) -> torch.Tensor:
    """Class of machine ID ``labels[b]`` under transform ``transform[b]``: ``labels * K + transform``."""
    return labels * n_transforms + transform


def mel_centres(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Centre frequencies (Hz) of the mel bins of ``librosa.filters.mel`` (Slaney scale), ``[n_mels]``."""
    return librosa.mel_frequencies(n_mels=n_mels + 2, fmin=fmin, fmax=fmax)[1:-1]


def source_bins(centres: np.ndarray, factor: float) -> np.ndarray:
    """Fractional input bin each output bin reads when every frequency is multiplied by ``factor``."""
    return np.interp(centres / factor, centres, np.arange(len(centres), dtype=np.float64))


class PseudoClassAugment:
    """Applies the pseudo-class transforms to batches of dB log-mels and crops them.

    Args:
        specs: ``finetune.pseudo_classes`` (the identity is added as transform 0).
        n_mels, fmin, fmax: The log-mel front-end (``features.*``), for the bins' centre frequencies.
    """

    def __init__(self, specs: Sequence[str], n_mels: int, fmin: float, fmax: float) -> None:
        self.transforms = parse_pseudo_classes(specs)
        centres = mel_centres(n_mels, fmin, fmax)
        self.n_mels = n_mels
        self.rows = torch.tensor(np.stack([source_bins(centres, t.freq_factor) for t in self.transforms]))
        self.gains = torch.tensor(np.stack([t.gains(n_mels) for t in self.transforms]))

    @property
    def n_transforms(self) -> int:
        """``K``: the identity plus the configured transforms."""
        return len(self.transforms)

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Transform index per batch row, uniform over the ``K`` transforms."""
        return torch.randint(0, self.n_transforms, (n,), generator=generator)

    def __call__(self, x: torch.Tensor, transform: torch.Tensor, crop: int | None,
                 generator: torch.Generator) -> torch.Tensor:
        """Transformed random crops ``[B, F, crop]`` of dB log-mels ``x [B, F, T]`` (``crop=None``: ``T`` frames).

        Row ``b`` reads input frames ``start_b + j * rate`` (``j < crop``), with ``start_b`` uniform among the
        starts where the read span fits (0 when it does not: the last frame is then repeated), and input bins
        :func:`source_bins`; both bilinearly interpolated. Identity rows are exact copies of their crop.
        """
        b, f, t = x.shape
        if f != self.n_mels:
            raise ValueError(f"PseudoClassAugment: log-mels have {f} bins, the front-end {self.n_mels}")
        c = t if crop is None or crop >= t else int(crop)
        rate = torch.tensor([self.transforms[int(k)].time_rate for k in transform], dtype=torch.float64)
        span = (c - 1) * rate
        room = torch.clamp(t - 1 - span, min=0.0)
        # Integer starts (uniform over the positions that fit), so identity rows are not interpolated.
        start = torch.floor(torch.rand(b, generator=generator, dtype=torch.float64) * (torch.floor(room) + 1))
        cols = start[:, None] + torch.arange(c, dtype=torch.float64)[None] * rate[:, None]  # [B, c]
        rows = self.rows[transform]  # [B, F]
        grid = torch.stack([
            (2.0 * cols / max(t - 1, 1) - 1.0)[:, None, :].expand(b, f, c),
            (2.0 * rows / max(f - 1, 1) - 1.0)[:, :, None].expand(b, f, c),
        ], dim=-1).to(x.dtype)
        out = torch.nn.functional.grid_sample(x[:, None], grid.to(x.device), mode="bilinear",
                                              padding_mode="border", align_corners=True)[:, 0]
        same = (transform == 0).to(x.device)
        if bool(same.any()):  # exact copies, free of the grid's float rounding
            idx = (start[:, None] + torch.arange(c, dtype=torch.float64)[None]).long().clamp(max=t - 1).to(x.device)
            exact = x.gather(-1, idx[:, None, :].expand(b, f, c))
            out = torch.where(same[:, None, None], exact, out)
        return out + self.gains[transform].to(x.dtype).to(x.device)[:, :, None]
