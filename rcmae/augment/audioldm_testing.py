"""A tiny, randomly initialised AudioLDM pipeline built offline, for tests, benches and demos.

Every part is the real class that ``cvssp/audioldm-s-full-v2`` uses, shrunk to a few thousand
parameters (the idea of diffusers' own pipeline tests): a ``UNet2DConditionModel`` conditioned
through ``simple_projection`` class embeddings, a one-channel ``AutoencoderKL``, a
``ClapTextModelWithProjection``, a ``SpeechT5HifiGan`` vocoder (upsampling x160 = hop 160 at
16 kHz, 64 mel bins) and the real DDIM scheduler configuration. The tokenizer is a byte-level BPE
trained in memory with RoBERTa's special-token ids, so nothing comes from the hub. The pipeline is
written with ``save_pretrained`` so that it is loaded back through the real loading path.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

# The scheduler configuration of cvssp/audioldm-s-full-v2 (scheduler/scheduler_config.json on the hub).
AUDIOLDM_SCHEDULER_CONFIG: dict = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0015,
    "beta_end": 0.0195,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}

# Words the tiny tokenizer learns merges from: the paper's Table 1 prompt vocabulary.
_CORPUS = [
    "add metallic screeching of saws cutting through metal in a busy factory",
    "rhythmic buzzing of printing presses in a noisy print shop",
    "low rumble of rock crushers with random heavy impacts in a quarry",
    "rhythmic clicks of injection moulding machines in a plastics plant",
    "whirring woodworking machines with cutting bursts in a workshop",
    "bursts of hiss and impacts from pneumatic tools in an assembly hall",
    "factory noise machines hum drone engine motor fan pump valve slider conveyor",
]
_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0-4
MODEL_MAX_LENGTH = 77


def _audible(vocoder: torch.nn.Module) -> torch.nn.Module:
    """Re-initialise the vocoder's convolutions with PyTorch's default (Kaiming-uniform) init.

    transformers' HiFi-GAN init (normal, std 0.01) makes a random vocoder output ~1e-8 peaks,
    which a 16-bit wav rounds to silence; the default init gives peaks near 1, so tests of banks
    and players see real samples.
    """
    for module in vocoder.modules():
        if isinstance(module, torch.nn.Conv1d | torch.nn.ConvTranspose1d):
            module.reset_parameters()
    return vocoder


def build_tiny_tokenizer(folder: Path, vocab_size: int = 400):
    """Train a byte-level BPE on a few factory prompts and load it as a ``RobertaTokenizer``.

    Args:
        folder: where ``vocab.json`` and ``merges.txt`` are written.
        vocab_size: BPE vocabulary size (>= 256 bytes + 5 special tokens).

    Returns:
        A ``transformers.RobertaTokenizer`` with ``model_max_length`` 77.
    """
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(_CORPUS, vocab_size=vocab_size, min_frequency=1, special_tokens=_SPECIAL_TOKENS,
                            show_progress=False)
    bpe.save_model(str(folder))
    # from_pretrained(folder), not RobertaTokenizer(vocab_file=...): transformers 5 ignores those files silently.
    return RobertaTokenizer.from_pretrained(str(folder), model_max_length=MODEL_MAX_LENGTH)


def build_tiny_pipeline(path: str | Path, seed: int = 0) -> Path:
    """Build a tiny random ``AudioLDMPipeline`` and save it with ``save_pretrained``.

    Args:
        path: output folder (created); it ends up holding ``model_index.json`` and one folder per part.
        seed: torch seed for the random weights; the same seed gives the same weights.

    Returns:
        ``path`` as a ``Path``, ready for ``AudioLDMAugmenter.from_pretrained(path)``.
    """
    from diffusers import AudioLDMPipeline, AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

    path = Path(path)
    projection_dim = 8
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(8, 16),
        attention_head_dim=2,
        # AudioLDM conditions on the CLAP text embedding through a FiLM-like class embedding, not cross-attention.
        class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=projection_dim,
        class_embeddings_concat=True,
    )
    vae = AutoencoderKL(
        in_channels=1,
        out_channels=1,
        # Three levels (x4 downsampling) as in the real VAE, which also keeps the UNet's attention grid small.
        block_out_channels=(8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        scaling_factor=0.9392935633659363,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tiny_tokenizer(Path(tmp))
    text_encoder = ClapTextModelWithProjection(ClapTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=37,
        num_attention_heads=2,
        num_hidden_layers=2,
        layer_norm_eps=1e-5,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        # RoBERTa positions start after the padding index, hence the + 2.
        max_position_embeddings=MODEL_MAX_LENGTH + 2,
        projection_dim=projection_dim,
    ))
    vocoder = _audible(SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=64,
        sampling_rate=16000,
        upsample_initial_channel=16,
        upsample_rates=[5, 4, 4, 2],  # 160 samples per mel frame = hop 160
        upsample_kernel_sizes=[10, 8, 8, 4],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
        normalize_before=False,
    )))
    scheduler = DDIMScheduler(**AUDIOLDM_SCHEDULER_CONFIG)
    pipe = AudioLDMPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                            scheduler=scheduler, vocoder=vocoder)
    pipe.save_pretrained(str(path))
    return path


def build_tiny_audioldm2_pipeline(path: str | Path, seed: int = 0) -> Path:
    """Build a tiny random ``AudioLDM2Pipeline`` (CLAP + T5 + GPT-2 conditioning) and save it.

    The same tiny VAE, vocoder, scheduler and tokenizer as :func:`build_tiny_pipeline`; the T5
    encoder reuses the byte-level BPE tokenizer (its ids are all the encoder sees).

    Args:
        path: output folder (created).
        seed: torch seed for the random weights.

    Returns:
        ``path`` as a ``Path``.
    """
    from diffusers import (
        AudioLDM2Pipeline,
        AudioLDM2ProjectionModel,
        AudioLDM2UNet2DConditionModel,
        AutoencoderKL,
        DDIMScheduler,
    )
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapTextConfig,
        GPT2Config,
        GPT2LMHeadModel,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
        T5Config,
        T5EncoderModel,
    )

    path = Path(path)
    clap_dim, t5_dim, lm_dim = 8, 16, 8
    torch.manual_seed(seed)
    unet = AudioLDM2UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        # Per transformer: self-attention, then cross-attention on the GPT-2 states, then on the T5 states.
        cross_attention_dim=([None, lm_dim, t5_dim], [None, lm_dim, t5_dim]),
        attention_head_dim=2,
    )
    vae = AutoencoderKL(in_channels=1, out_channels=1, block_out_channels=(8, 16, 16),
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        latent_channels=4, layers_per_block=1, norm_num_groups=4)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tiny_tokenizer(Path(tmp))
    text_config = ClapTextConfig(vocab_size=len(tokenizer), hidden_size=clap_dim, intermediate_size=37,
                                 num_attention_heads=1, num_hidden_layers=1, layer_norm_eps=1e-5, bos_token_id=0,
                                 pad_token_id=1, eos_token_id=2, max_position_embeddings=MODEL_MAX_LENGTH + 2,
                                 projection_dim=clap_dim)
    audio_config = ClapAudioConfig(spec_size=8, window_size=4, num_mel_bins=8, intermediate_size=37,
                                   layer_norm_eps=1e-5, depths=[1, 1], num_attention_heads=[1, 1], num_hidden_layers=1,
                                   hidden_size=8, patch_size=2, patch_stride=2, patch_embed_input_channels=4,
                                   projection_dim=clap_dim)
    clap = ClapModel(ClapConfig(text_config=text_config.to_dict(), audio_config=audio_config.to_dict(),
                                projection_dim=clap_dim))
    t5 = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=t5_dim, d_ff=16, d_kv=4, num_layers=1,
                                 num_heads=2, decoder_start_token_id=0, pad_token_id=1))
    language_model = GPT2LMHeadModel(GPT2Config(n_embd=lm_dim, n_head=1, n_layer=1, vocab_size=len(tokenizer),
                                                n_ctx=99, n_positions=99))
    language_model.config.max_new_tokens = 4
    projection = AudioLDM2ProjectionModel(text_encoder_dim=clap_dim, text_encoder_1_dim=t5_dim,
                                          langauge_model_dim=lm_dim)
    vocoder = _audible(SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=64, sampling_rate=16000, upsample_initial_channel=16, upsample_rates=[5, 4, 4, 2],
        upsample_kernel_sizes=[10, 8, 8, 4], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        normalize_before=False,
    )))
    pipe = AudioLDM2Pipeline(vae=vae, text_encoder=clap, text_encoder_2=t5, projection_model=projection,
                             language_model=language_model, tokenizer=tokenizer, tokenizer_2=tokenizer,
                             feature_extractor=ClapFeatureExtractor(feature_size=8, hop_length=7900), unet=unet,
                             scheduler=DDIMScheduler(**AUDIOLDM_SCHEDULER_CONFIG), vocoder=vocoder)
    pipe.save_pretrained(str(path))
    return path
