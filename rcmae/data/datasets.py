"""Torch datasets and samplers over log-mels: seeded generators, crops, windows, epoch sampling."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from tqdm.auto import tqdm

from rcmae.data.features import LogMel
from rcmae.data.loading import LoadReport, load_waveforms


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, epoch, batch, rank, ...) via NumPy's SeedSequence."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1, np.uint64)
    return int(state[0]) & ((1 << 63) - 1)


def make_generator(*parts: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator seeded from ``parts`` (see :func:`derive_seed`)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(*parts))
    return gen


def fit_frames(x: torch.Tensor, n_frames: int) -> torch.Tensor:
    """Pad with zeros (the normalised mean) or cut ``x [..., F, T]`` to ``n_frames`` frames."""
    t = x.shape[-1]
    if t == n_frames:
        return x
    if t > n_frames:
        return x[..., :n_frames]
    return torch.nn.functional.pad(x, (0, n_frames - t))


def window_starts(n_frames: int, crop_frames: int) -> list[int]:
    """Start frames of half-overlapping windows that cover a clip (the last one ends at the clip end)."""
    if crop_frames >= n_frames:
        return [0]
    hop = max(1, crop_frames // 2)
    starts = list(range(0, n_frames - crop_frames + 1, hop))
    if starts[-1] != n_frames - crop_frames:
        starts.append(n_frames - crop_frames)
    return starts


def random_crops(
    xs: Sequence[torch.Tensor], crop_frames: int | None, generator: torch.Generator
) -> list[torch.Tensor]:
    """Cut the same random time window (per row) out of every tensor in ``xs`` (each ``[B, F, T]``).

    Clip and twin share the window so that the InfoNCE positive shows the same moment.
    """
    if crop_frames is None or crop_frames >= xs[0].shape[-1]:
        return list(xs)
    b, t = xs[0].shape[0], xs[0].shape[-1]
    starts = torch.randint(0, t - crop_frames + 1, (b,), generator=generator)
    cols = starts[:, None] + torch.arange(crop_frames)[None]
    return [x.gather(-1, cols[:, None, :].expand(b, x.shape[1], crop_frames).to(x.device)) for x in xs]


class EpochSampler(Sampler[int]):
    """Shuffles ``range(n)`` with a permutation seeded from (seed, epoch); Lightning calls ``set_epoch``."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        perm = torch.randperm(self.n, generator=make_generator(self.seed, self.epoch, 7919))
        return iter(perm.tolist())

    def __len__(self) -> int:
        return self.n


class ClipDataset(Dataset):
    """Normalised log-mels ``[n, F, T]`` with integer class labels; an item is ``(index, label)``.

    With ``repeats > 1`` every clip appears that many times per epoch (one random crop each);
    the batch is gathered from ``logmels`` in the training step so that draws stay per batch.
    """

    def __init__(self, logmels: torch.Tensor, labels: torch.Tensor | None = None, repeats: int = 1) -> None:
        self.logmels = logmels
        self.labels = labels if labels is not None else torch.zeros(len(logmels), dtype=torch.long)
        self.repeats = max(1, int(repeats))

    def __len__(self) -> int:
        return len(self.logmels) * self.repeats

    def __getitem__(self, i: int) -> tuple[int, int]:
        j = i % len(self.logmels)
        return j, int(self.labels[j])


def compute_logmels(
    paths: Sequence[str],
    logmel: LogMel,
    sample_rate: int,
    duration: float,
    channel: int | str = 0,
    batch_size: int = 32,
    progress: bool = True,
    desc: str = "log-mel",
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[str], LoadReport]:
    """Load clips (bad files skipped and reported) and return raw dB log-mels ``[n, F, T]``, kept paths, report.

    Clips are loaded and transformed in chunks so that memory holds log-mels, not waveforms.
    """
    chunks: list[torch.Tensor] = []
    kept: list[str] = []
    skipped: list[tuple[str, str]] = []
    chunk = max(batch_size, 64)
    bar = tqdm(total=len(paths), desc=desc, disable=not progress, unit="clip")
    for start in range(0, len(paths), chunk):
        part = [str(p) for p in paths[start : start + chunk]]
        waves, kept_part, report = load_waveforms(
            part, sample_rate=sample_rate, duration=duration, progress=False, channel=channel
        )
        skipped.extend(report.skipped)
        kept.extend(str(p) for p in kept_part)
        with torch.no_grad():
            for b in range(0, len(waves), batch_size):
                x = logmel(torch.as_tensor(np.asarray(waves[b : b + batch_size]), dtype=torch.float32))
                chunks.append(transform(x) if transform is not None else x)
        bar.update(len(part))
    bar.close()
    report = LoadReport(requested=len(paths), skipped=skipped)
    if not chunks:
        return torch.empty(0), kept, report
    return torch.cat(chunks), kept, report
