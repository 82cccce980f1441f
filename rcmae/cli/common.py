"""Helpers every command group shares: argument parsers and the error type."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


class UsageError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def parse_pair(text: str, kind=float) -> tuple:
    """Parse ``MIN:MAX`` (or a single value) into a (min, max) tuple."""
    parts = text.split(":")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX, got {text!r}")
    try:
        lo, hi = kind(parts[0]), kind(parts[1])
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX numbers, got {text!r}") from err
    if lo > hi:
        raise argparse.ArgumentTypeError(f"MIN must not exceed MAX in {text!r}")
    return lo, hi


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``I/N`` (0-based shard I of N)."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected I/N (e.g. 0/4), got {text!r}") from err
    if n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"shard {text!r}: need 0 <= I < N")
    return i, n


def add_trainer_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", default="auto", help="GPUs to use: a count, a list like 0,1, or 'auto' (default)")
    p.add_argument("--num-nodes", type=int, default=1, help="number of nodes for multi-node DDP (default 1)")
    p.add_argument("--precision", default=None, help="e.g. bf16-mixed (GPU default), 32-true (CPU default)")
    p.add_argument("--accelerator", default="auto", help="auto (default), cpu or gpu")


# ---------------------------------------------------------------- pretrain / finetune
def fit_scorers_after_training(run: Path) -> None:
    """Fit the default scorer of a freshly trained run (first process only under DDP), so it can score at once.

    Training never imports scoring (the run folder is the contract): the orchestration calls it here. The other
    scorers are fitted on first use (``rcmae evaluate`` fits them all), each only when its inputs changed.
    """
    if any(int(os.environ.get(var, 0)) != 0 for var in ("RANK", "LOCAL_RANK", "NODE_RANK")):
        return
    from rcmae.scorers.detector import Detector

    Detector.load(run)  # fits the default scorer (and an ensemble's members) where not current
