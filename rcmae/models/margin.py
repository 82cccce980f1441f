"""The angular-margin classifier family: a CPU-sized STgram-MFN-style network over machine IDs.

STgram-MFN (Liu et al., ICASSP 2022; the paper's Table 4 peer, 92.36 / 86.34 on DCASE 2020) classifies
machine IDs from two stacked maps of one clip: the log-mel spectrogram and a *Tgram*, a learnable
temporal front-end (a 1-D convolution over the raw waveform whose window and hop equal the STFT's,
giving one channel per mel bin and one column per frame, followed by a few conv blocks). An
ArcFace head (or AdaCos) trains the embedding with mixup; a clip is anomalous when the classifier
doubts its own machine ID (``idprob``) or when its embedding is far from the unit's normal clips
(``knn``).

This module is pure torch (no Lightning, no data loading). The network takes the **waveform**
``[B, N]`` and computes its own log-mel (with the run's :class:`~rcmae.data.features.LogMelConfig` and
the training clips' per-band statistics, held as buffers in the state dict), so a saved model scores a
clip from its samples alone. Here it is a small CNN (three conv blocks, about 0.1 M parameters,
not MobileFaceNet's width) so that it trains in minutes on two CPU cores.

Shapes: ``B`` batch, ``N`` samples, ``F`` mel bins, ``T`` frames (``1 + N // hop``), ``D`` embedding width,
``C`` machine-ID classes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from rcmae.data.features import LogMel, LogMelConfig
from rcmae.models.losses import adacos_scale, arcface_logits, cosine_logits

__all__ = ["MarginConfig", "MarginOutput", "Tgram", "STgramNet"]


@dataclass
class MarginConfig:
    """Architecture and loss of an :class:`STgramNet` (the ``margin`` section of a run config).

    Attributes:
        tgram: Use the Tgram branch (False: log-mel only, the ablation).
        tgram_blocks: Conv blocks after the Tgram's strided waveform convolution.
        channels: Output channels of the 2-D conv blocks (each halves both axes).
        emb_dim: Width of the embedding ``z`` (the knn space).
        head: ``"arcface"`` (additive angular margin), ``"adacos"`` (adaptive scale, no margin) or
            ``"softmax"`` (a plain linear classifier; the control).
        margin: ArcFace margin ``m`` in radians (STgram-MFN used 0.7).
        scale: ArcFace scale ``s``; AdaCos's starting scale is ``sqrt(2) * log(C - 1)`` and this is ignored.
        mixup_alpha: Beta(alpha, alpha) of the mixing weight; 0 turns mixup off.
        mixup_prob: Fraction of training batches that are mixed.
        label_smoothing: Cross-entropy label smoothing.
        crop_frames: Train on random waveform crops of this many frames (``None``: whole clips); scoring
            always sees the whole clip (the pooling is length-independent).
        dropout: Dropout before the embedding layer.
        n_classes: Machine-ID classes (set by training).
    """

    tgram: bool = True
    tgram_blocks: int = 2
    channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    emb_dim: int = 128
    head: Literal["arcface", "adacos", "softmax"] = "arcface"
    margin: float = 0.5
    scale: float = 30.0
    mixup_alpha: float = 0.2
    mixup_prob: float = 1.0
    label_smoothing: float = 0.0
    crop_frames: int | None = None
    dropout: float = 0.0
    n_classes: int = 0

    def __post_init__(self) -> None:
        if not self.channels or any(not isinstance(c, int) or c < 1 for c in self.channels):
            raise ValueError(f"margin.channels={self.channels!r}: a non-empty list of positive integers")
        for name in ("emb_dim", "tgram_blocks", "n_classes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (1 if name == "emb_dim" else 0):
                kind = "positive" if name == "emb_dim" else "non-negative"
                raise ValueError(f"margin.{name}={value!r}: must be a {kind} integer")
        if self.head not in ("arcface", "adacos", "softmax"):
            raise ValueError(f"margin.head={self.head!r}: must be arcface, adacos or softmax")
        if self.margin < 0 or self.scale <= 0:
            raise ValueError(f"margin.margin={self.margin}, margin.scale={self.scale}: need margin >= 0, scale > 0")
        if self.mixup_alpha < 0 or not 0.0 <= self.mixup_prob <= 1.0:
            raise ValueError(f"margin.mixup_alpha={self.mixup_alpha}, margin.mixup_prob={self.mixup_prob}: need "
                             "alpha >= 0 and a probability in [0, 1]")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"margin.label_smoothing={self.label_smoothing}: must be in [0, 1)")
        if self.crop_frames is not None and self.crop_frames < 8:
            raise ValueError(f"margin.crop_frames={self.crop_frames}: use at least 8 frames, or null for whole clips")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"margin.dropout={self.dropout}: must be in [0, 1)")


class MarginOutput(NamedTuple):
    """Eval pass of :class:`STgramNet`: ``embedding [B, D]`` and ``logits [B, C]`` (no margin) or ``None``."""

    embedding: Tensor
    logits: Tensor | None


class Tgram(nn.Module):
    """STgram-MFN's temporal front-end: waveform ``[B, N]`` -> ``[B, F, T]`` aligned with the log-mel frames.

    A 1-D convolution with ``F`` output channels, kernel = the STFT window and stride = its hop, padded by
    half a window on both sides (the STFT's ``center=True`` framing), so frame ``t`` is centred on sample
    ``t * hop`` exactly as the log-mel's; then ``blocks`` x (GroupNorm, LeakyReLU, Conv1d k=3).
    """

    def __init__(self, n_mels: int, win_length: int, hop_length: int, blocks: int = 2) -> None:
        super().__init__()
        self.win_length, self.hop_length = win_length, hop_length
        self.conv = nn.Conv1d(1, n_mels, kernel_size=win_length, stride=hop_length, padding=win_length // 2,
                              bias=False)
        self.blocks = nn.Sequential(*[
            nn.Sequential(nn.GroupNorm(1, n_mels), nn.LeakyReLU(0.2), nn.Conv1d(n_mels, n_mels, 3, padding=1,
                                                                                 bias=False))
            for _ in range(blocks)
        ])

    def forward(self, wave: Tensor) -> Tensor:
        """``wave [B, N]`` -> ``[B, F, 1 + N // hop]``."""
        if wave.ndim != 2:
            raise ValueError(f"Tgram: expected a waveform batch [B, N], got shape {tuple(wave.shape)}")
        n = wave.shape[-1]
        # An odd window pads one sample less on the right; trim to the log-mel's frame count either way.
        out = self.blocks(self.conv(wave.unsqueeze(1)))
        return out[..., : 1 + n // self.hop_length]


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.MaxPool2d(2, ceil_mode=True))


class STgramNet(nn.Module):
    """Log-mel + Tgram -> small CNN -> embedding ``z`` -> angular-margin classifier over machine IDs.

    Args:
        config: Architecture and loss.
        features: The log-mel front-end (the Tgram takes its window and hop).
        mean: Per-mel-bin mean ``[F]`` of the training log-mels (``None``: zeros; training sets it).
        std: Per-mel-bin std ``[F]`` (``None``: ones).
    """

    def __init__(self, config: MarginConfig, features: LogMelConfig | None = None, mean: Tensor | None = None,
                 std: Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        self.features = features or LogMelConfig()
        f = self.features
        self.logmel = LogMel(f)
        self.register_buffer("mel_mean", torch.zeros(f.n_mels) if mean is None else torch.as_tensor(mean).float())
        self.register_buffer("mel_std", torch.ones(f.n_mels) if std is None else torch.as_tensor(std).float())
        self.tgram = Tgram(f.n_mels, f.win_length, f.hop_length, config.tgram_blocks) if config.tgram else None
        chans = [2 if config.tgram else 1, *config.channels]
        self.cnn = nn.Sequential(*[_conv_block(a, b) for a, b in zip(chans[:-1], chans[1:], strict=True)])
        self.dropout = nn.Dropout(config.dropout)
        self.embedding = nn.Linear(chans[-1], config.emb_dim)
        self.head: nn.Linear | None = None
        # AdaCos's adaptive scale travels in the state dict; ArcFace keeps its fixed scale here too.
        self.register_buffer("head_scale", torch.tensor(float(config.scale)))
        self.set_num_classes(config.n_classes)

    def set_num_classes(self, n_classes: int) -> None:
        """A fresh classifier over ``n_classes`` machine IDs (0 removes it); resets AdaCos's scale."""
        if not isinstance(n_classes, int) or n_classes < 0:
            raise ValueError(f"set_num_classes: n_classes={n_classes!r} must be an integer >= 0")
        self.config = dataclasses.replace(self.config, n_classes=n_classes)
        if n_classes == 0:
            self.head = None
            return
        ref = self.embedding.weight
        self.head = nn.Linear(self.config.emb_dim, n_classes, bias=self.config.head == "softmax", device=ref.device,
                              dtype=ref.dtype)
        nn.init.xavier_uniform_(self.head.weight)
        if self.config.head == "adacos":
            self.head_scale.fill_(2.0**0.5 * torch.log(torch.tensor(max(n_classes - 1, 2.0))).item())

    # ------------------------------------------------------------------------------------------- forward
    def normalised_logmel(self, wave: Tensor) -> Tensor:
        """``wave [B, N]`` -> log-mel ``[B, F, T]`` normalised with the training statistics."""
        x = self.logmel(wave)
        return (x - self.mel_mean[:, None]) / self.mel_std[:, None]

    def spectro_temporal(self, wave: Tensor) -> Tensor:
        """The network's input map: ``[B, 2, F, T]`` (log-mel, Tgram), or ``[B, 1, F, T]`` without the Tgram."""
        if wave.ndim != 2:
            raise ValueError(f"STgramNet: expected a waveform batch [B, N], got shape {tuple(wave.shape)}")
        mel = self.normalised_logmel(wave)
        if self.tgram is None:
            return mel.unsqueeze(1)
        return torch.stack([mel, self.tgram(wave)], dim=1)

    def embed(self, wave: Tensor) -> Tensor:
        """Embedding ``z [B, emb_dim]`` of waveforms ``[B, N]`` (mean over the CNN's frequency-time grid)."""
        h = self.cnn(self.spectro_temporal(wave)).mean(dim=(2, 3))
        return self.embedding(self.dropout(h))

    def cosine(self, z: Tensor) -> Tensor:
        """Cosines to the class centres ``[B, C]`` (the head's weight rows)."""
        if self.head is None:
            raise ValueError("STgramNet: the model has no classifier head (n_classes=0); call set_num_classes(n)")
        return cosine_logits(z, self.head.weight)

    def classify(self, z: Tensor) -> Tensor:
        """Eval logits ``[B, C]``: ``s * cos`` (no margin) for arcface/adacos, the linear layer for softmax."""
        if self.head is None:
            raise ValueError("STgramNet: the model has no classifier head (n_classes=0); call set_num_classes(n)")
        if self.config.head == "softmax":
            return self.head(z)
        return self.head_scale * self.cosine(z)

    def train_logits(self, z: Tensor, labels: Tensor) -> Tensor:
        """Training logits: the margin on the true class (arcface), an updated adaptive scale (adacos)."""
        if self.config.head == "softmax":
            return self.head(z)
        cos = self.cosine(z)
        if self.config.head == "adacos":
            if self.training:
                self.head_scale.copy_(adacos_scale(cos, labels, self.head_scale))
            return self.head_scale * cos
        return arcface_logits(cos, labels, self.head_scale, self.config.margin)

    def forward(self, wave: Tensor) -> MarginOutput:
        """Eval pass: ``MarginOutput(embedding, logits or None)``."""
        z = self.embed(wave)
        return MarginOutput(z, self.classify(z) if self.head is not None else None)


def crop_waves(wave: Tensor, crop_frames: int | None, hop_length: int, generator: torch.Generator) -> Tensor:
    """One random crop of ``crop_frames`` frames (``crop_frames * hop`` samples) per batch; whole clips if None."""
    if crop_frames is None:
        return wave
    n = crop_frames * hop_length
    if wave.shape[-1] <= n:
        return wave
    start = int(torch.randint(0, wave.shape[-1] - n + 1, (1,), generator=generator))
    return wave[..., start : start + n]


class WaveformInput(torch.nn.Module):
    """The margin family's "features": the waveform batch itself ``[B, N]`` (the model holds its front-end)."""

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(wave, dtype=torch.float32)


class IdentityStats:
    """Stands in for :class:`FeatureStats` where the model normalises its own log-mel."""

    @staticmethod
    def apply(x: torch.Tensor) -> torch.Tensor:
        return x
