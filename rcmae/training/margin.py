"""Training the angular-margin classifier family (:mod:`rcmae.models.margin`) into an ordinary run folder.

A run whose config says ``family: margin`` (the ``margin`` preset) trains in one stage, started by
``rcmae pretrain`` (``rcmae finetune`` then has nothing to do and says so). The run folder is the same
contract as RC-MAE's: ``config.yaml``, ``run.json``, ``stats.json`` (the log-mel statistics, also held
inside the model), ``checkpoints/pretrain-{last,best}.ckpt``, ``metrics.csv``, ``progress.json``; thresholds
and train embeddings come from scoring's ``fit_run`` (the CLI after training, or the first
``Detector.load``), never from here: training does not import scoring. ``rcmae evaluate``, ``rcmae score``,
the :class:`~rcmae.scorers.Detector` and the workbench read it like any other run, with the scorers
``idprob`` (``-log p(own machine ID)``, no margin at test time) and ``knn`` (cosine distance to the
unit's nearest normal training embeddings).

The model sees waveforms: the training clips are held in memory as samples ``[n, N]`` (a small data
set's worth) and every batch is cropped, mixed up and turned into log-mel + Tgram inside the model.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import scipy.special
import torch
from lightning.pytorch.callbacks import Callback

from rcmae.data.datasets import ClipDataset
from rcmae.data.features import FeatureStats, LogMel, compute_stats
from rcmae.data.index import DatasetLayoutError
from rcmae.files import write_json
from rcmae.models.losses import mixup, mixup_cross_entropy
from rcmae.models.margin import STgramNet, crop_waves
from rcmae.models.rcmae import count_parameters
from rcmae.run import config as rconfig
from rcmae.run.config import RunConfig
from rcmae.run.folder import (
    RunFolderError,
    checkpoint_path,
    current_git_commit,
    package_versions,
    read_run_json,
    update_run_json,
    utc_now,
)
from rcmae.run.trainset import classes_note, load_train_waves
from rcmae.training.loop import StageModule, epoch_steps, fit_stage, trainer_options

FAMILY = "margin"


class MarginModule(StageModule):
    """One training stage (the run's ``pretrain`` settings): crop, mixup, margin cross-entropy over IDs."""

    stage = "pretrain"

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        idx, labels = batch
        gen = self._generator(batch_idx)
        m = self.model.config
        wave = crop_waves(self._x[idx.cpu()], m.crop_frames, self.cfg.features.hop_length, gen)
        labels = labels.to(self.device)
        lam, perm = 1.0, torch.arange(len(idx))
        if m.mixup_alpha > 0 and float(torch.rand(1, generator=gen)) < m.mixup_prob:
            # Beta has no generator argument: draw it from the seeded stream by inverse transform of a uniform.
            lam = beta_draw(m.mixup_alpha, float(torch.rand(1, generator=gen)))
            perm = torch.randperm(len(idx), generator=gen)
            wave = mixup(wave, lam, perm)
        wave = wave.to(self.device)
        perm = perm.to(self.device)
        z = self.model.embed(wave)
        logits_a = self.model.train_logits(z, labels)
        logits_b = logits_a if m.head != "arcface" or lam == 1.0 else self.model.train_logits(z, labels[perm])
        ce = mixup_cross_entropy(logits_a.float(), logits_b.float(), labels, labels[perm], lam, m.label_smoothing)
        parts = {"loss": ce, "ce": ce}
        self._check_finite(parts)
        self._log_parts(parts, len(idx))
        return ce

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["rcmae"]["family"] = FAMILY


def beta_draw(alpha: float, u: float) -> float:
    """A Beta(alpha, alpha) draw from a uniform ``u`` (inverse CDF), so mixup weights follow the seeded stream."""
    return float(scipy.special.betaincinv(alpha, alpha, u))


def pretrain_margin(
    data: str | os.PathLike,
    out: str | os.PathLike,
    cfg: RunConfig,
    preset: str | os.PathLike,
    overrides: Sequence[str] = (),
    resume: bool = False,
    trainer_kw: dict | None = None,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    fit_scores: bool = True,  # noqa: ARG001 - as rcmae.training.stages.pretrain: training never scores
) -> Path:
    """Train an angular-margin classifier run (``family: margin``) into the run folder ``out``.

    Called by :func:`rcmae.training.stages.pretrain` when the config's family is ``margin``; see there for the args.
    """
    out = Path(out)
    last = checkpoint_path(out, "pretrain", "last")
    trainer_kw = trainer_kw or trainer_options()
    L.seed_everything(cfg.seed, verbose=False)
    train = load_train_waves(data, cfg, progress=progress)
    if len(train.classes) < 2:
        raise DatasetLayoutError(f"{data}: a single machine ID ({train.classes[0][0]} id {train.classes[0][1]}); "
                                 "the margin classifier needs at least two IDs to tell apart (use --preset tiny)")
    logmel = LogMel(cfg.features)
    with torch.no_grad():
        mels = torch.cat([logmel(train.x[b : b + 64]) for b in range(0, len(train.x), 64)])
    stats = FeatureStats.load(out / "stats.json") if resume and (out / "stats.json").is_file() else \
        compute_stats([mels])
    model = STgramNet(dataclasses.replace(cfg.margin, n_classes=len(train.classes)), cfg.features,
                      torch.as_tensor(stats.mean), torch.as_tensor(stats.std))
    n_params = count_parameters(model)
    print(f"model: margin classifier ({cfg.margin.head}), {n_params:,} parameters; {len(train.paths)} training "
          f"clips, {classes_note(train)}", flush=True)
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        rconfig.save_config(cfg, out / "config.yaml")
        if not resume:
            stats.save(out / "stats.json")
            write_json(out / "run.json", {
                "created": utc_now(), "seed": cfg.seed, "preset": str(preset), "family": FAMILY,
                "overrides": list(overrides), "versions": package_versions(), "git_commit": current_git_commit(),
                "command": " ".join(sys.argv), "data": str(Path(data).resolve()), "aug": "mixup",
                "classes": [list(c) for c in train.classes], "n_train": len(train.paths),
                "class_units": [list(u) for u in train.class_units],
                "skipped": [list(s) for s in train.report.skipped], "parameters": n_params, "stages": {},
            })
    dataset = ClipDataset(train.x, train.labels)
    spe = epoch_steps(len(dataset), cfg.pretrain.batch_size)
    module = MarginModule(model, cfg, train.x, train.labels, spe)
    started = time.time()
    trainer = fit_stage(module, dataset, out, "pretrain", cfg.pretrain.epochs, cfg.pretrain.batch_size,
                   last if resume else None, trainer_kw, progress, callbacks, cfg.pretrain.grad_clip,
                   cfg.pretrain.num_workers)
    if not trainer.is_global_zero:
        return out
    if not last.is_file():
        trainer.save_checkpoint(last)
    info = read_run_json(out)
    stages = info.get("stages", {})
    stages["pretrain"] = {"finished": utc_now(), "epochs": cfg.pretrain.epochs, "steps": trainer.global_step,
                          "wall_s": round(time.time() - started, 1), "resumed": bool(resume), "family": FAMILY,
                          **{k: trainer_kw[k] for k in ("accelerator", "precision", "strategy")}}
    stages["finetune"] = {"skipped": "the margin family trains in one stage"}
    update_run_json(out, stages=stages)
    return out


def check_resume(ckpt: Path, cfg: RunConfig) -> None:
    """Refuse to resume a margin run from a checkpoint of another architecture."""
    from rcmae.run.checkpoint import load_checkpoint

    state = load_checkpoint(ckpt)
    meta = state.get("rcmae") or {}
    if meta.get("family") != FAMILY:
        raise RunFolderError(f"{ckpt}: not a margin-classifier checkpoint; start a new run with a fresh --out")
    saved = {k: v for k, v in meta.get("model_config", {}).items() if k != "n_classes"}
    now = {k: v for k, v in dataclasses.asdict(cfg.margin).items() if k != "n_classes"}
    if saved != now:
        raise RunFolderError(f"{ckpt}: checkpoint comes from another margin config; resume with the run's own "
                             f"config (--preset {ckpt.parent.parent / 'config.yaml'}) or start a new --out")
