"""The reproduction's plan: its steps as commands, measured step times and the cost estimate (`--dry-run`)."""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rcmae.evaluation.reproduce.fetch import ZENODO, check_layout
from rcmae.evaluation.reproduce.paper import ARMS
from rcmae.files import read_json


# ---------------------------------------------------------------- planning and estimates
@dataclass
class Options:
    """Everything ``rcmae reproduce`` was asked (see ``rcmae reproduce --help``)."""

    out: Path
    data: Path | None = None
    mirror: str = ZENODO
    preset: str = "paper"
    overrides: list[str] = dataclasses.field(default_factory=list)
    pretrain_data: str = "all"
    arms: tuple[str, ...] = ARMS
    gpus: int | None = None  # None = every visible GPU
    aug_model: str | None = None
    per_clip: int = 4
    aug_steps: tuple[int, int] | None = None
    bank_shards: int | None = None  # default: one per GPU (1 on CPU)
    seed: int = 0

    @property
    def n_gpus(self) -> int:
        if self.gpus is not None:
            return self.gpus
        import torch

        return torch.cuda.device_count()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rcmae.cli", *args]


def plan(opts: Options) -> list[dict]:
    """Every step: ``{"step", "what", "argv" (a child process) or None}`` in order."""
    out = opts.out.resolve()
    data = opts.data.resolve() if opts.data else out / "data" / "dcase2020"
    view = pretrain_view_path(opts, data)
    n = opts.n_gpus
    shards = opts.bank_shards or max(1, n)
    sets = [a for o in opts.overrides for a in ("--set", o)]
    trainer = ["--devices", str(n), "--accelerator", "gpu"] if n else ["--accelerator", "cpu"]
    steps = [{"step": "data", "what": (f"use {data}" if opts.data else
                                        f"fetch 12 archives from {opts.mirror} (records 3678171, 3727685) into "
                                        f"{data}, check MD5s, unpack"), "argv": None},
             {"step": "view", "what": f"pretraining data: {opts.pretrain_data} ({view})", "argv": None}]
    bank = out / "bank-audioldm"
    if "rcmae" in opts.arms:
        for i in range(shards):
            argv = _cli("augment", "--data", str(view), "--out", str(bank), "--backend", "audioldm",
                        "--per-clip", str(opts.per_clip), "--seed", str(opts.seed), "--shard", f"{i}/{shards}",
                        "--device", f"cuda:{i % max(n, 1)}" if n else "cpu")
            if opts.aug_model:
                argv += ["--model", opts.aug_model]
            if opts.aug_steps:
                argv += ["--steps", f"{opts.aug_steps[0]}:{opts.aug_steps[1]}"]
            steps.append({"step": f"bank {i}/{shards}", "what": f"AudioLDM bank shard {i} of {shards}", "argv": argv})
    for arm in opts.arms:
        run = out / "runs" / arm
        aug = str(bank) if arm == "rcmae" else "specaugment"
        steps.append({"step": f"pretrain {arm}", "what": f"pretrain `{opts.preset}` on {aug}",
                      "argv": _cli("pretrain", "--data", str(view), "--out", str(run), "--preset", opts.preset,
                                   "--aug", aug, *sets, *trainer)})
        steps.append({"step": f"finetune {arm}", "what": "fine-tune on the machine-ID classes",
                      "argv": _cli("finetune", "--run", str(run), "--data", str(data), *trainer)})
        steps.append({"step": f"evaluate {arm}", "what": "score the labelled development test clips",
                      "argv": _cli("evaluate", "--run", str(run), "--data", str(data))})
        steps.append({"step": f"figures {arm}", "what": "Figs. 3(a), 3(b) and 4: t-SNE per machine type",
                      "argv": _cli("figures", "--run", str(run), "--out", str(out / "figures" / arm))})
    steps.append({"step": "report", "what": f"Tables 3 and 4 beside the paper, and the figures: {out / 'report.md'}, "
                                            "report.json",
                  "argv": None})
    return steps


def pretrain_view_path(opts: Options, data: Path) -> Path:
    return data if opts.pretrain_data == "train" else opts.out.resolve() / "pretrain-data"


def measure_step_times(preset: str, overrides: Sequence[str] = (), batch: int | None = None, steps: int = 2,
                       device: str | None = None) -> dict:
    """Seconds per optimiser step of both stages, measured now on ``device`` with random log-mels.

    On CPU the batch defaults to 4 and the time is scaled linearly to the preset's batch (said in the result);
    on a GPU the preset's own batch runs in bf16 autocast.
    """
    import torch

    from rcmae.models.losses import finetune_loss, pretrain_loss
    from rcmae.models.rcmae import RCMAE
    from rcmae.run import config as rconfig

    cfg = rconfig.load_config(preset, list(overrides))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.startswith("cuda")
    real = {"pretrain": cfg.pretrain.batch_size, "finetune": cfg.finetune.batch_size}
    frames = cfg.pretrain.crop_frames or cfg.model.n_frames
    model = RCMAE(dataclasses.replace(cfg.model, n_classes=41)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator(device=device).manual_seed(0)
    result = {"device": torch.cuda.get_device_name(0) if on_gpu else "cpu", "preset": preset}
    for stage in ("pretrain", "finetune"):
        b = batch or (real[stage] if on_gpu else min(4, real[stage]))
        x = torch.randn(b, cfg.model.n_mels, frames, device=device)
        twin = torch.randn_like(x)
        labels = torch.arange(b, device=device) % 41
        times = []
        for i in range(steps + 1):
            if on_gpu:
                torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.autocast(device_type="cuda" if on_gpu else "cpu", dtype=torch.bfloat16, enabled=on_gpu):
                if stage == "pretrain":
                    ratio = model.sample_mask_ratio(gen)
                    latent, mask, ids = model.forward_encoder(x, ratio, gen)
                    pred = model.forward_decoder(latent, ids)
                    latent_aug, _, _ = model.forward_encoder(twin, ratio, gen)
                    loss = pretrain_loss(model.project(latent, x).float(), model.project(latent_aug, twin).float(),
                                         pred.float(), model.target(x).float(), mask)["loss"]
                else:
                    z = model.embed(x)
                    loss = finetune_loss(z.float(), model.classify(z).float(), labels)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            if on_gpu:
                torch.cuda.synchronize()
            if i:  # the first step warms up (allocations, kernels)
                times.append(time.perf_counter() - start)
        per_step = sum(times) / len(times)
        result[f"{stage}_step_s"] = per_step * real[stage] / b
        result[f"{stage}_measured_batch"] = b
    result["batch"] = real
    result["source"] = (f"measured now on {result['device']} ({steps} steps after a warm-up"
                        + ("" if on_gpu else f"; batch {result['pretrain_measured_batch']}, scaled linearly to the "
                           f"preset's batch {real['pretrain']}") + ")")
    return result


def measure_audioldm(model: object, device: str | None = None, seconds: float = 10.0,
                     steps: Sequence[int] = (10, 50)) -> dict[str, float]:
    """Seconds per clip of AudioLDM audio-to-audio at each S in ``steps`` (one warm-up call first).

    ``model``: an AudioLDM folder or hub id, or an ``AudioLDMAugmenter`` already built.
    """
    import numpy as np
    import torch

    from rcmae.augment.audioldm import AudioLDMAugmenter
    from rcmae.augment.bank import DEFAULT_T0, PAPER_GUIDANCE

    aug = model if isinstance(model, AudioLDMAugmenter) else AudioLDMAugmenter.from_pretrained(str(model),
                                                                                                device=device)
    wave = (0.1 * np.random.default_rng(0).standard_normal(int(seconds * 16000))).astype(np.float32)
    prompt = "add continuous and powerful whirring noise in a factory"
    aug(wave, prompt, num_inference_steps=min(steps), guidance_scale=PAPER_GUIDANCE, t0=DEFAULT_T0)
    out = {}
    for s in steps:
        start = time.perf_counter()
        aug(wave, prompt, num_inference_steps=int(s), guidance_scale=PAPER_GUIDANCE, t0=DEFAULT_T0,
            generator=torch.Generator("cpu").manual_seed(0))
        out[str(s)] = time.perf_counter() - start
    return out


def estimate(opts: Options, clips: dict, times: dict) -> dict:
    """Wall and GPU hours per step from clip counts and step times (hours; ``None`` where a time is missing).

    ``clips``: ``{"pretrain": n, "finetune": n, "test": n}``; ``times``: ``pretrain_step_s``,
    ``finetune_step_s`` and optionally ``audioldm_s_per_clip`` ``{"10": s, "50": s}``.
    """
    from rcmae.run import config as rconfig

    cfg = rconfig.load_config(opts.preset, opts.overrides)
    n = max(1, opts.n_gpus)
    out: dict[str, float | None] = {}
    aldm = times.get("audioldm_s_per_clip") or {}
    if "rcmae" in opts.arms:
        lo, hi = opts.aug_steps or (10, 50)
        if {"10", "50"} <= set(aldm):
            # S is drawn uniformly in lo..hi and a clip's time is linear in S: the mean S prices a clip.
            per_s = (aldm["50"] - aldm["10"]) / 40
            mean = aldm["10"] + per_s * ((lo + hi) / 2 - 10)
            out["bank"] = clips["pretrain"] * opts.per_clip * mean / n / 3600
        else:
            out["bank"] = None
    crops = cfg.pretrain.crops_per_clip if cfg.pretrain.crop_frames else 1
    pre_steps = cfg.pretrain.epochs * max(1, math.ceil(clips["pretrain"] * crops / (cfg.pretrain.batch_size * n)))
    ft_steps = cfg.finetune.epochs * max(1, math.ceil(clips["finetune"] / (cfg.finetune.batch_size * n)))
    for arm in opts.arms:
        out[f"pretrain {arm}"] = pre_steps * times["pretrain_step_s"] / 3600
        out[f"finetune {arm}"] = ft_steps * times["finetune_step_s"] / 3600
    known = [v for v in out.values() if v is not None]
    return {"wall_hours": out, "total_wall_hours": sum(known), "gpus": n,
            "total_gpu_hours": sum(known) * n, "complete": all(v is not None for v in out.values())}


def dry_run(opts: Options, step_times: str | os.PathLike | None = None, clips: int | None = None,
            measure: bool | None = None, log: Callable[[str], None] = print, finetune_clips: int | None = None,
            throughput: object | None = None) -> dict:
    """Print (via ``log``) every step, the data volume and the cost in GPU hours; returns the same as a dict.

    The cost comes from FLOPs counted on the preset's model and AudioLDM's architecture
    (:mod:`rcmae.evaluation.reproduce.cost`) and a stated GPU throughput; step times measured on a GPU
    (``step_times``, or now when ``measure`` and a GPU is visible) replace the assumed throughput. ``measure``
    defaults to measuring only when a GPU is visible; ``measure=True`` on a CPU times CPU steps (said so).
    """
    from rcmae.evaluation.reproduce import cost

    throughput = throughput or cost.Throughput()
    throughput.check()
    steps = plan(opts)
    log(f"rcmae reproduce --dry-run: {len(steps)} steps into {opts.out}")
    for i, step in enumerate(steps, 1):
        log(f"  {i:2d}. {step['step']}: {step['what']}")
        if step["argv"]:
            log(f"      {' '.join(step['argv'][1:]).replace('-m rcmae.cli ', 'rcmae ')}")
    volume = None
    if opts.data is not None and Path(opts.data).is_dir():
        volume = check_layout(opts.data)
        # The "all" view holds the training and the labelled (development) test clips, not the evaluation set.
        view_all = volume["train_clips"] + (volume["test_clips"] if opts.pretrain_data == "all" else 0)
        counts = {"pretrain": view_all, "finetune": volume["train_clips"], "test": volume["test_clips"]}
        log(f"data: {volume['all_clips']} clips ({volume['bytes'] / 2**30:.2f} GiB): {volume['train_clips']} "
            f"training, {volume['test_clips']} labelled test; {len(volume['classes'])} machine-ID classes "
            f"(the paper: 41); pretraining sees {view_all} clips")
    elif clips:
        d = cost.dcase2020_counts(opts.pretrain_data)
        ft = finetune_clips or round(clips * d["finetune"] / d["pretrain"])
        counts = {"pretrain": clips, "finetune": ft, "test": round(clips * d["test"] / d["pretrain"])}
        log(f"data: not on this machine; estimating for --clips {clips} pretraining clips, {ft} fine-tuning clips"
            + ("" if finetune_clips else " (DCASE 2020's ratio; --finetune-clips M to set)")
            + f", {counts['test']} test clips")
    else:
        counts = cost.dcase2020_counts(opts.pretrain_data)
        log(f"data: not on this machine yet (12 archives from Zenodo, checked by MD5); estimating with DCASE 2020's "
            f"clip counts: pretraining {counts['pretrain']:,} ({opts.pretrain_data}), fine-tuning "
            f"{counts['finetune']:,} (41 IDs), test {counts['test']:,} (pass --data FOLDER to count yours)")
    times: dict = {}
    if step_times:
        times = read_json(step_times)
        times.setdefault("source", f"read from {step_times}")
    else:
        import torch

        if measure or (measure is None and torch.cuda.is_available()):
            times = measure_step_times(opts.preset, opts.overrides)
            if opts.aug_model and "rcmae" in opts.arms:
                times["audioldm_s_per_clip"] = measure_audioldm(opts.aug_model, seconds=10.0)
                times["source"] += "; AudioLDM s/clip measured now at S = 10 and 50 on a 10 s clip"
    on_gpu = bool(times) and str(times.get("device", "cpu")) != "cpu"
    result = {"steps": steps, "data": volume, "clips": counts, "times": times}
    result["cost"] = _log_cost(opts, counts, throughput, times if on_gpu else None, log)
    none = "none measured (the FLOP model above stands; pass --step-times FILE from bench/bench_paper.py on a GPU)"
    log(f"step times: {times.get('source', none)}")
    if times.get("pretrain_step_s") is not None:
        log(f"  pretrain {times['pretrain_step_s']:.3f} s/step, finetune {times['finetune_step_s']:.3f} s/step"
            + (f", AudioLDM {times['audioldm_s_per_clip']} s/clip by S" if times.get("audioldm_s_per_clip") else
               ", AudioLDM not measured (pass --aug-model, or --step-times from bench/bench_paper.py)"))
        est = estimate(opts, counts, times)
        result["estimate"] = est
        for name, hours in est["wall_hours"].items():
            log(f"  {name}: " + ("not estimated (no AudioLDM time)" if hours is None else f"{hours:.2f} h wall"))
        log(f"estimate from these step times: {est['total_wall_hours']:.2f} h wall on {est['gpus']} "
            f"{'GPU(s)' if opts.n_gpus else 'CPU process'}, {est['total_gpu_hours']:.2f} "
            f"{'GPU' if opts.n_gpus else 'CPU'} hours" + ("" if est["complete"] else " (without the bank)"))
    return result


def _log_cost(opts: Options, counts: dict, throughput, measured: dict | None, log: Callable[[str], None]) -> dict:
    """Count the FLOPs, price them and print the cost model with every assumption; returns its numbers."""
    from rcmae.evaluation.reproduce import cost

    log(f"cost model: counting FLOPs of the `{opts.preset}` preset on the meta device (torch.utils.flop_counter; "
        "2 FLOPs per multiply-add) ...")
    train = cost.training_flops(opts.preset, opts.overrides)
    bank = None
    if "rcmae" in opts.arms:
        log("  ... and of one AudioLDM generation (cvssp/audioldm-s-full-v2's architecture, no weights needed)")
        bank = cost.audioldm_flops(steps=opts.aug_steps or (10, 50))
    res = cost.gpu_hours(train, counts, opts.arms, throughput, bank=bank, per_clip=opts.per_clip, measured=measured)
    st = res["steps"]
    g = 1e9
    log(f"  pretrain: {train['pretrain_per_clip'] / g:.1f} GFLOP per clip per step ({train['params'] / 1e6:.1f} M "
        f"parameters; both branches, forward + backward, mask ratio {train['mask_ratio'][0]}-"
        f"{train['mask_ratio'][1]}), batch {train['pretrain_batch']}, {train['pretrain_epochs']} epochs: "
        f"{st['pretrain']['steps']:,} steps, {st['pretrain']['flops']:.3g} FLOPs")
    log(f"  finetune: {train['finetune_per_clip'] / g:.1f} GFLOP per clip per step, batch {train['finetune_batch']}, "
        f"{train['finetune_epochs']} epochs: {st['finetune']['steps']:,} steps, {st['finetune']['flops']:.3g} FLOPs")
    log(f"  evaluate: {train['eval_per_clip'] / g:.1f} GFLOP per test clip, {counts['test']:,} clips")
    if bank:
        t = 1e12
        log(f"  AudioLDM bank: {bank['per_generation'] / t:.2f} TFLOP per generation = VAE encode "
            f"{bank['vae_encode'] / t:.2f} + CLAP text {bank['text'] / t:.2f} + {bank['mean_steps']:.2f} guided UNet "
            f"steps x {bank['unet_step'] / t:.3f} (S in {bank['steps'][0]}..{bank['steps'][1]}, t0 {bank['t0']}, "
            f"batch 2 under guidance) + VAE decode {bank['vae_decode'] / t:.2f} + vocoder {bank['vocoder'] / t:.2f}; "
            f"{st['bank']['generations']:,} generations ({counts['pretrain']:,} clips x {opts.per_clip} copies)")
    tp = res["throughput"]
    log(f"throughput: {tp['gpu']}, bf16 dense peak {tp['peak_flops'] / 1e12:.0f} TFLOP/s; assumed utilisation "
        f"{tp['train_utilisation']:.0%} (training), {tp['audioldm_utilisation']:.0%} (AudioLDM) (--gpu, "
        "--train-utilisation, --audioldm-utilisation)" + ("; measured GPU step times replace them where marked"
                                                          if measured else ""))
    log(f"GPU hours per arm ({tp['gpu']}):")
    for arm, a in res["arms"].items():
        parts = ", ".join(f"{p} {st[p]['hours']:.2f}{' (measured)' if st[p].get('measured') else ''}"
                          for p in ["bank", "pretrain", "finetune", "evaluate"] if p in a["steps"])
        log(f"  {arm}: {a['gpu_hours']:.2f} GPU hours ({parts})")
    n = max(1, opts.n_gpus)
    log(f"  total: {res['total_gpu_hours']:.2f} GPU hours; {res['total_gpu_hours'] / n:.2f} h wall on {n} GPU(s) "
        "at perfect scaling")
    return {"flops": {"training": train, "audioldm": bank}, **res}
