"""Pretraining and fine-tuning of RC-MAE with PyTorch Lightning, and the run folder they fill.

``pretrain`` learns the encoder self-supervised (MAE + InfoNCE + VCR on pairs of a clip and its
augmented twin); ``finetune`` adds SupCon + cross-entropy over (machine_type, machine_id) classes.
Both write into one run folder (see docs/training.md): the resolved config, run.json, feature
statistics, checkpoints, metrics.csv and progress.json, then thresholds and train embeddings.

Every random draw (shuffling, mask ratio, masks, SpecAugment, bank twin choice, crops) comes from
a generator seeded from (seed, stage, epoch, batch, rank), and the optimizer and schedule state
travel in the checkpoint, so ``resume=True`` reproduces an uninterrupted run on CPU.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

import rcmae
from rcmae import config as rconfig
from rcmae.checkpoint import load_checkpoint
from rcmae.config import RunConfig
from rcmae.data import DatasetLayoutError, LoadReport, class_kinds, finetune_classes, index_dataset, row_classes
from rcmae.datasets import ClipDataset, EpochSampler, PairSource, compute_logmels, make_generator, random_crops
from rcmae.features import FeatureStats, LogMel, compute_stats
from rcmae.files import atomic_write_text, read_json, write_json
from rcmae.inputs import drop_train_anomalies, report_train_lengths
from rcmae.losses import finetune_loss, pretrain_loss
from rcmae.model import RCMAE, ModelConfig, count_parameters

STAGES = ("pretrain", "finetune")
# A distinct stream per stage so fine-tuning draws never repeat pretraining's.
_STAGE_CODE = {"pretrain": 11, "finetune": 23}
METRIC_COLUMNS = [
    "stage", "kind", "epoch", "step", "loss", "mae", "info_nce", "vcr", "variance", "covariance", "supcon", "ce",
    "lr",
]


class TrainingDiverged(ValueError):
    """A non-finite loss: training stopped; the last good checkpoint is kept."""


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked (missing, already trained, other preset)."""


# ------------------------------------------------------------------------------------------------ run folder
def run_paths(run: str | os.PathLike) -> dict[str, Path]:
    """The files of a run folder by role."""
    run = Path(run)
    return {
        "config": run / "config.yaml",
        "run_json": run / "run.json",
        "stats": run / "stats.json",
        "checkpoints": run / "checkpoints",
        "metrics": run / "metrics.csv",
        "progress": run / "progress.json",
        "thresholds": run / "thresholds.json",
        "embeddings": run / "embeddings",
        "eval": run / "eval",
    }


def checkpoint_path(run: str | os.PathLike, stage: str, which: str = "last") -> Path:
    """``run/checkpoints/<stage>-<which>.ckpt``."""
    return Path(run) / "checkpoints" / f"{stage}-{which}.ckpt"


def read_run_json(run: str | os.PathLike) -> dict:
    """``run.json`` of a run folder (one clear line when the folder is not a run)."""
    path = Path(run) / "run.json"
    if not path.is_file():
        raise RunFolderError(f"{run}: not an rcmae run folder (no run.json); pretrain one with `rcmae pretrain`")
    return read_json(path)


def update_run_json(run: str | os.PathLike, **fields: object) -> dict:
    """Merge ``fields`` into ``run.json`` (atomic rewrite)."""
    path = Path(run) / "run.json"
    info = read_json(path) if path.is_file() else {}
    info.update(fields)
    write_json(path, info)
    return info


def _git_commit() -> str | None:
    """The commit of the rcmae source tree, when it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(Path(rcmae.__file__).resolve().parent), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "rcmae": rcmae.__version__,
        "numpy": np.__version__,
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_progress(run: str | os.PathLike, **fields: object) -> None:
    """Atomically write ``progress.json`` (``stage, epoch, epochs, step, steps, loss, state, updated``)."""
    record = {"stage": None, "epoch": 0, "epochs": 0, "step": 0, "steps": 0, "loss": None, "state": "running"}
    record.update(fields)
    loss = record.get("loss")
    if loss is not None and not math.isfinite(float(loss)):
        record["loss"] = None
    record["updated"] = _now()
    write_json(Path(run) / "progress.json", record)


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


def _logmel_fn(cfg: RunConfig) -> LogMel:
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
        list(train["path"]), _logmel_fn(cfg), cfg.data.sample_rate, cfg.data.duration, channel=cfg.data.channel,
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


def _classes_note(train: TrainData) -> str:
    """``"41 machine IDs"``, or ``"20 section/attribute classes"`` when some class is not its own unit."""
    units = train.class_units or train.classes
    if [tuple(u) for u in units] == [tuple(c) for c in train.classes]:
        return f"{len(train.classes)} machine IDs"
    return f"{len(train.classes)} section/attribute classes"


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
        [p for _, p in wanted], _logmel_fn(cfg), cfg.data.sample_rate, cfg.data.duration,
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


# ------------------------------------------------------------------------------------------ lightning modules
def _lr_lambda(warmup_steps: int, total_steps: int, schedule: str):
    """Linear warm-up, then cosine decay to zero (or constant)."""

    def f(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


class _StageModule(L.LightningModule):
    """Shared plumbing: in-memory data, seeded per-batch generators, optimizer + schedule, checks."""

    stage = "pretrain"

    def __init__(self, model: RCMAE, cfg: RunConfig, x: torch.Tensor, labels: torch.Tensor,
                 steps_per_epoch: int) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.stage_cfg = getattr(cfg, self.stage)
        # Plain attributes, not buffers: the data stays on CPU and out of checkpoints.
        self._x = x
        self._labels = labels
        self.steps_per_epoch = steps_per_epoch

    def _generator(self, batch_idx: int, device: torch.device | str = "cpu") -> torch.Generator:
        return make_generator(self.cfg.seed, _STAGE_CODE[self.stage], self.current_epoch, batch_idx,
                              self.global_rank, device=device)

    def on_train_epoch_start(self) -> None:
        # Anything that still uses the global RNG gets a state that depends only on (seed, epoch, rank).
        torch.manual_seed(make_generator(self.cfg.seed, _STAGE_CODE[self.stage], self.current_epoch,
                                         self.global_rank, 1).initial_seed())

    def configure_optimizers(self):
        s = self.stage_cfg
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt_cls = torch.optim.AdamW if s.optimizer == "adamw" else torch.optim.Adam
        opt = opt_cls(params, lr=s.lr, weight_decay=s.weight_decay)
        total = max(1, s.epochs * self.steps_per_epoch)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, _lr_lambda(s.warmup_epochs * self.steps_per_epoch, total, s.schedule)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _check_finite(self, parts: dict[str, torch.Tensor]) -> None:
        if not torch.isfinite(parts["loss"]).all():
            detail = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in parts.items())
            raise TrainingDiverged(
                f"{self.stage}: non-finite loss at epoch {self.current_epoch + 1}, step {self.global_step + 1} "
                f"({detail}); lower {self.stage}.lr (e.g. --set {self.stage}.lr=...) and rerun with --resume "
                "from the last good checkpoint"
            )

    def _log_parts(self, parts: dict[str, torch.Tensor], batch_size: int) -> None:
        self._last_parts = {k: float(v.detach()) for k, v in parts.items()}
        self.log("loss", parts["loss"], on_step=True, on_epoch=True, prog_bar=True, batch_size=batch_size)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rcmae"] = {
            "stage": self.stage,
            "config": rconfig.config_to_dict(self.cfg),
            "model_config": dataclasses.asdict(self.model.config),
            "version": rcmae.__version__,
        }


class PretrainModule(_StageModule):
    """RC-MAE pretraining: ``w_nce * InfoNCE + w_vcr * VCR + w_mae * masked MSE`` on (clip, twin) pairs."""

    stage = "pretrain"

    def __init__(self, model: RCMAE, cfg: RunConfig, x: torch.Tensor, labels: torch.Tensor,
                 steps_per_epoch: int, pairs: PairSource, record: Path | None = None) -> None:
        super().__init__(model, cfg, x, labels, steps_per_epoch)
        self.pairs = pairs
        # Where rank 0 appends each epoch's copy draw (None: not recorded).
        self.record = record

    def on_train_start(self) -> None:
        if self.record is not None and self.global_rank == 0 and self.record.is_file():
            # Resuming: epochs from here on are drawn again, so their old lines go.
            kept = [ln for ln in self.record.read_text().splitlines()
                    if ln.strip().endswith("}") and json.loads(ln)["epoch"] < self.current_epoch]
            atomic_write_text(self.record, "".join(f"{ln}\n" for ln in kept))

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if not self.pairs.bank:
            return
        draw = self.pairs.set_epoch(self.current_epoch, len(self._x))
        if self.record is not None and self.global_rank == 0:
            with open(self.record, "a") as fh:
                fh.write(json.dumps({"epoch": self.current_epoch, "copies": draw.tolist()}) + "\n")

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        idx, _ = batch
        gen = self._generator(batch_idx)
        idx = idx.cpu()
        x = self._x[idx]
        twin = self.pairs.twins(x, idx, gen)
        x, twin = random_crops([x, twin], self.cfg.pretrain.crop_frames, gen)
        x, twin = x.to(self.device), twin.to(self.device)
        mask_ratio = self.model.sample_mask_ratio(gen)
        # Masks are drawn on the compute device; the stream is still fixed by (seed, epoch, batch).
        gen_dev = self._generator(batch_idx, device=self.device) if self.device.type != "cpu" else gen
        latent, mask, ids_restore = self.model.forward_encoder(x, mask_ratio, gen_dev)
        pred = self.model.forward_decoder(latent, ids_restore)
        latent_aug, _, _ = self.model.forward_encoder(twin, mask_ratio, gen_dev)
        z = self.model.project(latent, x)
        z_aug = self.model.project(latent_aug, twin)
        p = self.cfg.pretrain
        parts = pretrain_loss(
            z.float(), z_aug.float(), pred.float(), self.model.target(x).float(), mask,
            w_nce=p.w_nce, w_vcr=p.w_vcr, w_mae=p.w_mae, tau=p.tau, norm_pix=self.model.config.norm_pix_loss,
        )
        self._check_finite(parts)
        self._log_parts(parts, len(idx))
        return parts["loss"]


class FinetuneModule(_StageModule):
    """Fine-tuning: ``w_supcon * SupCon(z) + w_ce * cross-entropy(classify(z))`` over machine-ID classes."""

    stage = "finetune"

    def __init__(self, model: RCMAE, cfg: RunConfig, x: torch.Tensor, labels: torch.Tensor,
                 steps_per_epoch: int, stats: FeatureStats | None = None) -> None:
        super().__init__(model, cfg, x, labels, steps_per_epoch)
        # Augmented pseudo-classes: (machine ID, transform) classes over the un-normalised log-mels.
        self.pseudo = None
        if cfg.finetune.pseudo_classes:
            from rcmae.augment.pseudo import PseudoClassAugment

            if stats is None:
                raise ValueError("FinetuneModule: finetune.pseudo_classes needs the run's feature statistics")
            self.pseudo = PseudoClassAugment(cfg.finetune.pseudo_classes, cfg.features.n_mels, cfg.features.fmin,
                                             cfg.features.fmax)
            self._mean = torch.as_tensor(stats.mean, dtype=torch.float32)[:, None]
            self._std = torch.as_tensor(stats.std, dtype=torch.float32)[:, None]
        if cfg.finetune.freeze_encoder:
            # Only the projection and the classifier learn.
            for name, p in self.model.named_parameters():
                p.requires_grad = name.startswith(("proj", "head"))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        idx, labels = batch
        gen = self._generator(batch_idx)
        f = self.cfg.finetune
        if f.balanced:
            idx = balanced_indices(self._labels, len(idx), gen)
            labels = self._labels[idx]
        x = self._x[idx.cpu()]
        if f.augment:
            from rcmae.augment.specaugment import spec_augment

            x = spec_augment(x, self.cfg.pretrain.specaugment, gen)
        if self.pseudo is not None:
            from rcmae.augment.pseudo import pseudo_labels

            k = self.pseudo.draw(len(idx), gen)
            raw = self.pseudo(x * self._std + self._mean, k, self.cfg.pretrain.crop_frames, gen)
            x = (raw - self._mean) / self._std
            labels = pseudo_labels(labels.cpu(), k, self.pseudo.n_transforms)
        else:
            (x,) = random_crops([x], self.cfg.pretrain.crop_frames, gen)
        labels = labels.to(self.device)
        lam, perm = 1.0, torch.arange(len(idx))
        if f.mixup_alpha > 0:
            import scipy.special

            from rcmae.losses import mixup

            u = float(torch.rand(1, generator=gen))
            lam = float(scipy.special.betaincinv(f.mixup_alpha, f.mixup_alpha, u))
            lam = max(lam, 1.0 - lam)  # the first label dominates (SupCon uses it)
            perm = torch.randperm(len(idx), generator=gen)
            x = mixup(x, lam, perm)
        perm = perm.to(self.device)
        x = x.to(self.device)
        z = self.model.embed(x)
        if f.head == "arcface":
            from rcmae.losses import arcface_logits, cosine_logits

            cos = cosine_logits(z.float(), self.model.head.weight.float())
            logits = arcface_logits(cos, labels, f.scale, f.margin)
            logits_b = arcface_logits(cos, labels[perm], f.scale, f.margin) if lam < 1.0 else logits
        else:
            logits = logits_b = self.model.classify(z).float()
        parts = finetune_loss(z.float(), logits, labels, w_scl=f.w_supcon, w_ce=f.w_ce, tau=f.tau,
                              label_smoothing=f.label_smoothing)
        if lam < 1.0:
            from rcmae.losses import mixup_cross_entropy

            ce = mixup_cross_entropy(logits, logits_b, labels, labels[perm], lam, f.label_smoothing)
            parts = {"loss": parts["loss"] + f.w_ce * (ce - parts["ce"]), "supcon": parts["supcon"], "ce": ce}
        self._check_finite(parts)
        self._log_parts(parts, len(idx))
        return parts["loss"]


def balanced_indices(labels: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` clip indices, class-balanced: a class uniformly, then one of its clips uniformly (with replacement)."""
    classes = torch.unique(labels)
    pick = classes[torch.randint(0, len(classes), (n,), generator=generator)]
    out = torch.empty(n, dtype=torch.long)
    for c in classes:
        members = torch.nonzero(labels == c).flatten()
        slots = torch.nonzero(pick == c).flatten()
        out[slots] = members[torch.randint(0, len(members), (len(slots),), generator=generator)]
    return out


# ------------------------------------------------------------------------------------------------ callbacks
class RunRecorder(Callback):
    """Writes ``progress.json`` every few steps and ``metrics.csv`` (per step and per epoch) atomically."""

    def __init__(self, run: Path, stage: str, epochs: int, steps_per_epoch: int, every_s: float = 2.0) -> None:
        self.run, self.stage, self.epochs, self.steps_per_epoch = run, stage, epochs, steps_per_epoch
        self.every_s = every_s
        self._last_write = 0.0
        self._rows: list[dict] = []
        self._loss: float | None = None
        self._lr: float | None = None
        self._loaded = False

    def _keep_rows(self, start_epoch: int) -> None:
        path = self.run / "metrics.csv"
        old = pd.read_csv(path) if path.is_file() and path.stat().st_size else pd.DataFrame(columns=METRIC_COLUMNS)
        # Rows past the checkpoint we resume from were never part of the surviving run.
        drop = (old["stage"] == self.stage) & (old["epoch"] >= start_epoch)
        self._rows = old[~drop].to_dict("records")
        self._loaded = True

    def _flush(self) -> None:
        frame = pd.DataFrame(self._rows, columns=METRIC_COLUMNS)
        atomic_write_text(self.run / "metrics.csv", frame.to_csv(index=False))

    def _progress(self, trainer: L.Trainer, state: str) -> None:
        write_progress(
            self.run, stage=self.stage, epoch=min(trainer.current_epoch + 1, self.epochs), epochs=self.epochs,
            step=trainer.global_step, steps=self.epochs * self.steps_per_epoch, loss=self._loss, state=state,
        )
        self._last_write = time.monotonic()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self._keep_rows(trainer.current_epoch)
            self._progress(trainer, "running")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # The rate this step uses (the scheduler moves it on after the optimizer step).
        self._lr = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not trainer.is_global_zero:
            return
        parts = getattr(pl_module, "_last_parts", {})
        self._loss = parts.get("loss")
        self._rows.append({"stage": self.stage, "kind": "step", "epoch": trainer.current_epoch,
                           "step": trainer.global_step, "lr": self._lr, **parts})
        if time.monotonic() - self._last_write > self.every_s:
            self._progress(trainer, "running")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        steps = [r for r in self._rows if r["kind"] == "step" and r["stage"] == self.stage
                 and r["epoch"] == trainer.current_epoch]
        mean = {k: float(np.mean([r[k] for r in steps if k in r])) for k in METRIC_COLUMNS[4:-1]
                if any(k in r for r in steps)}
        self._rows.append({"stage": self.stage, "kind": "epoch", "epoch": trainer.current_epoch,
                           "step": trainer.global_step, **mean})
        self._flush()
        self._progress(trainer, "running")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if trainer.is_global_zero:
            if self._loaded:  # before on_train_start there is nothing of ours to add to metrics.csv
                self._flush()
            self._progress(trainer, "failed")


# --------------------------------------------------------------------------------------------------- trainer
def _device_count(devices: str | int | Sequence[int], gpu: bool) -> int:
    if isinstance(devices, int):
        return devices
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        return len(devices)
    text = str(devices).strip()
    if text == "auto":
        return max(1, torch.cuda.device_count()) if gpu else 1
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    try:
        n = int(text)
    except ValueError as err:
        raise ValueError(f"--devices {devices!r}: expected a count, a list like 0,1, or auto") from err
    return torch.cuda.device_count() if n == -1 else n


def trainer_options(devices: str | int | Sequence[int] = "auto", num_nodes: int = 1, precision: str | None = None,
                    accelerator: str = "auto") -> dict:
    """Lightning Trainer flags: CPU without a GPU, bf16-mixed by default on GPU, DDP for several devices."""
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError("--accelerator gpu: no CUDA GPU is visible; use --accelerator cpu (or auto)")
    if precision is None:
        precision = "bf16-mixed" if gpu else "32-true"
    if isinstance(devices, str) and "," in devices:
        devices = [int(d) for d in devices.split(",") if d.strip()]
    elif isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    n = _device_count(devices, gpu) * max(1, num_nodes)
    return {
        "accelerator": "gpu" if gpu else "cpu",
        "devices": devices if gpu or devices != "auto" else 1,
        "num_nodes": num_nodes,
        "precision": precision,
        "strategy": "ddp" if n > 1 else "auto",
    }


def _fit(module: _StageModule, dataset: ClipDataset, run: Path, stage: str, epochs: int, batch_size: int,
         resume_from: Path | None, trainer_kw: dict, progress: bool, callbacks: Sequence[Callback],
         grad_clip: float | None, num_workers: int = 0) -> L.Trainer:
    ckpt_dir = run / "checkpoints"
    bs = min(batch_size, len(dataset))
    # Contrastive losses need a full batch: a ragged last batch of 1 has no negatives.
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=bs, sampler=EpochSampler(len(dataset), module.cfg.seed),
        drop_last=len(dataset) > bs, num_workers=num_workers,
    )
    last = ModelCheckpoint(dirpath=ckpt_dir, filename=f"{stage}-last", save_top_k=1, monitor=None,
                           enable_version_counter=False, save_on_train_epoch_end=True)
    best = ModelCheckpoint(dirpath=ckpt_dir, filename=f"{stage}-best", save_top_k=1, monitor="loss_epoch",
                           mode="min", enable_version_counter=False, save_on_train_epoch_end=True)
    recorder = RunRecorder(run, stage, epochs, module.steps_per_epoch)
    trainer = L.Trainer(
        max_epochs=epochs, logger=False, callbacks=[recorder, *callbacks, last, best],
        enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
        log_every_n_steps=1, gradient_clip_val=grad_clip, default_root_dir=str(run), **trainer_kw,
    )
    with warnings.catch_warnings():
        # Both stages share checkpoints/: a non-empty folder is expected, not a problem.
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        trainer.fit(module, train_dataloaders=loader, ckpt_path=str(resume_from) if resume_from else None,
                    weights_only=True)
    if trainer.is_global_zero:
        write_progress(run, stage=stage, epoch=epochs, epochs=epochs, step=trainer.global_step,
                       steps=epochs * module.steps_per_epoch, loss=getattr(module, "_last_parts", {}).get("loss"),
                       state="done")
    return trainer


def _steps_per_epoch(n: int, batch_size: int) -> int:
    bs = min(batch_size, n)
    return n // bs if n > bs else 1


def _check_resume_checkpoint(ckpt: Path, model_cfg: ModelConfig) -> None:
    state = load_checkpoint(ckpt)
    saved = (state.get("rcmae") or {}).get("model_config")
    if not isinstance(saved, dict):
        raise RunFolderError(f"{ckpt}: not an rcmae checkpoint; start a new run with a fresh --out")
    now = dataclasses.asdict(model_cfg)
    diff = [k for k in now if k != "n_classes" and saved.get(k) != now[k]]
    if diff:
        detail = ", ".join(f"model.{k}: checkpoint {saved.get(k)!r} vs now {now[k]!r}" for k in diff[:4])
        raise RunFolderError(
            f"{ckpt}: checkpoint comes from another preset ({detail}); resume with the run's own config "
            f"(--preset {ckpt.parent.parent / 'config.yaml'}) or start a new --out"
        )


def _model_from_checkpoint(ckpt: Path) -> tuple[RCMAE, dict]:
    state = load_checkpoint(ckpt)
    meta = state.get("rcmae")
    if not isinstance(meta, dict) or not isinstance(meta.get("model_config"), dict) \
            or not isinstance(state.get("state_dict"), dict):
        raise RunFolderError(f"{ckpt}: not an rcmae checkpoint (no rcmae.model_config/state_dict); re-run the stage")
    try:
        if meta.get("family") == "margin":
            from rcmae.margin_train import model_from_state

            return model_from_state(meta, state["state_dict"]), meta
        model = RCMAE(ModelConfig(**meta["model_config"]))
        weights = {k[len("model."):]: v for k, v in state["state_dict"].items() if k.startswith("model.")}
        model.load_state_dict(weights)
    except (TypeError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RunFolderError(f"{ckpt}: weights do not fit the model in the checkpoint ({first[:160]}); "
                             "re-run the stage") from err
    return model, meta


def _launcher_rank_zero() -> bool:
    """True in the first process; DDP's re-launched ranks (LOCAL_RANK/NODE_RANK > 0) leave the folder alone."""
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def _print_config(cfg: RunConfig, header: str) -> None:
    print(f"# {header}\n{rconfig.dump_config(cfg)}", flush=True)


def _check_crop(cfg: RunConfig) -> None:
    crop = cfg.pretrain.crop_frames
    if crop is not None and not 1 <= crop <= cfg.model.n_frames:
        raise rconfig.ConfigError(
            f"pretrain.crop_frames={crop} must be between 1 and model.n_frames={cfg.model.n_frames}; "
            "set model.n_frames to the crop length (a multiple of model.patch_t)"
        )


def pretrain(
    data: str | os.PathLike,
    out: str | os.PathLike,
    preset: str | os.PathLike = "tiny",
    aug: str = "specaugment",
    epochs: int | None = None,
    overrides: Sequence[str] = (),
    resume: bool = False,
    devices: str | int | Sequence[int] = "auto",
    num_nodes: int = 1,
    precision: str | None = None,
    accelerator: str = "auto",
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    fit_scores: bool = True,  # noqa: ARG001 - kept for old callers; training never scores
    replay: str | os.PathLike | None = None,
) -> Path:
    """Self-supervised RC-MAE pretraining into the run folder ``out``.

    Args:
        data: Data folder; its train clips are used.
        out: Run folder to create, or to continue with ``resume=True``.
        preset: ``tiny``, ``paper``, ``audiomae`` or a YAML file.
        aug: ``"specaugment"`` (twins by time/frequency masking) or an augmentation bank folder.
        epochs: Overrides ``pretrain.epochs``.
        overrides: ``key=value`` config overrides.
        resume: Continue from ``checkpoints/pretrain-last.ckpt``.
        devices, num_nodes, precision, accelerator: Lightning Trainer flags.
        progress: Show progress bars.
        callbacks: Extra Lightning callbacks (job control, tests).
        fit_scores: Ignored, kept for old callers: training never scores. Thresholds and train embeddings are
            fitted by ``rcmae.score.fit_run`` (``rcmae pretrain`` calls it) or on the first ``Detector.load``.
        replay: A run folder whose recorded per-epoch copy draw (``augment_draws.jsonl``) this run uses
            instead of drawing its own (same data and bank).

    With a bank, each epoch pairs every clip with one of its copies (``rcmae.datasets.draw_copies``) and
    records the draw in ``augment_draws.jsonl`` (what the indices point at: ``augment_copies.json``).

    Returns:
        The run folder.
    """
    out = Path(out)
    overrides = list(overrides) + ([f"pretrain.epochs={epochs}"] if epochs is not None else [])
    cfg = rconfig.load_config(preset, overrides)
    _check_crop(cfg)
    last = checkpoint_path(out, "pretrain", "last")
    if resume:
        if not last.is_file():
            raise RunFolderError(f"{out}: nothing to resume (no {last.name}); run without --resume to start it")
        if cfg.family == "margin":
            from rcmae.margin_train import check_resume

            check_resume(last, cfg)
        else:
            _check_resume_checkpoint(last, cfg.model)
    elif (out / "checkpoints").is_dir() and any((out / "checkpoints").glob("*.ckpt")):
        raise RunFolderError(f"{out}: already holds a trained run; pass --resume to continue or choose a new --out")
    trainer_kw = trainer_options(devices, num_nodes, precision, accelerator)
    out.mkdir(parents=True, exist_ok=True)
    _print_config(cfg, f"rcmae pretrain -> {out}")
    if cfg.family == "margin":
        # The angular-margin classifier family trains in this one stage (rcmae.margin_train).
        from rcmae.margin_train import pretrain_margin

        return pretrain_margin(data, out, cfg, preset, overrides, resume, trainer_kw, progress, callbacks, fit_scores)
    L.seed_everything(cfg.seed, verbose=False)

    stats = FeatureStats.load(out / "stats.json") if resume and (out / "stats.json").is_file() else None
    train, stats = load_train_data(data, cfg, stats=stats, progress=progress)
    bank, outputs = None, {}
    if aug != "specaugment":
        bank = load_bank_twins(aug, train, cfg, stats, progress=progress, outputs=outputs)
    draws = read_augment_draws(replay) if replay is not None else None
    model = RCMAE(cfg.model)
    n_params = count_parameters(model)
    print(f"model: {n_params:,} parameters; {len(train.paths)} training clips, {_classes_note(train)}", flush=True)

    if _launcher_rank_zero():
        rconfig.save_config(cfg, out / "config.yaml")
    if _launcher_rank_zero() and not resume:
        stats.save(out / "stats.json")
        write_json(out / "run.json", {
            "created": _now(),
            "seed": cfg.seed,
            "preset": str(preset),
            "overrides": list(overrides),
            "versions": _versions(),
            "git_commit": _git_commit(),
            "command": " ".join(sys.argv),
            "data": str(Path(data).resolve()),
            "aug": aug if aug == "specaugment" else str(Path(aug).resolve()),
            "classes": [list(c) for c in train.classes],
            "class_units": [list(u) for u in train.class_units],
            "n_train": len(train.paths),
            "skipped": [list(s) for s in train.report.skipped],
            "parameters": n_params,
            "stages": {},
        })
    repeats = cfg.pretrain.crops_per_clip if cfg.pretrain.crop_frames else 1
    dataset = ClipDataset(train.x, train.labels, repeats=repeats)
    spe = _steps_per_epoch(len(dataset), cfg.pretrain.batch_size)
    record = None
    if bank and _launcher_rank_zero():
        record = out / DRAWS_FILE
        # What the recorded copy indices point at: per training clip, its source and its copies' wavs.
        write_json(out / COPIES_FILE, {"bank": str(Path(aug).resolve()), "seed": cfg.seed,
                                       "replayed_from": str(Path(replay).resolve()) if replay else None,
                                       "clips": [{"source": p, "copies": outputs.get(i, [])}
                                                 for i, p in enumerate(train.paths)]})
    module = PretrainModule(model, cfg, train.x, train.labels, spe,
                            PairSource(specaugment=cfg.pretrain.specaugment, bank=bank, seed=cfg.seed, replay=draws),
                            record=record)
    started = time.time()
    trainer = _fit(module, dataset, out, "pretrain", cfg.pretrain.epochs, cfg.pretrain.batch_size,
                   last if resume else None, trainer_kw, progress, callbacks, cfg.pretrain.grad_clip,
                   cfg.pretrain.num_workers)
    if not trainer.is_global_zero:
        return out
    last_ckpt = checkpoint_path(out, "pretrain", "last")
    if cfg.pretrain.epochs == 0 and not last_ckpt.is_file():
        # "No pretraining" (the ablation) still needs a checkpoint to fine-tune from: the seeded initial weights.
        trainer.save_checkpoint(last_ckpt)
    info = read_run_json(out)
    stages = info.get("stages", {})
    stages["pretrain"] = {"finished": _now(), "epochs": cfg.pretrain.epochs, "steps": trainer.global_step,
                          "wall_s": round(time.time() - started, 1), "resumed": bool(resume),
                          **{k: trainer_kw[k] for k in ("accelerator", "precision", "strategy")}}
    update_run_json(out, stages=stages)
    return out


def finetune(
    run: str | os.PathLike,
    data: str | os.PathLike | None = None,
    epochs: int | None = None,
    overrides: Sequence[str] = (),
    resume: bool = False,
    devices: str | int | Sequence[int] = "auto",
    num_nodes: int = 1,
    precision: str | None = None,
    accelerator: str = "auto",
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    fit_scores: bool = True,  # noqa: ARG001 - kept for old callers; training never scores
) -> Path:
    """Fine-tune a pretrained run on machine-ID classes (SupCon + cross-entropy).

    With a single machine ID there is nothing to classify: fine-tuning is skipped (said on the
    terminal and recorded in run.json) and the run scores with ``knn`` by default.

    Args:
        run: A pretrained run folder.
        data: Data folder (default: the one the run was pretrained on).
        epochs: Overrides ``finetune.epochs``.
        overrides: ``key=value`` overrides on top of the run's config.
        resume: Continue from ``checkpoints/finetune-last.ckpt``.
        devices, num_nodes, precision, accelerator: Lightning Trainer flags.
        progress: Show progress bars.
        callbacks: Extra Lightning callbacks.
        fit_scores: Ignored, kept for old callers (see :func:`pretrain`).

    Returns:
        The run folder.
    """
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: run folder not found; pretrain one with `rcmae pretrain --out {run}`")
    info = read_run_json(run)
    pre = checkpoint_path(run, "pretrain", "last")
    if not pre.is_file():
        raise RunFolderError(f"{run}: no {pre.name}; pretrain the run first (rcmae pretrain --out {run})")
    overrides = list(overrides) + ([f"finetune.epochs={epochs}"] if epochs is not None else [])
    cfg = rconfig.load_config(run / "config.yaml", overrides)
    last = checkpoint_path(run, "finetune", "last")
    if resume and not last.is_file():
        raise RunFolderError(f"{run}: nothing to resume (no {last.name}); run finetune without --resume")
    if not resume and last.is_file():
        raise RunFolderError(f"{run}: already fine-tuned; pass --resume to continue, or pretrain a new run")
    data = Path(data) if data is not None else Path(info["data"])
    if cfg.family == "margin":
        print(f"finetune: {run} is a margin-classifier run, trained in one stage by `rcmae pretrain`; "
              "nothing to fine-tune", flush=True)
        return run
    trainer_kw = trainer_options(devices, num_nodes, precision, accelerator)
    # Damaged or hostile checkpoints fail here, in one line, before any data is read.
    model, _ = _model_from_checkpoint(pre)
    if cfg.finetune.head == "arcface":
        # A cosine classifier: the margin acts in training, scoring uses scale * cosine.
        model.config = dataclasses.replace(model.config, head="cosine", head_scale=cfg.finetune.scale)
    if resume:
        _check_resume_checkpoint(last, model.config)
    _print_config(cfg, f"rcmae finetune -> {run}")
    L.seed_everything(cfg.seed, verbose=False)
    stats = FeatureStats.load(run / "stats.json")
    train, _ = load_train_data(data, cfg, stats=stats, progress=progress)
    stages = info.get("stages", {})
    if len(train.classes) < 2:
        message = (f"finetune: {data} has a single machine ID ({train.classes[0][0]} id {train.classes[0][1]}); "
                   "there are no classes to tell apart, so fine-tuning is skipped and idprob is unavailable"
                   + (" (the default scorer falls back to knn)" if cfg.score.default_scorer == "idprob" else ""))
        print(message, flush=True)
        stages["finetune"] = {"skipped": message}
        update_run_json(run, stages=stages, data=str(data.resolve()))
        return run
    print(f"finetune: {_classes_note(train)} (finetune.classes={cfg.finetune.classes})", flush=True)
    # With pseudo-classes every class has K outputs (rcmae/augment/pseudo.py): class i, transform k -> i * K + k.
    n_transforms = 1 + len(cfg.finetune.pseudo_classes)
    model.set_num_classes(len(train.classes) * n_transforms)
    # Fine-tuning never runs the decoder: freeze it, so that DDP does not wait for gradients that never come.
    for name, param in model.named_parameters():
        if name.startswith(("decoder_", "mask_token")):
            param.requires_grad_(False)
    if _launcher_rank_zero():
        rconfig.save_config(cfg, run / "config.yaml")
    dataset = ClipDataset(train.x, train.labels)
    spe = _steps_per_epoch(len(dataset), cfg.finetune.batch_size)
    module = FinetuneModule(model, cfg, train.x, train.labels, spe, stats=stats)
    started = time.time()
    trainer = _fit(module, dataset, run, "finetune", cfg.finetune.epochs, cfg.finetune.batch_size,
                   last if resume else None, trainer_kw, progress, callbacks, cfg.finetune.grad_clip)
    if not trainer.is_global_zero:
        return run
    stages["finetune"] = {"finished": _now(), "epochs": cfg.finetune.epochs, "steps": trainer.global_step,
                          "wall_s": round(time.time() - started, 1), "resumed": bool(resume),
                          **{k: trainer_kw[k] for k in ("accelerator", "precision", "strategy")}}
    update_run_json(run, stages=stages, data=str(data.resolve()), classes=[list(c) for c in train.classes],
                    class_units=[list(u) for u in train.class_units])
    return run
