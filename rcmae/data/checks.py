"""Checks of user inputs that several commands share, each failing with one line that says what to fix.

- :func:`check_labelled_test`: AUC needs normal *and* anomalous test clips of the same machine ID
  (``evaluate``, ``baseline``, ``benchmark`` call it before they score or write anything).
- :func:`clip_length_report`: clips whose length differs from the configured one, said wherever they
  are used (training, ``score``, the pages); see docs/data.md for what happens to them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd


def check_labelled_test(test: pd.DataFrame, data: str | os.PathLike) -> None:
    """Raise ``ValueError`` unless some machine ID has both normal and anomalous test clips.

    Args:
        test: index rows (``machine_type``, ``machine_id``, ``label``; other splits are ignored when a
            ``split`` column is present).
        data: the data folder, named in the message.
    """
    if "split" in test.columns:
        test = test[test["split"] == "test"]
    labelled = test[test["label"].isin(["normal", "anomaly"])]
    n_normal = int((labelled["label"] == "normal").sum())
    n_anomaly = int((labelled["label"] == "anomaly").sum())
    if n_normal == 0 or n_anomaly == 0:
        missing = "normal" if n_normal == 0 else "anomalous"
        raise ValueError(
            f"{data}: the test set has no {missing} clips ({n_normal} normal, {n_anomaly} anomalous); AUC needs "
            f"both: add <type>/test/{'normal' if n_normal == 0 else 'anomaly'}_* clips or pass a full dev set"
        )
    both = labelled.groupby(["machine_type", "machine_id"])["label"].nunique()
    if not (both == 2).any():
        raise ValueError(
            f"{data}: no machine ID has both normal and anomalous test clips; AUC is computed per ID, so give each "
            "ID's test folder clips of both kinds"
        )


def clip_length_report(lengths: Sequence[tuple[str | os.PathLike, float]], expected: float,
                       tolerance: float = 0.05) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Split ``(path, seconds)`` into clips shorter and longer than ``expected`` seconds (beyond ``tolerance``)."""
    short = [(str(p), float(s)) for p, s in lengths if s < expected - tolerance]
    long = [(str(p), float(s)) for p, s in lengths if s > expected + tolerance]
    return short, long


def describe_lengths(short: Sequence[tuple[str, float]], long: Sequence[tuple[str, float]], expected: float,
                     what: str, action_short: str, action_long: str) -> list[str]:
    """One line per kind of odd clip: how many, an example, and what rcmae does with them."""
    lines = []
    if short:
        p, s = short[0]
        lines.append(f"{what}: {len(short)} clip(s) shorter than {expected:g} s (e.g. {Path(p).name}: {s:.2f} s); "
                     f"{action_short}")
    if long:
        p, s = long[0]
        lines.append(f"{what}: {len(long)} clip(s) longer than {expected:g} s (e.g. {Path(p).name}: {s:.2f} s); "
                     f"{action_long}")
    return lines


def clip_windows(wave: np.ndarray, n_samples: int, sample_rate: int) -> tuple[np.ndarray, str | None]:
    """The run-length windows ``[W, n_samples]`` that cover a whole clip, and a note when it is not run length.

    - Run length: one window, no note.
    - Longer: half-overlapping windows over the whole clip (the last one ends at the clip's end); the
      caller scores each and keeps the highest (an anomaly anywhere in the clip counts).
    - Shorter: the clip is repeated (looped) up to the run length, never padded with silence: silence
      would be a sound the model never heard, and a truncated clip would then score as whatever silence
      scores. The note says so.
    """
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    if wave.size == 0:
        raise ValueError("empty clip (0 samples)")
    seconds, run_s = wave.size / sample_rate, n_samples / sample_rate
    if wave.size == n_samples:
        return wave[None], None
    if wave.size < n_samples:
        reps = -(-n_samples // wave.size)
        note = f"{seconds:.2f} s clip, shorter than the run's {run_s:g} s: looped to {run_s:g} s to score it"
        return np.tile(wave, reps)[:n_samples][None], note
    from rcmae.data.datasets import window_starts

    starts = window_starts(wave.size, n_samples)
    windows = np.stack([wave[s:s + n_samples] for s in starts])
    note = (f"{seconds:.2f} s clip, longer than the run's {run_s:g} s: scored in {len(starts)} overlapping "
            f"{run_s:g} s windows (highest score kept)")
    return windows, note


def clip_lengths(paths: Sequence[str | os.PathLike]) -> list[tuple[str, float]]:
    """``(path, seconds)`` from each readable file's header (unreadable files are left to the loader's report)."""
    from rcmae.data.audio import AudioError, audio_info

    out = []
    for p in paths:
        try:
            out.append((str(p), audio_info(p)["duration"]))
        except AudioError:
            continue
    return out


def report_train_lengths(paths: Sequence[str | os.PathLike], duration: float, what: str = "train") -> list[str]:
    """Print (stderr) and return lines about training clips of another length than ``duration``."""
    short, long = clip_length_report(clip_lengths(paths), duration)
    lines = describe_lengths(short, long, duration, what,
                             f"zero-padded at the end to {duration:g} s for training",
                             f"only their first {duration:g} s are used for training (set data.duration to use more)")
    for line in lines:
        print(line, file=sys.stderr)
    return lines


def drop_train_anomalies(index: pd.DataFrame, data: str | os.PathLike) -> pd.DataFrame:
    """``index`` without labelled anomalies in ``train/`` (unsupervised training must never see them); warns."""
    bad = (index["split"] == "train") & (index["label"] == "anomaly")
    if bad.any():
        example = Path(str(index.loc[bad, "path"].iloc[0])).name
        print(f"{data}: skipping {int(bad.sum())} labelled anomalous clip(s) in train/ (e.g. {example}); training "
              "uses normal clips only: move them to test/", file=sys.stderr)
        index = index[~bad].reset_index(drop=True)
    return index
