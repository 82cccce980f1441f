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
  the bin index).

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

KINDS = ("speed", "pitch", "stretch", "tilt")


@dataclass(frozen=True)
class PseudoTransform:
    """One pseudo-class transform: ``kind`` (see :data:`KINDS`, or ``identity``) and its value."""

    kind: str
    value: float

    @property
    def freq_factor(self) -> float:
        """Factor on every frequency (1 = unchanged)."""
        return self.value if self.kind in ("speed", "pitch") else 1.0

    @property
    def time_rate(self) -> float:
        """Input frames read per output frame (1 = unchanged, > 1 faster)."""
        return self.value if self.kind in ("speed", "stretch") else 1.0

    @property
    def tilt_db(self) -> float:
        """dB added at the top mel bin (minus at the bottom)."""
        return self.value if self.kind == "tilt" else 0.0


IDENTITY = PseudoTransform("identity", 0.0)


def parse_pseudo_classes(specs: Sequence[str]) -> list[PseudoTransform]:
    """The transforms of ``finetune.pseudo_classes`` (``["speed:1.03", "tilt:2"]``), the identity first.

    Raises:
        ValueError: a spec is not ``kind:value`` with a known kind, a factor is not in (0.5, 2), a tilt is not
            within +-24 dB, a transform is the identity, or one is given twice.
    """
    out = [IDENTITY]
    for spec in specs:
        kind, sep, raw = str(spec).partition(":")
        kind = kind.strip()
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not sep or kind not in KINDS or not np.isfinite(value):
            raise ValueError(f"finetune.pseudo_classes: {spec!r} is not KIND:VALUE with KIND one of "
                             f"{', '.join(KINDS)} (e.g. speed:1.03, pitch:0.97, stretch:1.1, tilt:3)")
        if kind == "tilt" and not (0 < abs(value) <= 24):
            raise ValueError(f"finetune.pseudo_classes: {spec!r}: a tilt is a non-zero dB value within +-24")
        if kind != "tilt" and not (0.5 < value < 2.0 and value != 1.0):
            raise ValueError(f"finetune.pseudo_classes: {spec!r}: a factor must be in (0.5, 2) and not 1")
        t = PseudoTransform(kind, value)
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
        ramp = np.linspace(-1.0, 1.0, n_mels)
        self.tilts = torch.tensor(np.stack([t.tilt_db * ramp for t in self.transforms]))

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
        return out + self.tilts[transform].to(x.dtype).to(x.device)[:, :, None]
