"""The fit loop shared by every training stage and model family: Lightning module base, recorder, trainer."""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

import rcmae
from rcmae.data.datasets import ClipDataset, EpochSampler, make_generator
from rcmae.files import atomic_write_text
from rcmae.models.rcmae import RCMAE
from rcmae.run import config as rconfig
from rcmae.run.config import RunConfig
from rcmae.run.folder import METRIC_COLUMNS, write_progress

# A distinct stream per stage so fine-tuning draws never repeat pretraining's.
STAGE_CODE = {"pretrain": 11, "finetune": 23}


class TrainingDiverged(ValueError):
    """A non-finite loss: training stopped; the last good checkpoint is kept."""


# ------------------------------------------------------------------------------------------ lightning modules
def lr_lambda(warmup_steps: int, total_steps: int, schedule: str):
    """Linear warm-up, then cosine decay to zero (or constant)."""

    def f(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


class StageModule(L.LightningModule):
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
        return make_generator(self.cfg.seed, STAGE_CODE[self.stage], self.current_epoch, batch_idx,
                              self.global_rank, device=device)

    def on_train_epoch_start(self) -> None:
        # Anything that still uses the global RNG gets a state that depends only on (seed, epoch, rank).
        torch.manual_seed(make_generator(self.cfg.seed, STAGE_CODE[self.stage], self.current_epoch,
                                         self.global_rank, 1).initial_seed())

    def configure_optimizers(self):
        s = self.stage_cfg
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt_cls = torch.optim.AdamW if s.optimizer == "adamw" else torch.optim.Adam
        # The fused kernel updates each parameter in one pass instead of a chain of elementwise ops: with `tiny`'s
        # many small tensors that is part of a step's speed-up (bench/results/training-step.md). Lightning refuses
        # gradient clipping beside it under mixed precision, so a clipped run keeps the unfused update.
        fused = s.grad_clip is None and all(p.device.type in ("cpu", "cuda") for p in params)
        opt = opt_cls(params, lr=s.lr, weight_decay=s.weight_decay, fused=fused or None)
        total = max(1, s.epochs * self.steps_per_epoch)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lr_lambda(s.warmup_epochs * self.steps_per_epoch, total, s.schedule)
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
def count_devices(devices: str | int | Sequence[int], gpu: bool) -> int:
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
    n = count_devices(devices, gpu) * max(1, num_nodes)
    return {
        "accelerator": "gpu" if gpu else "cpu",
        "devices": devices if gpu or devices != "auto" else 1,
        "num_nodes": num_nodes,
        "precision": precision,
        "strategy": "ddp" if n > 1 else "auto",
    }


def fit_stage(module: StageModule, dataset: ClipDataset, run: Path, stage: str, epochs: int, batch_size: int,
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


def epoch_steps(n: int, batch_size: int) -> int:
    bs = min(batch_size, n)
    return n // bs if n > bs else 1


def launcher_rank_zero() -> bool:
    """True in the first process; DDP's re-launched ranks (LOCAL_RANK/NODE_RANK > 0) leave the folder alone."""
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def print_config(cfg: RunConfig, header: str) -> None:
    print(f"# {header}\n{rconfig.dump_config(cfg)}", flush=True)
