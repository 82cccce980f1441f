"""The log-mel front-end (one implementation for every model and baseline) and normalisation statistics.

The STFT runs in torch so that a batch of clips is transformed at once on CPU or GPU; the mel
filterbank comes from librosa so that the numbers match ``librosa.feature.melspectrogram``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import torch
from torch import nn

# Clips per STFT on a CPU (LogMel.forward): small enough for the complex spectrogram to stay in cache.
CPU_CHUNK = 2


def graph_capture() -> bool:
    """Whether the module is being traced, scripted or exported (a Python loop over the batch must not be baked in)."""
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()


@dataclass
class LogMelConfig:
    """Front-end parameters. Defaults are the paper's: 16 kHz, 1024/512, 128 mel bins, 50-8000 Hz, power dB."""

    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 512
    n_mels: int = 128
    fmin: float = 50.0
    fmax: float = 8000.0
    power: float = 2.0
    center: bool = True
    pad_mode: str = "constant"
    amin: float = 1e-10
    top_db: float | None = None

    def __post_init__(self) -> None:
        if self.win_length > self.n_fft:
            raise ValueError(f"features.win_length ({self.win_length}) must not exceed features.n_fft ({self.n_fft})")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(
                f"features.fmin/fmax ({self.fmin}, {self.fmax}) must satisfy 0 <= fmin < fmax <= sample_rate/2"
            )
        if self.power not in (1.0, 2.0):
            raise ValueError(f"features.power must be 1 (magnitude) or 2 (power), got {self.power}")
        if self.pad_mode not in ("constant", "reflect"):
            raise ValueError(f"features.pad_mode must be 'constant' or 'reflect', got {self.pad_mode!r}")

    def n_frames(self, n_samples: int) -> int:
        """Frames produced for a clip of ``n_samples`` samples."""
        if self.center:
            return 1 + n_samples // self.hop_length
        return 1 + (n_samples - self.n_fft) // self.hop_length


class LogMel(nn.Module):
    """Batched log-mel spectrogram: waveform ``[B, N]`` (or ``[N]``) -> dB ``[B, F, T]`` (or ``[F, T]``).

    dB is ``10 * log10(max(S, amin))`` for power spectra (``20 * log10`` for magnitude), i.e.
    ``librosa.power_to_db(S, ref=1.0, amin=amin, top_db=top_db)``.
    """

    def __init__(self, config: LogMelConfig | None = None) -> None:
        super().__init__()
        self.config = config or LogMelConfig()
        c = self.config
        mel = librosa.filters.mel(sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax)
        self.register_buffer("mel_basis", torch.from_numpy(mel).float(), persistent=False)
        # librosa's window: periodic Hann of win_length, zero-padded to n_fft by torch.stft.
        self.register_buffer("window", torch.hann_window(c.win_length, periodic=True), persistent=False)

    def forward(self, wave: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(wave, dtype=torch.float32, device=self.mel_basis.device)
        squeeze = x.ndim == 1
        if squeeze:
            x = x[None]
        if x.ndim != 2:
            raise ValueError(f"LogMel expects a waveform [B, N] or [N], got shape {tuple(x.shape)}")
        if x.device.type == "cpu" and x.shape[0] > CPU_CHUNK and not graph_capture():
            # On a CPU a few clips at a time keep the complex spectrogram in cache: 3-4x faster than one big batch
            # (bench/results/frontend-cpu.md); every clip's result is the same either way.
            out = torch.cat([self(x[i : i + CPU_CHUNK]) for i in range(0, x.shape[0], CPU_CHUNK)])
            return out[0] if squeeze else out
        c = self.config
        db = self.frames_db(self.pad(x))
        if c.top_db is not None:
            db = torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - c.top_db)
        return db[0] if squeeze else db

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` padded by ``n_fft // 2`` on both sides when centring (``pad_mode``), else unchanged."""
        c = self.config
        if not c.center:
            return x
        # torch.stft's own centring only reflects; librosa >= 0.10 pads with zeros by default.
        return nn.functional.pad(x[:, None], (c.n_fft // 2, c.n_fft // 2), mode=c.pad_mode)[:, 0]

    def frames_db(self, x: torch.Tensor) -> torch.Tensor:
        """dB mel frames ``[B, F, T]`` of already padded signals ``[B, N]``: frame ``t`` is samples
        ``[t * hop, t * hop + n_fft)`` (no centring, no ``top_db``). A frame depends on its own samples only, so
        the frames of a long signal are those of any window that contains them (:mod:`rcmae.deploy.stream`)."""
        c = self.config
        spec = torch.stft(
            x,
            n_fft=c.n_fft,
            hop_length=c.hop_length,
            win_length=c.win_length,
            window=self.window,
            center=False,
            return_complex=True,
        )
        if c.power == 2.0:
            mag = spec.real.square() + spec.imag.square()  # |X|^2 without the square root of abs()
        else:
            mag = spec.abs()
        mel = torch.matmul(self.mel_basis, mag)
        scale = 10.0 if c.power == 2.0 else 20.0
        return scale * torch.log10(torch.clamp(mel, min=c.amin))

    @torch.no_grad()
    def transform_batches(
        self, waves: np.ndarray | torch.Tensor, batch_size: int = 32, progress: bool = False
    ) -> torch.Tensor:
        """Log-mel of many clips ``[n, N]`` in batches (bounded memory), returned on CPU ``[n, F, T]``."""
        from tqdm.auto import tqdm

        out = []
        starts = range(0, len(waves), batch_size)
        for start in tqdm(starts, desc="log-mel", unit="batch", disable=not progress):
            out.append(self(waves[start : start + batch_size]).cpu())
        if not out:
            n_frames = self.config.n_frames(np.shape(waves)[-1]) if np.ndim(waves) == 2 else 0
            return torch.empty(0, self.config.n_mels, n_frames)
        return torch.cat(out)


@dataclass
class FeatureStats:
    """Per-mel-bin mean and standard deviation over all frames of the training clips."""

    mean: np.ndarray
    std: np.ndarray
    n_frames: int = 0
    min_std: float = 1e-5

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float64)
        # A constant bin would divide by zero: floor its std.
        self.std = np.maximum(np.asarray(self.std, dtype=np.float64), self.min_std)
        if self.mean.shape != self.std.shape or self.mean.ndim != 1:
            raise ValueError(f"FeatureStats: mean {self.mean.shape} and std {self.std.shape} must be equal 1-D shapes")

    def apply(self, x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Normalise ``x [..., F, T]`` bin by bin."""
        if isinstance(x, torch.Tensor):
            mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device)[:, None]
            std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device)[:, None]
            return (x - mean) / std
        return (x - self.mean[:, None]) / self.std[:, None]

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "n_frames": int(self.n_frames)}

    @classmethod
    def from_dict(cls, d: dict) -> FeatureStats:
        try:
            return cls(mean=np.asarray(d["mean"]), std=np.asarray(d["std"]), n_frames=int(d.get("n_frames", 0)))
        except KeyError as err:
            raise ValueError(f"feature statistics lack the field {err.args[0]!r}; recompute them") from err

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(self.to_dict(), f)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureStats:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: feature statistics not found; the run folder is incomplete")
        from rcmae.files import read_json

        try:
            return cls.from_dict(read_json(path))
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            if str(err).startswith(str(path)):
                raise
            raise ValueError(f"{path}: not valid feature statistics ({err}); re-run pretraining into a new --out") \
                from err


def compute_stats(logmels: Iterable[torch.Tensor | np.ndarray]) -> FeatureStats:
    """Mean/std per mel bin over every frame of every clip in ``logmels`` (batches ``[B, F, T]`` or ``[F, T]``).

    Accumulates sums in float64, so the result does not depend on how the clips are batched.
    """
    total = sq = None
    count = 0
    for x in logmels:
        x = torch.as_tensor(x).double()
        if x.ndim == 2:
            x = x[None]
        if total is None:
            total = torch.zeros(x.shape[1], dtype=torch.float64)
            sq = torch.zeros_like(total)
        total += x.sum(dim=(0, 2))
        sq += x.square().sum(dim=(0, 2))
        count += x.shape[0] * x.shape[2]
    if not count:
        raise ValueError("no training clips to compute feature statistics from; check the data folder's train split")
    mean = total / count
    var = torch.clamp(sq / count - mean.square(), min=0.0)
    return FeatureStats(mean=mean.numpy(), std=var.sqrt().numpy(), n_frames=count)
