"""Torch data for training: in-memory normalised log-mels, pairs (clip, augmented twin) and random time crops.

Log-mels of a whole training set fit in memory at the sizes rcmae targets (10 000 clips x 128 x 313
floats is 1.6 GB), so clips are transformed once and batches are gathered by index. Every random
draw (shuffling, twins, crops) takes an explicit generator seeded from (seed, epoch, batch), which
is what makes ``--resume`` reproduce an uninterrupted run exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from tqdm.auto import tqdm

from rcmae.augment.specaugment import SpecAugmentConfig, spec_augment
from rcmae.data import LoadReport, load_waveforms
from rcmae.features import LogMel


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


# A stream of its own for the per-epoch copy draw, apart from shuffling (7919) and the per-batch draws.
_COPY_DRAW_CODE = 4099


def draw_copies(seed: int, epoch: int, n_copies: Sequence[int]) -> np.ndarray:
    """Which augmented copy each clip pairs with in one epoch: ``k[i]`` uniform in ``0 .. n_copies[i] - 1``.

    The draw depends on ``(seed, epoch, n_copies)`` alone (not on the batch order, the rank or the
    device), so every DDP rank, a resumed run and a replay agree. Clips without copies get ``-1``.
    This is the paper's "randomly selected prompt" per sample: each copy of a clip was made with its own
    prompt, seed and S, and one is picked per clip per epoch.
    """
    n = np.asarray(n_copies, dtype=np.int64)
    rng = np.random.default_rng(derive_seed(seed, _COPY_DRAW_CODE, epoch))
    k = rng.integers(0, np.maximum(n, 1))
    return np.where(n > 0, k, -1).astype(np.int64)


@dataclass
class PairSource:
    """Makes the augmented twin of each clip in a batch.

    ``bank`` maps a clip index to log-mels ``[k, F, T]`` of its augmentations (from an augmentation
    bank); clips without a bank entry, or no bank at all, get SpecAugment of themselves. After
    :meth:`set_epoch` each clip pairs with one copy for the whole epoch (``draw_copies``, or the
    recorded draw of an earlier run in ``replay``); before it, each batch row draws a copy itself.
    """

    specaugment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    bank: dict[int, torch.Tensor] | None = None
    seed: int = 0
    replay: dict[int, np.ndarray] | None = None
    current: np.ndarray | None = None

    def copies(self, n_clips: int) -> list[int]:
        """Number of bank copies of clips ``0 .. n_clips - 1`` (0 = none)."""
        bank = self.bank or {}
        return [len(bank[i]) if i in bank else 0 for i in range(n_clips)]

    def set_epoch(self, epoch: int, n_clips: int) -> np.ndarray:
        """Fix the copy each clip pairs with in ``epoch``; returns it (``-1`` = no copy, SpecAugment)."""
        counts = self.copies(n_clips)
        if self.replay is not None:
            if epoch not in self.replay:
                raise KeyError(f"the replayed draw has no epoch {epoch} (it holds {len(self.replay)} epochs); "
                               "replay a run with at least as many epochs")
            draw = np.asarray(self.replay[epoch], dtype=np.int64)
            if len(draw) != n_clips or np.any(draw >= np.maximum(counts, 1)):
                raise ValueError(f"the replayed draw of epoch {epoch} does not fit this bank ({len(draw)} clips vs "
                                 f"{n_clips}); replay it with the same data and bank")
        else:
            draw = draw_copies(self.seed, epoch, counts)
        self.current = draw
        return draw

    def twins(self, x: torch.Tensor, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Twin log-mels for the batch ``x [B, F, T]`` of clips ``indices [B]``."""
        if not self.bank:
            return spec_augment(x, self.specaugment, generator)
        out = []
        for row, i in enumerate(indices.tolist()):
            augs = self.bank.get(int(i))
            if augs is None or len(augs) == 0:
                out.append(spec_augment(x[row : row + 1], self.specaugment, generator)[0])
            elif self.current is not None:
                out.append(augs[int(self.current[int(i)])].to(x.device))
            else:
                k = int(torch.randint(0, len(augs), (1,), generator=generator))
                out.append(augs[k].to(x.device))
        return torch.stack(out)


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
