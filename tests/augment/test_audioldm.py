"""AudioLDM audio-to-audio backend on a tiny random pipeline saved and loaded through the real path."""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import write_tiny_dcase

from rcmae.augment.audioldm import (
    DEFAULT_MODEL_ID,
    AudioLDMAugmenter,
    AudioLDMInputError,
    AudioLDMWeightsError,
    audioldm_logmel,
    start_index,
)
from rcmae.augment.audioldm_testing import build_tiny_audioldm2_pipeline, build_tiny_pipeline

SR = 16000
PROMPT = "rhythmic buzzing of printing presses in a noisy print shop"


@pytest.fixture(scope="module")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny_audioldm") / "pipe")


@pytest.fixture(scope="module")
def augmenter(tiny_pipeline_dir) -> AudioLDMAugmenter:
    return AudioLDMAugmenter.from_pretrained(tiny_pipeline_dir, device="cpu")


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(1.5 * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def _reference_logmel(audio: np.ndarray, multiple: int) -> np.ndarray:
    """AudioLDM's preprocessing written with librosa alone: [T, 64] natural-log magnitude mel."""
    y = audio.astype(np.float64) - audio.mean()
    y = 0.5 * y / (np.abs(y).max() + 1e-8)
    # scipy's "hann" window is periodic (fftbins=True), as AudioLDM's torch.hann_window.
    mag = np.abs(librosa.stft(y, n_fft=1024, hop_length=160, win_length=1024, window="hann", center=True,
                              pad_mode="reflect"))
    mel = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=64, fmin=0.0, fmax=8000.0) @ mag
    logmel = np.log(np.maximum(mel, 1e-5)).T
    pad = (-logmel.shape[0]) % multiple
    return np.concatenate([logmel, np.full((pad, 64), np.log(1e-5))])


class _UNetCalls:
    """Records UNet forward calls: batch sizes, timesteps and the first input (the denoising steps actually run)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.batches: list[int] = []
        self.timesteps: list[int] = []
        self.first_input: torch.Tensor | None = None
        self.handle = unet.register_forward_pre_hook(self._record)

    def _record(self, _module, args) -> None:
        if self.first_input is None:
            self.first_input = args[0].clone()
        self.batches.append(args[0].shape[0])
        self.timesteps.append(int(args[1]))

    def __enter__(self) -> _UNetCalls:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def test_logmel_matches_librosa_reference(clip):
    for n, multiple in [(clip.size, 4), (16000 * 10, 32), (12345, 1)]:
        audio = np.resize(clip, n)
        ours = audioldm_logmel(audio, frame_multiple=multiple).numpy()
        ref = _reference_logmel(audio, multiple)
        assert ours.shape == ref.shape
        assert np.allclose(ours, ref, atol=2e-4)
    # 10 s at hop 160 is 1001 frames, padded to 1024 for the real model (as AudioLDM does).
    assert audioldm_logmel(np.resize(clip, 160000), frame_multiple=32).shape == (1024, 64)


@pytest.mark.parametrize(("steps", "t0", "expected"), [
    (10, 0.5, 5), (10, 0.0, 10), (10, 1.0, 0), (50, 0.5, 25), (25, 0.3, 18), (50, 0.58, 21), (1, 0.99, 1),
    (7, 0.2, 6),
])
def test_start_index_hand_table(steps, t0, expected):
    assert start_index(steps, t0) == expected


def test_start_timestep_depends_on_steps_with_leading_spacing(augmenter):
    assert augmenter.pipe.scheduler.config.timestep_spacing == "leading"
    x0 = torch.zeros(1, 4, 8, 32)
    # leading spacing + steps_offset 1: timesteps are range(0, 1000, 1000 // S)[::-1] + 1.
    for steps, t0, t_start in [(10, 0.5, 401), (50, 0.5, 481), (20, 0.25, 201), (10, 1.0, 901)]:
        _, _, got, timesteps = augmenter.noised_latent(x0, steps, t0, torch.Generator().manual_seed(0))
        assert got == t_start
        assert len(timesteps) == math.floor(steps * t0 + 1e-9)


def test_output_length_finite_and_seeded(augmenter, clip):
    kwargs = {"prompt": PROMPT, "num_inference_steps": 6, "t0": 0.5}
    a = augmenter(clip, generator=torch.Generator().manual_seed(1), **kwargs)
    b = augmenter(clip, generator=torch.Generator().manual_seed(1), **kwargs)
    c = augmenter(clip, generator=torch.Generator().manual_seed(2), **kwargs)
    assert a.shape == clip.shape and a.dtype == np.float32
    assert np.all(np.isfinite(a)) and np.abs(a).max() > 1e-3  # the tiny vocoder is audible on purpose
    assert np.array_equal(a, b)
    assert not np.allclose(a, c, rtol=0, atol=0)
    # An odd length comes back exactly; audio_length_in_s sets it explicitly.
    odd = augmenter(clip[:12345], generator=torch.Generator().manual_seed(1), **kwargs)
    assert odd.shape == (12345,)
    longer = augmenter(clip, audio_length_in_s=2.0, generator=torch.Generator().manual_seed(1), **kwargs)
    assert longer.shape == (32000,) and np.all(np.isfinite(longer))


def test_t0_zero_is_a_vae_vocoder_round_trip(augmenter, clip):
    pipe = augmenter.pipe
    with _UNetCalls(pipe.unet) as calls:
        out = augmenter(clip, PROMPT, num_inference_steps=10, t0=0.0, generator=torch.Generator().manual_seed(3),
                        return_intermediates=True)
    assert calls.batches == [] and out.timesteps == [] and out.t_start is None
    # The round trip done by hand with the pipeline's modules and the librosa reference front end.
    with torch.no_grad():
        mel = torch.from_numpy(_reference_logmel(clip, augmenter.frame_multiple)).float()[None, None]
        posterior = pipe.vae.encode(mel).latent_dist
        x0 = posterior.sample(generator=torch.Generator().manual_seed(3)) * pipe.vae.config.scaling_factor
        decoded = pipe.vae.decode(x0 / pipe.vae.config.scaling_factor).sample
        wave = pipe.vocoder(decoded.squeeze(1))[0].numpy()[: clip.size]
    assert torch.allclose(out.x0, x0, atol=1e-4)
    scale = np.abs(wave).max()
    assert out.audio.shape == clip.shape
    assert np.allclose(out.audio, wave, rtol=0, atol=1e-3 * scale)


def test_noised_latent_is_equation_1(augmenter, clip):
    pipe = augmenter.pipe
    steps, t0, seed = 10, 0.5, 4
    with _UNetCalls(pipe.unet) as calls:
        out = augmenter(clip, PROMPT, num_inference_steps=steps, t0=t0, guidance_scale=2.5,
                        generator=torch.Generator().manual_seed(seed), return_intermediates=True)
    assert out.t_start == 401
    assert out.timesteps == [401, 301, 201, 101, 1]
    # One UNet call per denoising step, the guided and unguided halves batched together.
    assert calls.batches == [2] * 5 and calls.timesteps == out.timesteps
    # The loop starts from the noised latent (DDIM's scale_model_input is the identity).
    assert torch.equal(calls.first_input, torch.cat([out.x_start] * 2))
    # Independent draw of x0 then eps from the same seed, and Eq. 1 with abar from the scheduler.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        mel = torch.from_numpy(_reference_logmel(clip, augmenter.frame_multiple)).float()[None, None]
        x0 = pipe.vae.encode(mel).latent_dist.sample(generator=gen) * pipe.vae.config.scaling_factor
    eps = torch.randn(x0.shape, generator=gen)
    abar = float(pipe.scheduler.alphas_cumprod[401])
    betas = torch.linspace(0.0015 ** 0.5, 0.0195 ** 0.5, 1000, dtype=torch.float64) ** 2
    assert abs(abar - float(torch.prod(1 - betas[:402]))) < 1e-5  # abar_t = prod_{s<=t} (1 - beta_s)
    expected = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * eps
    assert torch.allclose(out.x0, x0, atol=1e-4)
    assert torch.allclose(out.noise, eps)
    assert torch.allclose(out.x_start, expected, atol=1e-4)


def test_guidance_and_prompt_change_the_output(augmenter, clip):
    kwargs = {"num_inference_steps": 4, "t0": 1.0}
    with _UNetCalls(augmenter.pipe.unet) as calls:
        plain = augmenter(clip, PROMPT, guidance_scale=1.0, generator=torch.Generator().manual_seed(5), **kwargs)
    assert calls.batches == [1] * 4  # guidance <= 1: no unconditional branch, as in diffusers
    guided = augmenter(clip, PROMPT, guidance_scale=3.0, generator=torch.Generator().manual_seed(5), **kwargs)
    other = augmenter(clip, "low rumble of rock crushers", guidance_scale=3.0,
                      generator=torch.Generator().manual_seed(5), **kwargs)
    assert not np.array_equal(plain, guided)
    assert not np.array_equal(guided, other)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"audio": np.zeros((2, 100), np.float32)}, "audio"),
    ({"audio": np.array([0.0, np.nan], np.float32)}, "audio"),
    ({"audio": np.zeros(0, np.float32)}, "audio"),
    ({"prompt": "  "}, "prompt"),
    ({"negative_prompt": 3}, "negative_prompt"),
    ({"num_inference_steps": 0}, "num_inference_steps"),
    ({"guidance_scale": float("nan")}, "guidance_scale"),
    ({"t0": 1.5}, "t0"),
    ({"audio_length_in_s": -1.0}, "audio_length_in_s"),
])
def test_bad_inputs_fail_with_one_line(augmenter, clip, kwargs, field):
    args = {"audio": clip, "prompt": PROMPT, **kwargs}
    with pytest.raises(AudioLDMInputError) as err:
        augmenter(**args)
    message = str(err.value)
    assert message.startswith(f"{field}:") and "\n" not in message


def test_missing_weights_say_which_model_and_how(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AudioLDMWeightsError) as err:
        AudioLDMAugmenter.from_pretrained(empty)
    for needle in (DEFAULT_MODEL_ID, "huggingface-cli download", "--model", "--allow-download", "model_index.json"):
        assert needle in str(err.value)
    # A hub id that is not in the (empty) cache, offline (conftest sets HF_HUB_OFFLINE=1).
    with pytest.raises(FileNotFoundError) as err:
        AudioLDMAugmenter.from_pretrained("nobody/not-an-audioldm", cache_dir=tmp_path / "hub")
    message = str(err.value)
    assert "\n" not in message and "huggingface-cli download nobody/not-an-audioldm" in message
    assert "--allow-download" in message and DEFAULT_MODEL_ID in message


def test_loads_from_hf_cache_snapshot_with_revision(tiny_pipeline_dir, tmp_path):
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--cvssp--audioldm-s-full-v2"
    shutil.copytree(tiny_pipeline_dir, repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    aug = AudioLDMAugmenter.from_pretrained(cache_dir=tmp_path / "hub", device="cpu")
    assert aug.model_id == DEFAULT_MODEL_ID and aug.revision == sha
    assert aug.dtype == torch.float32
    assert AudioLDMAugmenter.from_pretrained(tiny_pipeline_dir).revision == "local"


@pytest.mark.filterwarnings("ignore:.*past_key_values.*:FutureWarning")  # inside diffusers AudioLDM 2 + GPT-2
def test_audioldm2_pipeline_runs_the_same_loop(tmp_path, clip):
    folder = build_tiny_audioldm2_pipeline(tmp_path / "tiny2")
    with pytest.raises(AudioLDMInputError, match="names AudioLDM2Pipeline, asked for AudioLDMPipeline"):
        AudioLDMAugmenter.from_pretrained(folder, pipeline_class="AudioLDMPipeline")
    aug = AudioLDMAugmenter.from_pretrained(folder, device="cpu")  # class read from model_index.json
    assert aug.is_audioldm2
    seen = []
    handle = aug.pipe.unet.register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append((int(args[1]), kwargs["encoder_hidden_states"].shape[0])),
        with_kwargs=True)
    try:
        a = aug(clip, PROMPT, num_inference_steps=6, t0=0.5, generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    b = aug(clip, PROMPT, num_inference_steps=6, t0=0.5, generator=torch.Generator().manual_seed(0))
    assert a.shape == clip.shape and np.all(np.isfinite(a)) and np.array_equal(a, b)
    # leading spacing, S = 6: timesteps 831, 665, 499, 333, 167, 1; t0 = 0.5 runs the last three, guided (batch 2).
    assert seen == [(333, 2), (167, 2), (1, 2)]
    out = aug(clip, PROMPT, num_inference_steps=6, t0=0.0, generator=torch.Generator().manual_seed(0),
              return_intermediates=True)
    with torch.no_grad():
        decoded = aug.pipe.vae.decode(out.x0 / aug.pipe.vae.config.scaling_factor).sample
        wave = aug.pipe.vocoder(decoded.squeeze(1))[0].numpy()[: clip.size]
    assert np.allclose(out.audio, wave, rtol=0, atol=1e-3 * np.abs(wave).max())


def test_cli_augment_audioldm_end_to_end(tiny_pipeline_dir, augmenter, tmp_path, capsys):
    from rcmae.augment.bank import read_manifest
    from rcmae.cli import main
    from rcmae.data.audio import load_audio

    data = write_tiny_dcase(tmp_path / "data", seconds=2.0)
    bank = tmp_path / "bank"
    argv = ["augment", "--data", str(data), "--out", str(bank), "--backend", "audioldm", "--model",
            str(tiny_pipeline_dir), "--steps", "3:5", "--t0", "0.5", "--guidance", "2.5", "--limit", "2",
            "--seed", "7", "--device", "cpu"]
    assert main(argv) == 0
    manifest = read_manifest(bank)
    assert len(manifest) == 2
    for row in manifest.itertuples():
        assert (row.backend, row.model_id, row.revision) == ("audioldm", str(tiny_pipeline_dir), "local")
        assert 3 <= int(row.steps) <= 5 and float(row.t0) == 0.5 and float(row.guidance) == 2.5
        wav = bank / row.output
        y, sr = sf.read(wav, dtype="float32")
        assert sr == 16000 and y.shape == (32000,)
        assert hashlib.sha256(wav.read_bytes()).hexdigest() == row.sha256
        # The manifest is enough to redo the clip: same seed, steps and prompt give the same samples.
        again = augmenter(load_audio(row.source, duration=None), row.prompt, num_inference_steps=int(row.steps),
                          guidance_scale=2.5, t0=0.5, generator=torch.Generator().manual_seed(int(row.seed)))
        again = again * min(1.0, 0.999 / np.abs(again).max())
        assert np.abs(y).max() > 1e-3 and np.allclose(y, again, rtol=0, atol=2 / 32768)
    capsys.readouterr()
    assert main(argv) == 0  # a re-run resumes: nothing is written twice
    assert "0 written, 2 already done" in capsys.readouterr().out


def test_refuses_a_vocoder_that_is_not_16khz_64_bins():
    from types import SimpleNamespace

    def fake(rate: int, upsample: list[int], bins: int) -> SimpleNamespace:
        config = SimpleNamespace(sampling_rate=rate, upsample_rates=upsample, model_in_dim=bins)
        vocoder = SimpleNamespace(config=config)
        return SimpleNamespace(device=torch.device("cpu"), unet=SimpleNamespace(dtype=torch.float32), vocoder=vocoder)

    with pytest.raises(AudioLDMInputError, match="48000 Hz"):
        AudioLDMAugmenter(fake(48000, [6, 5, 4, 4, 4], 64), model_id="x")
    with pytest.raises(AudioLDMInputError, match="256 mel bins"):
        AudioLDMAugmenter(fake(16000, [5, 4, 2, 2, 2], 256), model_id="x")
    assert AudioLDMAugmenter(fake(16000, [5, 4, 2, 2, 2], 64), model_id="x").model_id == "x"
