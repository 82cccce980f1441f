"""Checks of user inputs that several commands share, each failing with one line that says what to fix.

- :func:`check_labelled_test`: AUC needs normal *and* anomalous test clips of the same machine ID
  (``evaluate``, ``baseline``, ``benchmark`` call it before they score or write anything).
- :func:`clip_length_report`: clips whose length differs from the configured one, said wherever they
  are used (training, ``score``, the pages); see docs/data.md for what happens to them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

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
