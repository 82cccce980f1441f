"""Time and frequency masking on log-mel spectrograms: the paper's "without DDA" augmentation arm.

SpecAugment (Park et al., 2019) without time warping. Each example in a batch gets its own masks:
``freq_masks`` bands of up to ``freq_width`` mel bins and ``time_masks`` spans of up to
``time_width`` frames, each width drawn uniformly in ``0..max`` and each start uniformly among the
positions where the band fits. All draws come from one ``torch.Generator`` so a seed fixes the masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

MASK_VALUES = ("mean", "zero")


@dataclass
class SpecAugmentConfig:
    """How many masks of which maximum width, and what the masked cells are set to.

    Attributes:
        freq_masks: number of frequency bands masked per example.
        freq_width: maximum band width in mel bins (each width is drawn in ``0..freq_width``).
        time_masks: number of time spans masked per example.
        time_width: maximum span width in frames (each width is drawn in ``0..time_width``).
        mask_value: ``"mean"`` (the example's own mean log-mel value) or ``"zero"``.
    """

    freq_masks: int = 2
    freq_width: int = 16
    time_masks: int = 2
    time_width: int = 32
    mask_value: str = "mean"

    def __post_init__(self) -> None:
        for name in ("freq_masks", "freq_width", "time_masks", "time_width"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"SpecAugmentConfig.{name}={value!r}: must be an integer >= 0")
        if self.mask_value not in MASK_VALUES:
            raise ValueError(f"SpecAugmentConfig.mask_value={self.mask_value!r}: use one of {', '.join(MASK_VALUES)}")


class MaskDraws(NamedTuple):
    """The random draws behind one call: starts and widths, each ``[B, n_masks]`` int64."""

    freq_start: torch.Tensor
    freq_width: torch.Tensor
    time_start: torch.Tensor
    time_width: torch.Tensor


def _draw(batch: int, n_masks: int, max_width: int, size: int, generator: torch.Generator | None):
    width = torch.randint(0, max_width + 1, (batch, n_masks), generator=generator)
    # A uniform start among the size - width + 1 positions where the band fits entirely.
    u = torch.rand((batch, n_masks), generator=generator, dtype=torch.float64)
    start = (u * (size - width + 1).double()).floor().long()
    return start, width


def draw_masks(shape: tuple[int, int, int], config: SpecAugmentConfig,
               generator: torch.Generator | None = None) -> MaskDraws:
    """Draw the mask positions for a batch of shape ``[B, F, T]`` (frequency draws first, then time).

    Raises:
        ValueError: when a maximum width exceeds the spectrogram's size on that axis.
    """
    batch, n_freq, n_time = shape
    if config.freq_width > n_freq:
        raise ValueError(f"SpecAugmentConfig.freq_width={config.freq_width} exceeds the {n_freq} mel bins; "
                         f"lower it to at most {n_freq}")
    if config.time_width > n_time:
        raise ValueError(f"SpecAugmentConfig.time_width={config.time_width} exceeds the {n_time} frames; "
                         f"lower it to at most {n_time}")
    f_start, f_width = _draw(batch, config.freq_masks, config.freq_width, n_freq, generator)
    t_start, t_width = _draw(batch, config.time_masks, config.time_width, n_time, generator)
    return MaskDraws(f_start, f_width, t_start, t_width)


def _band_mask(start: torch.Tensor, width: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
    """``[B, n_masks]`` bands -> ``[B, size]`` bool, True inside any band."""
    pos = torch.arange(size, device=device).view(1, 1, size)
    start = start.to(device).unsqueeze(-1)
    inside = (pos >= start) & (pos < start + width.to(device).unsqueeze(-1))
    return inside.any(dim=1)


def apply_masks(logmel: torch.Tensor, draws: MaskDraws, mask_value: str = "mean") -> torch.Tensor:
    """Apply drawn masks to ``logmel [B, F, T]``; returns a new tensor (the input is not modified)."""
    batch, n_freq, n_time = logmel.shape
    f_mask = _band_mask(draws.freq_start, draws.freq_width, n_freq, logmel.device)  # [B, F]
    t_mask = _band_mask(draws.time_start, draws.time_width, n_time, logmel.device)  # [B, T]
    mask = f_mask.unsqueeze(-1) | t_mask.unsqueeze(1)  # [B, F, T]
    if mask_value == "mean":
        # The example's mean over the unmasked input: masked cells look like "average" energy, not silence.
        fill = logmel.mean(dim=(1, 2), keepdim=True).expand_as(logmel)
    else:
        fill = torch.zeros_like(logmel)
    return torch.where(mask, fill, logmel)


def spec_augment(logmel: torch.Tensor, config: SpecAugmentConfig | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Mask random frequency bands and time spans of each example, vectorised over the batch.

    Args:
        logmel: ``[B, F, T]`` (or ``[F, T]``) log-mel spectrogram.
        config: mask counts, widths and fill value (default ``SpecAugmentConfig()``).
        generator: a CPU ``torch.Generator``; the same seed gives the same masks.

    Returns:
        A tensor of the input's shape, dtype and device.
    """
    config = config or SpecAugmentConfig()
    if logmel.dim() == 2:
        return spec_augment(logmel.unsqueeze(0), config, generator).squeeze(0)
    if logmel.dim() != 3:
        raise ValueError(f"spec_augment: expected a log-mel of shape [B, F, T] or [F, T], got {tuple(logmel.shape)}")
    draws = draw_masks(tuple(logmel.shape), config, generator)
    return apply_masks(logmel, draws, config.mask_value)
