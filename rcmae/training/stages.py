"""`pretrain` and `finetune`: the two RC-MAE stages from a data folder to a run folder."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from rcmae.data.datasets import ClipDataset
from rcmae.data.features import FeatureStats
from rcmae.files import write_json
from rcmae.models.rcmae import RCMAE, ModelConfig, count_parameters
from rcmae.run import config as rconfig
from rcmae.run.checkpoint import load_checkpoint, model_from_checkpoint
from rcmae.run.config import RunConfig
from rcmae.run.folder import (
    RunFolderError,
    checkpoint_path,
    current_git_commit,
    package_versions,
    read_run_json,
    update_run_json,
    utc_now,
    writer_lock,
)
from rcmae.run.trainset import COPIES_FILE, DRAWS_FILE, classes_note, load_train_data, read_augment_draws
from rcmae.training.loop import epoch_steps, fit_stage, launcher_rank_zero, print_config, trainer_options
from rcmae.training.modules import FinetuneModule, PretrainModule
from rcmae.training.pairs import PairSource, load_bank_twins


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


def _check_crop(cfg: RunConfig) -> None:
    crop = cfg.pretrain.crop_frames
    if crop is not None and not 1 <= crop <= cfg.model.n_frames:
        raise rconfig.ConfigError(
            f"pretrain.crop_frames={crop} must be between 1 and model.n_frames={cfg.model.n_frames}; "
            "set model.n_frames to the crop length (a multiple of model.patch_t)"
        )


def _pretrain(
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
            fitted by ``rcmae.scorers.detector.fit_run`` (``rcmae pretrain`` calls it) or on the first
            ``Detector.load``.
        replay: A run folder whose recorded per-epoch copy draw (``augment_draws.jsonl``) this run uses
            instead of drawing its own (same data and bank).

    With a bank, each epoch pairs every clip with one of its copies (``rcmae.training.pairs.draw_copies``) and
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
            from rcmae.training.margin import check_resume

            check_resume(last, cfg)
        else:
            _check_resume_checkpoint(last, cfg.model)
        if checkpoint_path(out, "finetune", "last").is_file():
            # Said before anything changes: a longer pretraining leaves the fine-tuned weights behind.
            print(f"{out}: this run is fine-tuned; resuming its pretraining changes the encoder the fine-tuning "
                  "started from, so the fine-tuned weights (and idprob) stay those of the old encoder until you "
                  f"run `rcmae finetune --run {out}` again", file=sys.stderr, flush=True)
    elif (out / "checkpoints").is_dir() and any((out / "checkpoints").glob("*.ckpt")):
        raise RunFolderError(f"{out}: already holds a trained run; pass --resume to continue or choose a new --out")
    trainer_kw = trainer_options(devices, num_nodes, precision, accelerator)
    out.mkdir(parents=True, exist_ok=True)
    print_config(cfg, f"rcmae pretrain -> {out}")
    if cfg.family == "margin":
        # The angular-margin classifier family trains in this one stage (rcmae.training.margin).
        from rcmae.training.margin import pretrain_margin

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
    print(f"model: {n_params:,} parameters; {len(train.paths)} training clips, {classes_note(train)}", flush=True)

    if launcher_rank_zero():
        rconfig.save_config(cfg, out / "config.yaml")
    if launcher_rank_zero() and not resume:
        stats.save(out / "stats.json")
        write_json(out / "run.json", {
            "created": utc_now(),
            "seed": cfg.seed,
            "preset": str(preset),
            "overrides": list(overrides),
            "versions": package_versions(),
            "git_commit": current_git_commit(),
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
    if bank is not None and launcher_rank_zero():
        _record_bank_coverage(out, aug, train.paths, bank, data)
    repeats = cfg.pretrain.crops_per_clip if cfg.pretrain.crop_frames else 1
    dataset = ClipDataset(train.x, train.labels, repeats=repeats)
    spe = epoch_steps(len(dataset), cfg.pretrain.batch_size)
    record = None
    if bank and launcher_rank_zero():
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
    trainer = fit_stage(module, dataset, out, "pretrain", cfg.pretrain.epochs, cfg.pretrain.batch_size,
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
    stages["pretrain"] = {"finished": utc_now(), "epochs": cfg.pretrain.epochs, "steps": trainer.global_step,
                          "wall_s": round(time.time() - started, 1), "resumed": bool(resume),
                          **{k: trainer_kw[k] for k in ("accelerator", "precision", "strategy")}}
    update_run_json(out, stages=stages)
    return out


def _finetune(
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
    model, _ = model_from_checkpoint(pre)
    if cfg.finetune.head == "arcface":
        # A cosine classifier: the margin acts in training, scoring uses scale * cosine.
        model.config = dataclasses.replace(model.config, head="cosine", head_scale=cfg.finetune.scale)
    if resume:
        _check_resume_checkpoint(last, model.config)
    print_config(cfg, f"rcmae finetune -> {run}")
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
    print(f"finetune: {classes_note(train)} (finetune.classes={cfg.finetune.classes})", flush=True)
    # With pseudo-classes every class has K outputs (rcmae/augment/pseudo.py): class i, transform k -> i * K + k.
    n_transforms = 1 + len(cfg.finetune.pseudo_classes)
    model.set_num_classes(len(train.classes) * n_transforms)
    # Fine-tuning never runs the decoder: freeze it, so that DDP does not wait for gradients that never come.
    for name, param in model.named_parameters():
        if name.startswith(("decoder_", "mask_token")):
            param.requires_grad_(False)
    if launcher_rank_zero():
        rconfig.save_config(cfg, run / "config.yaml")
    dataset = ClipDataset(train.x, train.labels)
    spe = epoch_steps(len(dataset), cfg.finetune.batch_size)
    module = FinetuneModule(model, cfg, train.x, train.labels, spe, stats=stats)
    started = time.time()
    trainer = fit_stage(module, dataset, run, "finetune", cfg.finetune.epochs, cfg.finetune.batch_size,
                   last if resume else None, trainer_kw, progress, callbacks, cfg.finetune.grad_clip)
    if not trainer.is_global_zero:
        return run
    stages["finetune"] = {"finished": utc_now(), "epochs": cfg.finetune.epochs, "steps": trainer.global_step,
                          "wall_s": round(time.time() - started, 1), "resumed": bool(resume),
                          **{k: trainer_kw[k] for k in ("accelerator", "precision", "strategy")}}
    update_run_json(run, stages=stages, data=str(data.resolve()), classes=[list(c) for c in train.classes],
                    class_units=[list(u) for u in train.class_units])
    return run


@functools.wraps(_pretrain)

def _record_bank_coverage(out: Path, aug: str, paths: list[str], bank: dict, data) -> None:
    """Count the training clips without a bank copy (they pair with SpecAugment twins), say so, and record it.

    ``run.json`` gets ``bank_coverage``: ``{"clips", "with_copies", "specaugment_fallback", "missing"}`` (the
    first missing clips), so a with-augmentation run that is partly SpecAugment can never pass unnoticed.
    """
    missing = [p for i, p in enumerate(paths) if i not in bank]
    update_run_json(out, bank_coverage={"clips": len(paths), "with_copies": len(paths) - len(missing),
                                        "specaugment_fallback": len(missing), "missing": missing[:20]})
    if missing:
        print(f"pretrain: warning: {len(missing)} of {len(paths)} training clips have no copy in the bank "
              f"{aug}: they pair with SpecAugment twins instead, so this run is not pure bank augmentation "
              f"(run.json bank_coverage). Complete the bank with `rcmae augment --data {data} --out {aug}` "
              "(it resumes) before pretraining.", file=sys.stderr, flush=True)

def pretrain(data: str | os.PathLike, out: str | os.PathLike, *args, **kwargs) -> Path:
    # One writer per run folder (rcmae.run.folder.writer_lock), taken by the launching process only: the ranks
    # that Lightning's DDP starts run this function too.
    with writer_lock(out) if launcher_rank_zero() else contextlib.nullcontext():
        return _pretrain(data, out, *args, **kwargs)


@functools.wraps(_finetune)
def finetune(run: str | os.PathLike, *args, **kwargs) -> Path:
    with writer_lock(run) if launcher_rank_zero() else contextlib.nullcontext():
        return _finetune(run, *args, **kwargs)


pretrain.__name__ = pretrain.__qualname__ = "pretrain"
finetune.__name__ = finetune.__qualname__ = "finetune"
