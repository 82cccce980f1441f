"""The reproduction's cost model (rcmae.evaluation.reproduce.cost): FLOP counts against hand counts, and the
GPU-hour arithmetic against a hand-computed case."""

from __future__ import annotations

import math

import pytest

from rcmae import cli
from rcmae.evaluation.reproduce import cost
from rcmae.run import config as rconfig


def test_dcase2020_counts_are_the_published_ones():
    # Development test (shared REFERENCE.md, normal + anomaly per type): 10,868 clips.
    dev_test = 1400 + 1059 + 2399 + 1110 + 400 + 1475 + 400 + 456 + 400 + 890 + 400 + 479
    dev_train = 4000 + 3000 + 3675 + 3349 + 2804 + 3291
    counts = cost.dcase2020_counts("all")
    assert counts == {"pretrain": dev_train + 18000 + dev_test, "finetune": dev_train + 18000, "test": dev_test}
    assert cost.dcase2020_counts("train")["pretrain"] == dev_train + 18000


def test_mean_denoising_steps_by_hand():
    # floor(S / 2) for S = 10..50: sum = (10 + ... + 50) / 2 - (20 odd S) / 2 = 615 - 10 = 605 over 41 values.
    assert cost.mean_denoising_steps((10, 50), 0.5) == pytest.approx(605 / 41)
    assert cost.mean_denoising_steps((10, 10), 0.58) == 5  # floor(5.8)


def test_the_embedding_flops_equal_a_hand_count_of_the_vit():
    cfg = rconfig.load_config("tiny", [])
    m = cfg.model
    grid_f, grid_t = m.n_mels // m.patch_f, m.n_frames // m.patch_t
    n_tok, d, h = grid_f * grid_t, m.embed_dim, int(m.embed_dim * m.mlp_ratio)
    n = n_tok + 1  # the class token
    block = 2 * n * d * 3 * d + 2 * 2 * n * n * d + 2 * n * d * d + 2 * 2 * n * d * h  # qkv, QK^T and AV, out, MLP
    proj_in = d + (2 * m.n_mels if m.stat_fusion else 0)
    per_window = 2 * n_tok * d * m.patch_f * m.patch_t + m.depth * block + 2 * proj_in * m.proj_dim
    # A 10 s clip (313 frames) is embedded as the mean over half-overlapping 96-frame windows: 0, 48, ..., 217.
    windows = len(range(0, 313 - 96 + 1, 48)) + 1
    got = cost.training_flops("tiny")
    assert got["eval_windows"] == windows == 6
    assert got["eval_per_clip"] == per_window * windows
    # A training step runs forward and backward (about 3x a forward) of more than the embedding.
    assert 2 * per_window < got["finetune_per_clip"] < 4 * per_window
    assert got["pretrain_per_clip"] > 0 and got["params"] == pytest.approx(0.18e6, rel=0.5)


def test_simpson_is_exact_for_a_quadratic():
    assert cost.simpson_mean(lambda r: 3 * r * r - r + 2, 0.5, 0.75) == pytest.approx(
        (3 * (0.75**3 - 0.5**3) / 3 - (0.75**2 - 0.5**2) / 2 + 2 * 0.25) / 0.25)


def test_gpu_hours_by_hand():
    train = {"pretrain_per_clip": 1e11, "finetune_per_clip": 5e10, "eval_per_clip": 2e10, "pretrain_batch": 128,
             "finetune_batch": 64, "pretrain_epochs": 10, "finetune_epochs": 4, "crops_per_clip": 2}
    bank = {"per_generation": 4e12, "steps": [10, 50]}
    clips = {"pretrain": 1000, "finetune": 700, "test": 300}
    tp = cost.Throughput("a100", 0.5, 0.2)
    rate, aldm_rate = 312e12 * 0.5, 312e12 * 0.2
    res = cost.gpu_hours(train, clips, ["rcmae", "rcmae-nodda"], tp, bank=bank, per_clip=3)
    pre = 10 * math.ceil(1000 * 2 / 128) * 1e11 * 128 / rate / 3600
    ft = 4 * math.ceil(700 / 64) * 5e10 * 64 / rate / 3600
    ev = 300 * 2e10 / rate / 3600
    bk = 1000 * 3 * 4e12 / aldm_rate / 3600
    assert res["steps"]["pretrain"]["hours"] == pytest.approx(pre)
    assert res["arms"]["rcmae-nodda"]["gpu_hours"] == pytest.approx(pre + ft + ev)
    assert res["arms"]["rcmae"]["gpu_hours"] == pytest.approx(bk + pre + ft + ev)
    assert res["total_gpu_hours"] == pytest.approx(bk + 2 * (pre + ft + ev))
    # Measured GPU step times replace the FLOP-based ones: 0.2 s per pretraining step, S = 10 -> 2 s, 50 -> 6 s.
    res = cost.gpu_hours(train, clips, ["rcmae"], tp, bank=bank, per_clip=3,
                         measured={"pretrain_step_s": 0.2, "audioldm_s_per_clip": {"10": 2.0, "50": 6.0}})
    assert res["steps"]["pretrain"]["hours"] == pytest.approx(10 * 16 * 0.2 / 3600)
    assert res["steps"]["bank"]["hours"] == pytest.approx(3000 * 4.0 / 3600)
    assert res["steps"]["pretrain"]["measured"] and not res["steps"]["finetune"]["measured"]


def test_audioldm_flops_add_up_and_scale_with_the_guided_batch(tmp_path):
    from rcmae.augment.audioldm import AudioLDMAugmenter
    from rcmae.augment.audioldm_testing import build_tiny_pipeline

    pipe = AudioLDMAugmenter.from_pretrained(build_tiny_pipeline(tmp_path / "tiny"), device="cpu").pipe
    parts = {"unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder, "vocoder": pipe.vocoder}
    guided = cost.audioldm_flops(parts, seconds=1.0, steps=(2, 4), t0=0.5)
    plain = cost.audioldm_flops(parts, seconds=1.0, steps=(2, 4), t0=0.5, guidance=False)
    assert guided["mean_steps"] == pytest.approx((1 + 1 + 2) / 3)
    assert guided["per_generation"] == pytest.approx(guided["vae_encode"] + guided["text"] + guided["vae_decode"]
                                                     + guided["vocoder"] + guided["mean_steps"] * guided["unet_step"])
    assert guided["unet_step"] == 2 * plain["unet_step"] > 0  # classifier-free guidance runs a batch of 2
    assert guided["vae_decode"] == plain["vae_decode"] > 0


def test_a_dry_run_without_data_or_gpu_prints_gpu_hours_per_arm_and_its_assumptions(tmp_path, capsys):
    assert cli.main(["reproduce", "--dry-run", "--out", str(tmp_path / "x"), "--gpus", "0"]) == 0
    text = capsys.readouterr().out
    assert "48,987" in text and "GFLOP per clip per step" in text and "TFLOP per generation" in text
    assert "NVIDIA H100 SXM, bf16 dense peak 989 TFLOP/s; assumed utilisation 40% (training), 25% (AudioLDM)" in text
    import re

    hours = {m.group(1): float(m.group(2)) for m in re.finditer(r"^  (rcmae(?:-nodda)?): ([\d.]+) GPU hours", text,
                                                                  re.M)}
    assert set(hours) == {"rcmae", "rcmae-nodda"}
    assert all(1 <= h <= 500 for h in hours.values()) and hours["rcmae"] > hours["rcmae-nodda"]
    assert not (tmp_path / "x" / "runs").exists()
    # On the paper's own GPU the same FLOPs take 989 / 80 times as long.
    assert cli.main(["reproduce", "--dry-run", "--out", str(tmp_path / "x"), "--gpus", "0", "--gpu", "rtx3090ti",
                     "--arms", "rcmae-nodda"]) == 0
    slow = float(re.search(r"rcmae-nodda: ([\d.]+) GPU hours", capsys.readouterr().out).group(1))
    assert slow == pytest.approx(hours["rcmae-nodda"] * 989 / 80, rel=0.01)
    assert cli.main(["reproduce", "--dry-run", "--out", str(tmp_path / "x"), "--gpu", "tpu"]) == 2
    assert "--gpu 'tpu': choose one of h100, a100, l40s, rtx4090, rtx3090ti" in capsys.readouterr().err
