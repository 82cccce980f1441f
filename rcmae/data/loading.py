"""The batch loader: many clips at once, bad files skipped and reported, never fatal."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from rcmae.data.audio import AudioError, load_audio


@dataclass
class LoadReport:
    """What a batch load kept and skipped.

    Attributes:
        requested: number of paths asked for.
        skipped: ``(path, reason)`` per clip that could not be loaded.
    """

    requested: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def loaded(self) -> int:
        """Number of clips loaded."""
        return self.requested - len(self.skipped)

    def summary(self) -> str:
        """One header line, then one line per skipped file (``path: reason``)."""
        head = f"loaded {self.loaded} of {self.requested} clips"
        if not self.skipped:
            return head
        lines = [f"{head}; skipped {len(self.skipped)}:"]
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped]
        return "\n".join(lines)


def load_waveforms(
    paths: Sequence[str | os.PathLike],
    sample_rate: int = 16000,
    duration: float = 10.0,
    progress: bool = False,
    channel: int | str = 0,
) -> tuple[np.ndarray, list[str], LoadReport]:
    """Load many clips into one ``[n, N]`` float32 array; bad clips are skipped and reported, never fatal.

    Args:
        paths: clip paths (e.g. ``index["path"]``).
        sample_rate, duration, channel: as in ``rcmae.data.audio.load_audio``; ``duration`` is required here so
            that every row has the same length ``N = round(duration * sample_rate)``.
        progress: show a tqdm bar.

    Returns:
        ``(waves [n_kept, N], kept_paths, report)``; ``kept_paths[i]`` is the clip in row ``i``.
    """
    if duration is None:
        raise ValueError("load_waveforms needs a fixed duration (seconds) so that clips stack into one array")
    paths = [str(p) for p in paths]
    n_samples = int(round(duration * sample_rate))
    waves = np.empty((len(paths), n_samples), dtype=np.float32)
    kept: list[str] = []
    report = LoadReport(requested=len(paths))
    for path in tqdm(paths, desc="loading clips", unit="clip", disable=not progress):
        try:
            waves[len(kept)] = load_audio(path, sample_rate=sample_rate, duration=duration, channel=channel)
        except AudioError as err:
            report.skipped.append((path, f"{err.problem}; {err.fix}"))
            continue
        kept.append(path)
    if len(kept) < len(paths):
        waves = waves[: len(kept)].copy()  # release the rows reserved for skipped clips
    return waves, kept, report
