"""Pretraining pairs: each clip with its augmented twin (a bank copy drawn per epoch, or SpecAugment)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rcmae.augment.specaugment import SpecAugmentConfig, spec_augment
from rcmae.data.datasets import compute_logmels, derive_seed
from rcmae.data.features import FeatureStats
from rcmae.data.index import DatasetLayoutError
from rcmae.run.config import RunConfig
from rcmae.run.trainset import TrainData, logmel_for

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


def load_bank_twins(
    bank_dir: str | os.PathLike, train: TrainData, cfg: RunConfig, stats: FeatureStats, progress: bool = True,
    outputs: dict[int, list[str]] | None = None,
) -> dict[int, torch.Tensor]:
    """Normalised log-mels of each training clip's bank augmentations: clip index -> ``[k, F, T]``.

    Copies come in the bank's order (``__aug0``, ``__aug1``, ...); ``outputs``, when given, is filled with
    the wav path of each loaded copy (clip index -> paths, in the same order as the tensor rows).
    """
    from rcmae.augment.bank import BankPairs

    bank_dir = Path(bank_dir)
    if not bank_dir.is_dir():
        raise FileNotFoundError(f"{bank_dir}: augmentation bank not found; pass --aug specaugment or a bank folder")
    pairs = BankPairs(bank_dir)
    wanted: list[tuple[int, str]] = []
    for i, path in enumerate(train.paths):
        for aug in pairs.get(path):
            wanted.append((i, str(aug)))
    if not wanted:
        raise DatasetLayoutError(
            f"{bank_dir}: no augmentations for any training clip of this data set; build the bank with "
            "`rcmae augment --data <this data>`"
        )
    logmels, kept, report = compute_logmels(
        [p for _, p in wanted], logmel_for(cfg), cfg.data.sample_rate, cfg.data.duration,
        channel=cfg.data.channel, progress=progress, desc="bank log-mels",
    )
    if report.skipped:
        print(report.summary(), file=sys.stderr)
    owner = {p: i for i, p in wanted}
    x = stats.apply(logmels).float()
    twins: dict[int, list[torch.Tensor]] = {}
    for row, p in enumerate(kept):
        twins.setdefault(owner[p], []).append(x[row])
        if outputs is not None:
            outputs.setdefault(owner[p], []).append(p)
    return {i: torch.stack(v) for i, v in twins.items()}
