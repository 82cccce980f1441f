"""The reproduction's cost in GPU hours, from FLOPs counted on the real architectures and a stated throughput.

Every count comes from ``torch.utils.flop_counter.FlopCounterMode`` on the meta device: the model is built with
no memory and no weights, one step is traced through it, and the matrix products, convolutions and attention
are counted (2 FLOPs per multiply-add; element-wise work, which is small beside them, is not counted). A
count is turned into time by a GPU's bf16 dense peak times an assumed utilisation, unless a step time
measured on a GPU (``bench/bench_paper.py``'s ``paper-step-times.json``) is given: measured beats assumed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

# The DCASE 2020 Task 2 clip counts per machine type: (development training, additional training, development
# test). Development test: the task's published counts (shared REFERENCE.md: ToyCar 1400 normal / 1059 anomaly,
# ...). Development training: the task's published per-type totals. Additional training: about 1000 clips per
# evaluation ID (3 IDs per type), the task page's round figure. `rcmae reproduce --dry-run --data FOLDER`
# counts the real folder instead.
DCASE2020_CLIPS: dict[str, tuple[int, int, int]] = {
    "ToyCar": (4000, 3000, 2459),
    "ToyConveyor": (3000, 3000, 3509),
    "fan": (3675, 3000, 1875),
    "pump": (3349, 3000, 856),
    "slider": (2804, 3000, 1290),
    "valve": (3291, 3000, 879),
}

# GPU -> (name, bf16 dense tensor peak in FLOP/s with FP32 accumulation: the vendors' data sheets, no sparsity).
GPUS: dict[str, tuple[str, float]] = {
    "h100": ("NVIDIA H100 SXM", 989e12),
    "a100": ("NVIDIA A100", 312e12),
    "l40s": ("NVIDIA L40S", 362e12),
    "rtx4090": ("NVIDIA RTX 4090", 165e12),
    "rtx3090ti": ("NVIDIA RTX 3090 Ti (the paper's GPU)", 80e12),
}
DEFAULT_GPU = "h100"
# Assumed fraction of the peak that is reached: a ViT trained in bf16 at batch 128 (model FLOPs utilisation),
# and AudioLDM's guided UNet at batch 2 on small latents, whose convolutions keep a GPU less busy.
TRAIN_UTILISATION = 0.40
AUDIOLDM_UTILISATION = 0.25


def dcase2020_counts(pretrain_data: str = "all") -> dict[str, int]:
    """``{"pretrain", "finetune", "test"}`` clips of DCASE 2020 as ``rcmae reproduce`` uses them.

    Pretraining sees the training clips of all 41 IDs and, with ``pretrain_data="all"`` (the paper's "all
    audios"), the development test clips too; fine-tuning the training clips of the 41 IDs; evaluation the
    development test clips.
    """
    dev = sum(v[0] for v in DCASE2020_CLIPS.values())
    add = sum(v[1] for v in DCASE2020_CLIPS.values())
    test = sum(v[2] for v in DCASE2020_CLIPS.values())
    return {"pretrain": dev + add + (test if pretrain_data == "all" else 0), "finetune": dev + add, "test": test}


def count_flops(fn) -> int:
    """FLOPs of running ``fn()`` (``FlopCounterMode``: matmuls, convolutions, attention; 2 per multiply-add)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def simpson_mean(f, lo: float, hi: float) -> float:
    """Mean of ``f`` over ``[lo, hi]`` by Simpson's rule: exact for the quadratic a FLOP count is in the ratio."""
    return (f(lo) + 4 * f((lo + hi) / 2) + f(hi)) / 6


def training_flops(preset: str, overrides: Sequence[str] = (), n_classes: int = 41, batch: int = 2) -> dict:
    """FLOPs per clip of one optimiser step of each stage, and of scoring one test clip, for a preset.

    Pretraining (forward and backward): both branches encoded, the clip decoded, the projections, InfoNCE,
    VCR and the masked MSE, averaged over the mask ratio drawn uniformly in ``[mask_ratio_min, max]``.
    Fine-tuning: the whole clip encoded, projection, classifier, cross-entropy and SupCon, forward and
    backward. Evaluation: the embedding of the crop windows of one clip, forward only. Counted at ``batch``
    clips and divided by it (the batch-quadratic loss terms are negligible beside the encoder).
    """
    from rcmae.models.losses import finetune_loss, pretrain_loss
    from rcmae.models.rcmae import RCMAE
    from rcmae.run import config as rconfig

    cfg = rconfig.load_config(preset, list(overrides))
    with torch.device("meta"):
        model = RCMAE(dataclasses.replace(cfg.model, n_classes=n_classes))
    frames = cfg.pretrain.crop_frames or cfg.model.n_frames
    x = torch.zeros(batch, cfg.model.n_mels, frames, device="meta")
    labels = torch.zeros(batch, dtype=torch.long, device="meta")

    def pretrain_step(ratio: float) -> float:
        def run():
            latent, mask, ids = model.forward_encoder(x, ratio, None)
            pred = model.forward_decoder(latent, ids)
            twin, _, _ = model.forward_encoder(x, ratio, None)
            pretrain_loss(model.project(latent, x), model.project(twin, x), pred, model.target(x),
                          mask)["loss"].backward()
        return count_flops(run) / batch

    def finetune_step() -> float:
        def run():
            z = model.embed(x)
            # SupCon's batch x batch similarities branch on the labels (not traceable on meta): it is counted
            # below, by hand, as the two matrix products of its forward and backward passes.
            finetune_loss(z, model.classify(z), labels, w_scl=0.0)["loss"].backward()
        supcon = 3 * 2 * cfg.finetune.batch_size * model.config.proj_dim  # per clip: 3 x (2 B D) FLOPs
        return count_flops(run) / batch + supcon

    starts = 1
    if cfg.pretrain.crop_frames:  # a test clip is embedded as the mean over its crop windows (Detector.embed)
        from rcmae.data.datasets import window_starts

        clip_frames = cfg.features.n_frames(int(round(cfg.data.duration * cfg.data.sample_rate)))
        starts = len(window_starts(clip_frames, cfg.pretrain.crop_frames))
    with torch.no_grad():
        embed = count_flops(lambda: model.embed(x)) / batch
    lo, hi = cfg.model.mask_ratio_min, cfg.model.mask_ratio_max
    return {"preset": preset, "params": sum(p.numel() for p in model.parameters()),
            "pretrain_per_clip": simpson_mean(pretrain_step, lo, hi), "mask_ratio": [lo, hi],
            "finetune_per_clip": finetune_step(), "eval_per_clip": embed * starts,
            "pretrain_batch": cfg.pretrain.batch_size, "finetune_batch": cfg.finetune.batch_size,
            "pretrain_epochs": cfg.pretrain.epochs, "finetune_epochs": cfg.finetune.epochs,
            "crops_per_clip": cfg.pretrain.crops_per_clip if cfg.pretrain.crop_frames else 1, "eval_windows": starts}


def mean_denoising_steps(steps: tuple[int, int], t0: float) -> float:
    """Mean over S uniform in ``steps`` (both ends) of the guided DDIM steps a generation runs, ``floor(S t0)``."""
    from rcmae.augment.audioldm import start_index

    lo, hi = steps
    return sum(s - start_index(s, t0) for s in range(lo, hi + 1)) / (hi - lo + 1)


def audioldm_flops(parts: dict | None = None, seconds: float = 10.0, steps: tuple[int, int] = (10, 50),
                   t0: float | None = None, guidance: bool = True) -> dict:
    """FLOPs of one AudioLDM audio-to-audio generation of a ``seconds`` clip (``cvssp/audioldm-s-full-v2``).

    VAE encode of the clip's 64-bin log-mel (100 frames per second, padded to a multiple of 32), the CLAP text
    encoder on the prompt (and the empty prompt under guidance), ``floor(S t0)`` UNet steps averaged over S,
    each on a batch of 2 under classifier-free guidance, VAE decode and the HiFi-GAN vocoder.
    ``parts``: the four modules (default: the real-size architecture on the meta device).
    """
    from rcmae.augment.audioldm import PROMPT_MAX_LENGTH
    from rcmae.augment.audioldm_sizes import real_size_components
    from rcmae.augment.bank import DEFAULT_T0

    t0 = DEFAULT_T0 if t0 is None else t0
    parts = parts or real_size_components("meta")
    device = next(parts["unet"].parameters()).device
    vae, unet = parts["vae"], parts["unet"]
    frames = 32 * math.ceil(seconds * 100 / 32)
    down = 2 ** (len(vae.config.block_out_channels) - 1)
    latent = torch.zeros(1, vae.config.latent_channels, frames // down, 64 // down, device=device)
    mel = torch.zeros(1, 1, frames, 64, device=device)
    n = 2 if guidance else 1
    cond = torch.zeros(n, unet.config.projection_class_embeddings_input_dim, device=device)
    with torch.no_grad():
        counts = {
            "vae_encode": count_flops(lambda: vae.encode(mel)),
            # The CLAP text encoder branches on its inputs (not traceable on meta): 2 FLOPs per weight and token
            # of its non-embedding layers, the usual transformer count (attention over 77 tokens adds ~1 %).
            "text": 2 * n * PROMPT_MAX_LENGTH * sum(v.numel() for k, v in parts["text_encoder"].named_parameters()
                                                    if "embeddings" not in k),
            "unet_step": count_flops(lambda: unet(torch.cat([latent] * n), 401, encoder_hidden_states=None,
                                                  class_labels=cond)),
            "vae_decode": count_flops(lambda: vae.decode(latent)),
            "vocoder": count_flops(lambda: parts["vocoder"](torch.zeros(1, frames, 64, device=device))),
        }
    mean_steps = mean_denoising_steps(steps, t0)
    per = counts["vae_encode"] + counts["text"] + mean_steps * counts["unet_step"] + counts["vae_decode"] \
        + counts["vocoder"]
    return {**counts, "mean_steps": mean_steps, "steps": list(steps), "t0": t0, "seconds": seconds,
            "per_generation": per}


@dataclass
class Throughput:
    """A GPU's bf16 dense peak and the assumed utilisation of training and of AudioLDM."""

    gpu: str = DEFAULT_GPU
    train_utilisation: float = TRAIN_UTILISATION
    audioldm_utilisation: float = AUDIOLDM_UTILISATION

    @property
    def name(self) -> str:
        return GPUS[self.gpu][0]

    @property
    def peak(self) -> float:
        return GPUS[self.gpu][1]

    def check(self) -> None:
        if self.gpu not in GPUS:
            raise ValueError(f"--gpu {self.gpu!r}: choose one of {', '.join(GPUS)}")
        for name in ("train_utilisation", "audioldm_utilisation"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name.replace('_', '-')} {getattr(self, name)}: a fraction in (0, 1]")


def gpu_hours(train: dict, clips: dict, arms: Sequence[str], throughput: Throughput, bank: dict | None = None,
              per_clip: int = 4, measured: dict | None = None) -> dict:
    """GPU hours of every step, per arm and in all, from FLOPs (or measured GPU step times where given).

    ``train``: :func:`training_flops`; ``clips``: ``{"pretrain", "finetune", "test"}``; ``bank``:
    :func:`audioldm_flops` (``None``: the bank is not priced); ``measured``: seconds per optimiser step at the
    preset's batch on one GPU (``pretrain_step_s``, ``finetune_step_s``) and AudioLDM seconds per clip by S
    (``audioldm_s_per_clip``), which replace the FLOP-based times. GPU hours do not depend on the GPU count
    (wall hours = GPU hours / GPUs, at perfect scaling).
    """
    measured = measured or {}
    train_rate = throughput.peak * throughput.train_utilisation
    crops = train["crops_per_clip"]
    pre_steps = train["pretrain_epochs"] * math.ceil(clips["pretrain"] * crops / train["pretrain_batch"])
    ft_steps = train["finetune_epochs"] * math.ceil(clips["finetune"] / train["finetune_batch"])
    pre_step_flops = train["pretrain_per_clip"] * train["pretrain_batch"]
    ft_step_flops = train["finetune_per_clip"] * train["finetune_batch"]
    pre_step_s = measured.get("pretrain_step_s") or pre_step_flops / train_rate
    ft_step_s = measured.get("finetune_step_s") or ft_step_flops / train_rate
    steps = {
        "pretrain": {"flops": pre_steps * pre_step_flops, "steps": pre_steps, "step_s": pre_step_s,
                     "hours": pre_steps * pre_step_s / 3600, "measured": "pretrain_step_s" in measured},
        "finetune": {"flops": ft_steps * ft_step_flops, "steps": ft_steps, "step_s": ft_step_s,
                     "hours": ft_steps * ft_step_s / 3600, "measured": "finetune_step_s" in measured},
        "evaluate": {"flops": clips["test"] * train["eval_per_clip"], "hours":
                     clips["test"] * train["eval_per_clip"] / train_rate / 3600, "measured": False},
    }
    if bank is not None:
        generations = clips["pretrain"] * per_clip
        aldm = measured.get("audioldm_s_per_clip") or {}
        if {"10", "50"} <= set(aldm):
            # A clip's time is linear in S: the mean S of the drawn range prices a clip.
            lo, hi = bank["steps"]
            per_s = (aldm["50"] - aldm["10"]) / 40
            seconds = aldm["10"] + per_s * ((lo + hi) / 2 - 10)
        else:
            seconds = bank["per_generation"] / (throughput.peak * throughput.audioldm_utilisation)
        steps["bank"] = {"flops": generations * bank["per_generation"], "generations": generations,
                         "s_per_generation": seconds, "hours": generations * seconds / 3600,
                         "measured": bool(aldm)}
    per_arm = {}
    for arm in arms:
        parts = ["pretrain", "finetune", "evaluate"] + (["bank"] if arm == "rcmae" and "bank" in steps else [])
        per_arm[arm] = {"steps": parts, "gpu_hours": sum(steps[p]["hours"] for p in parts)}
    return {"steps": steps, "arms": per_arm, "total_gpu_hours": sum(a["gpu_hours"] for a in per_arm.values()),
            "throughput": {"gpu": throughput.name, "peak_flops": throughput.peak,
                           "train_utilisation": throughput.train_utilisation,
                           "audioldm_utilisation": throughput.audioldm_utilisation}}
