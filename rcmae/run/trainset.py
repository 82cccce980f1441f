"""A run's training clips as log-mels: index, load, check lengths, fine-tuning classes, augment draws."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rcmae.data.checks import drop_train_anomalies, report_train_lengths
from rcmae.data.datasets import compute_logmels
from rcmae.data.features import FeatureStats, LogMel, compute_stats
from rcmae.data.index import DatasetLayoutError, class_kinds, finetune_classes, index_dataset, row_classes
from rcmae.data.loading import LoadReport, load_waveforms
from rcmae.run import config as rconfig
from rcmae.run.config import RunConfig


# ---------------------------------------------------------------------------------------------------- data
@dataclass
class TrainData:
    """Normalised training log-mels held in memory, with their clips and class labels."""

    x: torch.Tensor
    paths: list[str]
    machine_types: list[str]
    machine_ids: list[str]
    labels: torch.Tensor
    classes: list[tuple[str, str]]
    report: LoadReport
    # Per clip its attribute tail (DCASE 2022+; "" otherwise), and per class its (machine_type, machine_id) unit
    # (None: each class is its own unit, machine-ID classes).
    attributes: list[str] | None = None
    class_units: list[tuple[str, str]] | None = None


def logmel_for(cfg: RunConfig) -> LogMel:
    if cfg.features.sample_rate != cfg.data.sample_rate:
        raise rconfig.ConfigError(
            f"features.sample_rate ({cfg.features.sample_rate}) differs from data.sample_rate "
            f"({cfg.data.sample_rate}); set both to the same value"
        )
    return LogMel(cfg.features)


def load_train_data(
    data: str | os.PathLike, cfg: RunConfig, stats: FeatureStats | None = None, progress: bool = True
) -> tuple[TrainData, FeatureStats]:
    """Index ``data``, load its train clips (bad files skipped and reported), log-mels, statistics, normalise.

    Raises:
        FileNotFoundError: the folder does not exist.
        DatasetLayoutError: no training clips, or a machine ID whose clips all failed to load.
    """
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: data folder not found; pass --data a DCASE-layout folder")
    index = drop_train_anomalies(index_dataset(data), data)
    train = index[index["split"] == "train"].reset_index(drop=True)
    if train.empty:
        raise DatasetLayoutError(f"{data}: no training clips (<type>/train/*.wav); point --data at a dev/train set")
    report_train_lengths(list(train["path"]), cfg.data.duration)
    classes, class_units = finetune_classes(index, cfg.finetune.classes)
    logmels, kept, report = compute_logmels(
        list(train["path"]), logmel_for(cfg), cfg.data.sample_rate, cfg.data.duration, channel=cfg.data.channel,
        progress=progress, desc="train log-mels",
    )
    if report.skipped:
        print(report.summary(), file=sys.stderr)
    rows = train.set_index("path").loc[kept] if kept else train.iloc[:0]
    row_cls = row_classes(rows, class_kinds(index, cfg.finetune.classes))
    have = set(row_cls)
    for (mtype, name), unit in zip(classes, class_units, strict=True):
        if (mtype, name) not in have:
            what = "id" if unit == (mtype, name) else "class"
            raise DatasetLayoutError(
                f"{data}: no loadable training clips for {mtype} {what} {name} (all were skipped); fix or remove them"
            )
    if stats is None:
        stats = compute_stats([logmels])
    cls_index = {c: i for i, c in enumerate(classes)}
    types = [str(t) for t in rows["machine_type"]]
    ids = [str(i) for i in rows["machine_id"]]
    labels = torch.tensor([cls_index[c] for c in row_cls], dtype=torch.long)
    x = stats.apply(logmels).float().contiguous()
    attributes = [str(a) for a in rows["attributes"]]
    return TrainData(x, list(kept), types, ids, labels, classes, report, attributes, class_units), stats


def classes_note(train: TrainData) -> str:
    """``"41 machine IDs"``, or ``"20 section/attribute classes"`` when some class is not its own unit."""
    units = train.class_units or train.classes
    if [tuple(u) for u in units] == [tuple(c) for c in train.classes]:
        return f"{len(train.classes)} machine IDs"
    return f"{len(train.classes)} section/attribute classes"


# The per-epoch copy draw of a bank run (one JSON line per epoch) and the copies it indexes.
DRAWS_FILE = "augment_draws.jsonl"
COPIES_FILE = "augment_copies.json"


def read_augment_draws(run: str | os.PathLike) -> dict[int, np.ndarray]:
    """The recorded copy draw of a run: epoch -> copy index per training clip (``-1`` = SpecAugment twin).

    A line cut off by an interruption is ignored (that epoch is drawn again on resume).
    """
    path = Path(run) / DRAWS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no recorded augmentation draw; only runs pretrained on a bank "
                                "(--aug BANK) record one")
    draws: dict[int, np.ndarray] = {}
    for line in path.read_text().splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        draws[int(item["epoch"])] = np.asarray(item["copies"], dtype=np.int64)
    return draws


def load_train_waves(data: str | os.PathLike, cfg: RunConfig, progress: bool = True) -> TrainData:
    """The training clips of ``data`` as waveforms ``x [n, N]`` with their class labels (bad files skipped).

    The classes are RC-MAE fine-tuning's (``finetune.classes``, :func:`rcmae.data.finetune_classes`): machine IDs
    or sections, and section + attribute classes for a DCASE 2023+ type with a single section.
    """
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: data folder not found; pass --data a DCASE-layout folder")
    index = index_dataset(data)
    train = index[index["split"] == "train"].reset_index(drop=True)
    if train.empty:
        raise DatasetLayoutError(f"{data}: no training clips (<type>/train/*.wav); point --data at a dev/train set")
    # The same classes as RC-MAE fine-tuning (finetune.classes): machine IDs / sections, or section + attribute
    # classes where a type has a single section (DCASE 2023+).
    classes, class_units = finetune_classes(index, cfg.finetune.classes)
    waves, kept, report = load_waveforms(list(train["path"]), sample_rate=cfg.data.sample_rate,
                                         duration=cfg.data.duration, progress=progress, channel=cfg.data.channel)
    if report.skipped:
        print(report.summary(), file=sys.stderr)
    kept = [str(p) for p in kept]
    rows = train.set_index("path").loc[kept] if kept else train.iloc[:0]
    types = [str(t) for t in rows["machine_type"]]
    ids = [str(i) for i in rows["machine_id"]]
    row_cls = row_classes(rows, class_kinds(index, cfg.finetune.classes))
    have = set(row_cls)
    for (mtype, name), unit in zip(classes, class_units, strict=True):
        if (mtype, name) not in have:
            what = "id" if unit == (mtype, name) else "class"
            raise DatasetLayoutError(f"{data}: no loadable training clips for {mtype} {what} {name} (all were "
                                     "skipped); fix or remove them")
    cls_index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([cls_index[c] for c in row_cls], dtype=torch.long)
    x = torch.as_tensor(np.asarray(waves), dtype=torch.float32).contiguous()
    attributes = [str(a) for a in rows["attributes"]]
    return TrainData(x, kept, types, ids, labels, classes, report, attributes, class_units)
