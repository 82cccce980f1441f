"""``cvssp/audioldm-s-full-v2``'s architecture with random weights, built from its published configuration.

diffusers' ``scripts/convert_original_audioldm_to_diffusers.py`` DEFAULT_CONFIG: UNet model_channels 128,
channel_mult 1,2,3,5, attention at 2/4/8, 2 res blocks, 8 latent channels, FiLM/concat CLAP conditioning of
size 512; VAE ch 128, ch_mult 1,2,4, z 8; HiFi-GAN 1024 channels, upsampling 5,4,2,2,2; CLAP text = RoBERTa-base
with a 512 projection. Its parameter counts reproduce the published 421 M (UNet 185 M, VAE 55 M, CLAP text 125 M,
HiFi-GAN 55 M). Random weights cost the same time and FLOPs as the real ones (same shapes, same operations): the
benchmarks time them, and the reproduction's cost model counts their FLOPs on the meta device.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from rcmae.augment.audioldm_testing import AUDIOLDM_SCHEDULER_CONFIG, build_tiny_tokenizer


def real_size_components(device: str | torch.device = "cpu") -> dict[str, torch.nn.Module]:
    """``{"unet", "vae", "text_encoder", "vocoder"}`` of ``cvssp/audioldm-s-full-v2``'s architecture, random weights.

    ``device="meta"`` builds them without memory or weights (for FLOP counts: :mod:`rcmae.evaluation.reproduce.cost`).
    """
    with torch.device(device):
        return _build()


def _build() -> dict[str, torch.nn.Module]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

    unet = UNet2DConditionModel(
        sample_size=128,
        in_channels=8,
        out_channels=8,
        block_out_channels=(128, 256, 384, 640),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(128, 256, 384, 640),
        class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=512,
        class_embeddings_concat=True,
    )
    vae = AutoencoderKL(
        sample_size=512,
        in_channels=1,
        out_channels=1,
        block_out_channels=(128, 256, 512),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=8,
        layers_per_block=2,
        scaling_factor=0.9392935633659363,
    )
    # ClapTextConfig's defaults are laion/clap-htsat-unfused's text branch (RoBERTa-base, projection 512).
    text_encoder = ClapTextModelWithProjection(ClapTextConfig())
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=64,
        sampling_rate=16000,
        upsample_initial_channel=1024,
        upsample_rates=[5, 4, 2, 2, 2],
        upsample_kernel_sizes=[16, 16, 8, 4, 4],
        resblock_kernel_sizes=[3, 7, 11],
        resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        normalize_before=False,
    ))
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "vocoder": vocoder}


def build_real_size_pipeline(seed: int = 0):
    """``cvssp/audioldm-s-full-v2``'s architecture with random weights as an ``AudioLDMPipeline`` (in memory)."""
    from diffusers import AudioLDMPipeline, DDIMScheduler

    torch.manual_seed(seed)
    parts = real_size_components("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        # The real tokenizer is RoBERTa's (50265 tokens); the tiny BPE gives valid ids and costs the same.
        tokenizer = build_tiny_tokenizer(Path(tmp))
    pipe = AudioLDMPipeline(tokenizer=tokenizer, scheduler=DDIMScheduler(**AUDIOLDM_SCHEDULER_CONFIG), **parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe
