"""AudioLDM audio-to-audio augmentation: the paper's Equation 1 built from diffusers' pipeline parts.

A clip's log-mel (AudioLDM's own preprocessing) is encoded by the VAE to ``x0``, noised to the
start step of an S-step DDIM schedule, ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` (Eq. 1),
then denoised from there under a text prompt with classifier-free guidance; the VAE decoder and
the HiFi-GAN vocoder give back a waveform that is trimmed to the input's length.

Which step is the start: ``scheduler.set_timesteps(S)`` gives S timesteps, highest noise first;
the loop runs the last ``floor(S * t0)`` of them, i.e. ``timesteps[S - floor(S * t0):]``, and the
clean latent is noised to the first of those. With the real configuration
(``timestep_spacing="leading"``, ``steps_offset=1``, 1000 training steps) the timesteps are
``range(0, 1000, 1000 // S)[::-1] + 1``, so the start step for a given ``t0`` depends on S:
t0 = 0.5 starts at t = 401 for S = 10 and at t = 481 for S = 50 (t = 1000 * t0 only for
``"trailing"`` spacing). ``t0 = 0`` runs no denoising step: the output is the VAE and vocoder
round trip of the input. ``t0 = 1`` starts from (almost) pure noise at the first timestep.

diffusers keeps ``AudioLDMPipeline`` under ``pipelines/deprecated`` (last supported 0.33.1); it is
tested here with diffusers 0.42.1 and transformers 5.24 (see requirements.txt).
"""

from __future__ import annotations

import math
import numbers
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

DEFAULT_MODEL_ID = "cvssp/audioldm-s-full-v2"
SAMPLE_RATE = 16000
N_FFT = 1024
HOP_LENGTH = 160
N_MELS = 64
FMAX = 8000.0
LOG_FLOOR = 1e-5
PROMPT_MAX_LENGTH = 77  # identical masked CLAP embeddings to the checkpoint's 512, ~6x cheaper on CPU
PIPELINE_CLASSES = ("AudioLDMPipeline", "AudioLDM2Pipeline")

_SNAPSHOT_RE = re.compile(r"^[0-9a-f]{40}$")


class AudioLDMWeightsError(FileNotFoundError):
    """The AudioLDM weights are not on this machine (or the folder is not a saved pipeline)."""


class AudioLDMInputError(ValueError):
    """A bad argument to :class:`AudioLDMAugmenter` (one line naming the field and the fix)."""


class AudioToAudioOutput(NamedTuple):
    """What ``AudioLDMAugmenter.__call__(..., return_intermediates=True)`` returns.

    Attributes:
        audio: the augmented waveform, float32 ``[N]``.
        x0: the clean VAE latent (already times the scaling factor), ``[1, C, T', F']``.
        noise: the Gaussian ``eps`` of Equation 1 (same shape), or ``None`` when t0 = 0.
        x_start: the noised latent the loop starts from (``x0`` when t0 = 0).
        t_start: the timestep ``x_start`` was noised to, or ``None`` when t0 = 0.
        timesteps: the timesteps the denoising loop ran, highest first (empty when t0 = 0).
    """

    audio: np.ndarray
    x0: torch.Tensor
    noise: torch.Tensor | None
    x_start: torch.Tensor
    t_start: int | None
    timesteps: list[int]


def start_index(num_inference_steps: int, t0: float) -> int:
    """Index into the S scheduler timesteps where denoising starts: ``S - floor(S * t0)``.

    A relative tolerance of 1e-9 keeps binary rounding from dropping a step (50 * 0.58 is
    28.999999999999996 in floating point, and means 29 steps).
    """
    steps = int(num_inference_steps)
    return steps - int(math.floor(steps * float(t0) + 1e-9))


def audioldm_logmel(audio: np.ndarray, frame_multiple: int = 1) -> torch.Tensor:
    """AudioLDM's log-mel of a 16 kHz clip, ``[T, 64]`` float32 (time first, as the VAE takes it).

    Mean-subtract, divide by ``max|x| + 1e-8``, times 0.5; STFT with n_fft = win = 1024, hop 160,
    periodic Hann, centred with reflect padding; magnitude; Slaney mel, 64 bins, 0-8000 Hz; natural
    log of ``clamp(x, 1e-5)``. Frames are padded with ``ln(1e-5)`` up to a multiple of ``frame_multiple``.

    Args:
        audio: mono waveform ``[N]`` at 16 kHz.
        frame_multiple: the frame count is padded up to a multiple of this (the model's downsampling).
    """
    import librosa

    x = torch.as_tensor(np.asarray(audio, dtype=np.float32))
    x = x - x.mean()
    x = 0.5 * x / (x.abs().max() + 1e-8)
    window = torch.hann_window(N_FFT, periodic=True)
    spec = torch.stft(x, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=N_FFT, window=window, center=True,
                      pad_mode="reflect", return_complex=True).abs()
    mel_basis = torch.from_numpy(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=0.0,
                                                     fmax=FMAX, htk=False, norm="slaney"))
    logmel = torch.log(torch.clamp(mel_basis @ spec, min=LOG_FLOOR)).T.contiguous()
    pad = (-logmel.shape[0]) % max(int(frame_multiple), 1)
    if pad:
        logmel = torch.cat([logmel, torch.full((pad, N_MELS), math.log(LOG_FLOOR))], dim=0)
    return logmel


def _revision_of(folder: Path) -> str:
    """The hub commit hash when ``folder`` is an HF-cache snapshot (``.../snapshots/<sha>``), else "local"."""
    for part in (folder.name, folder.resolve().name):
        if _SNAPSHOT_RE.match(part) and folder.resolve().parent.name == "snapshots":
            return part
    return "local"


def _missing_weights_message(path_or_id: str, why: str) -> str:
    """One line: what is missing, which model id is expected, and the three ways to get it."""
    is_folder = "/" in path_or_id and (path_or_id.startswith((".", "/", "~")) or Path(path_or_id).exists())
    model_id = DEFAULT_MODEL_ID if is_folder else path_or_id
    return (
        f"AudioLDM weights {path_or_id!r} not found ({why}); expected the diffusers pipeline {model_id!r} "
        f"(rcmae's default is {DEFAULT_MODEL_ID}; the paper names no checkpoint): run "
        f"`huggingface-cli download {model_id}` (or `hf download "
        f"{model_id}`) on a machine with internet and copy its HF cache (~/.cache/huggingface/hub) here, or pass "
        "the downloaded folder with --model, or allow the download with --allow-download"
    )


class AudioLDMAugmenter:
    """Text-prompted audio-to-audio augmentation with a diffusers AudioLDM pipeline (paper's Eq. 1).

    Build it with :meth:`from_pretrained`; call it on one 16 kHz clip at a time. The pipeline's
    own parts do the work (VAE, CLAP prompt encoder, UNet, DDIM scheduler, HiFi-GAN vocoder);
    this class adds the encode-and-noise start that diffusers' text-to-audio ``__call__`` lacks.

    An ``AudioLDM2Pipeline`` folder (detected from ``model_index.json``) runs the same loop. What
    differs there: prompts are encoded by CLAP + T5 and a GPT-2 language model
    (``pipe.encode_prompt``), and the UNet takes them as cross-attention states
    (``encoder_hidden_states`` and ``encoder_hidden_states_1``) instead of a class embedding; the
    mel front end (16 kHz, 64 bins, hop 160) is the same for the 16 kHz AudioLDM 2 checkpoints.

    Attributes:
        pipe: the loaded diffusers pipeline.
        model_id: what was asked for (a hub id or a folder).
        revision: the hub commit hash of the snapshot used, or "local" for a plain folder.
        device: the torch device the pipeline runs on.
        dtype: the weights' dtype (float16 on CUDA, float32 on CPU unless asked otherwise).
    """

    def __init__(self, pipe, model_id: str = DEFAULT_MODEL_ID, revision: str = "local") -> None:
        self.pipe = pipe
        self.model_id = model_id
        self.revision = revision
        self.device = pipe.device
        self.dtype = pipe.unet.dtype
        self.is_audioldm2 = type(pipe).__name__ == "AudioLDM2Pipeline"
        vocoder_cfg = pipe.vocoder.config
        if int(vocoder_cfg.sampling_rate) != SAMPLE_RATE or int(np.prod(vocoder_cfg.upsample_rates)) != HOP_LENGTH:
            raise AudioLDMInputError(
                f"{model_id}: vocoder runs at {vocoder_cfg.sampling_rate} Hz with upsampling "
                f"{int(np.prod(vocoder_cfg.upsample_rates))}; this backend needs a 16 kHz, hop-160 AudioLDM checkpoint"
            )
        if int(vocoder_cfg.model_in_dim) != N_MELS:
            raise AudioLDMInputError(f"{model_id}: vocoder takes {vocoder_cfg.model_in_dim} mel bins; this backend "
                                     f"computes {N_MELS} (use a 64-bin AudioLDM checkpoint)")

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path = DEFAULT_MODEL_ID,
        device: str | torch.device | None = None,
        allow_download: bool = False,
        torch_dtype: torch.dtype | None = None,
        pipeline_class: str | None = None,
        cache_dir: str | Path | None = None,
    ) -> AudioLDMAugmenter:
        """Load a pipeline from a folder or the HF cache; never downloads unless ``allow_download``.

        Args:
            path_or_id: a folder written by ``save_pretrained`` / ``huggingface-cli download``, or a hub id
                (default ``cvssp/audioldm-s-full-v2``) looked up in the local HF cache.
            device: e.g. ``"cuda:0"``; default CUDA when available, else CPU.
            allow_download: fetch missing weights from the hub (``local_files_only=False``).
            torch_dtype: default float16 on CUDA, float32 on CPU.
            pipeline_class: ``"AudioLDMPipeline"``, ``"AudioLDM2Pipeline"``, or None (default): the class
                named in the folder's ``model_index.json``.
            cache_dir: the HF hub cache to look in (default ``$HF_HUB_CACHE``, ``~/.cache/huggingface/hub``).

        Raises:
            AudioLDMWeightsError: the weights are not here; the message says which id and how to get it.
        """
        import json

        import diffusers
        from diffusers.utils import is_accelerate_available

        if pipeline_class is not None and pipeline_class not in PIPELINE_CLASSES:
            raise AudioLDMInputError(f"pipeline_class={pipeline_class!r}: use one of {', '.join(PIPELINE_CLASSES)}")
        device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        if torch_dtype is None:
            torch_dtype = torch.float16 if device.type == "cuda" else torch.float32
        name = str(path_or_id)
        local = Path(name).expanduser()
        if local.exists():
            if not (local / "model_index.json").is_file():
                raise AudioLDMWeightsError(_missing_weights_message(name, f"{local} has no model_index.json"))
            folder = local
        else:
            try:
                # download() resolves the HF-cache snapshot (or fetches it) without building any model.
                fetcher = getattr(diffusers, pipeline_class or "AudioLDMPipeline")
                folder = Path(fetcher.download(name, local_files_only=not allow_download, cache_dir=cache_dir))
            except (OSError, ValueError) as err:
                why = "not in the local HF cache" if not allow_download else f"download failed: {err}"
                raise AudioLDMWeightsError(_missing_weights_message(name, why.splitlines()[0])) from err
        saved_class = json.loads((folder / "model_index.json").read_text()).get("_class_name")
        if saved_class not in PIPELINE_CLASSES or pipeline_class not in (None, saved_class):
            raise AudioLDMInputError(
                f"{folder / 'model_index.json'}: names {saved_class}, asked for "
                f"{pipeline_class or 'an AudioLDM pipeline'}; "
                f"pass an AudioLDM folder and pipeline_class one of {', '.join(PIPELINE_CLASSES)} or None (auto)"
            )
        klass = getattr(diffusers, saved_class)
        try:
            # Without accelerate, diffusers falls back to a plain load anyway; asking for it keeps the log quiet.
            pipe = klass.from_pretrained(str(folder), local_files_only=True, dtype=torch_dtype,
                                         low_cpu_mem_usage=is_accelerate_available())
        except (OSError, ValueError) as err:
            raise AudioLDMWeightsError(_missing_weights_message(name, str(err).splitlines()[0])) from err
        pipe = pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, model_id=name, revision=_revision_of(folder))

    # ------------------------------------------------------------------ the parts
    @property
    def frame_multiple(self) -> int:
        """Mel frames must be a multiple of this: VAE downsampling x UNet downsampling (32 for the real model)."""
        vae_factor = 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)
        unet_factor = 2 ** (len(self.pipe.unet.config.block_out_channels) - 1)
        return vae_factor * unet_factor

    def logmel(self, audio: np.ndarray) -> torch.Tensor:
        """The VAE input for one clip: ``[1, 1, T, 64]`` on the pipeline's device and dtype."""
        mel = audioldm_logmel(audio, frame_multiple=self.frame_multiple)
        return mel[None, None].to(device=self.device, dtype=self.dtype)

    @torch.no_grad()
    def encode(self, audio: np.ndarray, generator: torch.Generator | None = None) -> torch.Tensor:
        """Clean latent ``x0 = VAE.encode(logmel).latent_dist.sample(generator) * scaling_factor``."""
        posterior = self.pipe.vae.encode(self.logmel(audio)).latent_dist
        return posterior.sample(generator=generator) * self.pipe.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, length: int) -> np.ndarray:
        """VAE decode, vocoder, then trim (or zero-pad) to ``length`` samples; float32 numpy ``[length]``."""
        # AudioLDMPipeline.decode_latents, written out because AudioLDM2Pipeline has no such method.
        mel = self.pipe.vae.decode(latents / self.pipe.vae.config.scaling_factor).sample
        wave = self.pipe.mel_spectrogram_to_waveform(mel)[0].numpy().astype(np.float32)
        if wave.shape[0] < length:
            wave = np.pad(wave, (0, length - wave.shape[0]))
        return wave[:length]

    def noised_latent(
        self,
        x0: torch.Tensor,
        num_inference_steps: int,
        t0: float,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, int | None, list[int]]:
        """Equation 1: noise ``x0`` to the start step of an S-step schedule.

        Calls ``scheduler.set_timesteps(S)`` (the loop that follows relies on that state).

        Returns:
            ``(x_start, eps, t_start, timesteps)``: ``x_start = scheduler.add_noise(x0, eps, t_start)``,
            and the timesteps the loop must run; ``(x0, None, None, [])`` when ``floor(S * t0) = 0``.
        """
        from diffusers.utils.torch_utils import randn_tensor

        scheduler = self.pipe.scheduler
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        timesteps = scheduler.timesteps[start_index(num_inference_steps, t0):]
        if len(timesteps) == 0:
            return x0, None, None, []
        eps = randn_tensor(x0.shape, generator=generator, device=self.device, dtype=x0.dtype)
        t_start = timesteps[:1]
        x_start = scheduler.add_noise(x0, eps, t_start)
        return x_start, eps, int(t_start[0]), [int(t) for t in timesteps]

    @torch.no_grad()
    def encode_prompt(self, prompt: str, negative_prompt: str | None, guidance: bool) -> dict:
        """UNet conditioning keywords for one prompt (negative/empty prompt first when ``guidance``)."""
        pipe = self.pipe
        if self.is_audioldm2:
            embeds, mask, generated = pipe.encode_prompt(prompt, self.device, 1, guidance,
                                                         negative_prompt=negative_prompt)
            return {"encoder_hidden_states": generated, "encoder_hidden_states_1": embeds,
                    "encoder_attention_mask_1": mask}
        texts = ([negative_prompt or ""] if guidance else []) + [prompt]
        tokens = pipe.tokenizer(texts, padding="max_length", max_length=PROMPT_MAX_LENGTH, truncation=True,
                                return_tensors="pt")
        out = pipe.text_encoder(tokens.input_ids.to(self.device), attention_mask=tokens.attention_mask.to(self.device))
        # AudioLDM conditions on the L2-normalised CLAP text embedding (the pipeline's _encode_prompt does the same).
        embeds = torch.nn.functional.normalize(out.text_embeds, dim=-1).to(self.dtype)
        return {"encoder_hidden_states": None, "class_labels": embeds}

    # ------------------------------------------------------------------ the call
    def check_inputs(
        self,
        audio: np.ndarray,
        prompt: str,
        negative_prompt: str | None,
        num_inference_steps: int,
        guidance_scale: float,
        t0: float,
        audio_length_in_s: float | None,
    ) -> None:
        """Fail early with one line naming the bad argument (diffusers' ``check_inputs`` habit)."""
        if not isinstance(audio, np.ndarray) or audio.ndim != 1 or audio.size == 0:
            shape = getattr(audio, "shape", type(audio).__name__)
            raise AudioLDMInputError(f"audio: expected a non-empty 1-D numpy waveform at 16 kHz, got {shape}")
        if not np.issubdtype(audio.dtype, np.floating) or not np.all(np.isfinite(audio)):
            raise AudioLDMInputError("audio: expected finite float samples (load it with rcmae.data.audio.load_audio)")
        if not isinstance(prompt, str) or not prompt.strip():
            raise AudioLDMInputError(f"prompt: expected a non-empty string, got {prompt!r}")
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            kind = type(negative_prompt).__name__
            raise AudioLDMInputError(f"negative_prompt: expected a string or None, got {kind}")
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, numbers.Integral) \
                or num_inference_steps < 1:
            raise AudioLDMInputError(f"num_inference_steps: expected an integer >= 1, got {num_inference_steps!r}")
        if not isinstance(guidance_scale, numbers.Real) or not math.isfinite(guidance_scale) or guidance_scale < 0:
            raise AudioLDMInputError(f"guidance_scale: expected a finite number >= 0, got {guidance_scale!r}")
        if not isinstance(t0, numbers.Real) or not 0.0 <= float(t0) <= 1.0:
            raise AudioLDMInputError(f"t0: expected a fraction in [0, 1] of the steps to re-noise, got {t0!r}")
        if audio_length_in_s is not None and (not isinstance(audio_length_in_s, numbers.Real)
                                              or not audio_length_in_s * SAMPLE_RATE >= 1):
            raise AudioLDMInputError(f"audio_length_in_s: expected a positive number of seconds or None, "
                                     f"got {audio_length_in_s!r}")

    @torch.no_grad()
    def __call__(
        self,
        audio: np.ndarray,
        prompt: str,
        negative_prompt: str | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 2.5,
        t0: float = 0.5,
        generator: torch.Generator | None = None,
        audio_length_in_s: float | None = None,
        return_intermediates: bool = False,
    ) -> np.ndarray | AudioToAudioOutput:
        """Augment one 16 kHz clip under ``prompt`` (paper's Eq. 1, then guided DDIM denoising).

        Args:
            audio: mono waveform ``[N]`` at 16 kHz.
            prompt: the text the clip is steered towards (e.g. a factory-noise description).
            negative_prompt: the unconditional branch of classifier-free guidance (default the empty prompt).
            num_inference_steps: S, the length of the DDIM schedule (the paper draws S from 10..50 per clip).
            guidance_scale: classifier-free guidance weight; guidance runs when it is > 1 (as in diffusers).
            t0: fraction of the S steps that are re-noised and denoised: the loop runs ``floor(S * t0)``
                steps from ``timesteps[S - floor(S * t0)]``; with "leading" spacing that timestep
                depends on S (see the module docstring). 0 = VAE/vocoder round trip, no denoising step.
            generator: drives the VAE posterior sample and ``eps``; a fixed seed gives the same output.
            audio_length_in_s: output length; the clip is cropped/zero-padded to it first. Default: the input's.
            return_intermediates: also return the latents and timesteps (an :class:`AudioToAudioOutput`).

        Returns:
            float32 waveform ``[N]`` (or ``[round(audio_length_in_s * 16000)]``), or an
            :class:`AudioToAudioOutput` when ``return_intermediates``.
        """
        self.check_inputs(audio, prompt, negative_prompt, num_inference_steps, guidance_scale, t0, audio_length_in_s)
        length = audio.shape[0] if audio_length_in_s is None else int(round(audio_length_in_s * SAMPLE_RATE))
        clip = np.zeros(length, dtype=np.float32)
        clip[: min(length, audio.shape[0])] = audio[:length]

        x0 = self.encode(clip, generator)
        latents, eps, t_start, timesteps = self.noised_latent(x0, int(num_inference_steps), float(t0), generator)
        x_start = latents
        if timesteps:
            guidance = guidance_scale > 1.0
            cond = self.encode_prompt(prompt, negative_prompt, guidance)
            scheduler = self.pipe.scheduler
            # eta = 0 (deterministic DDIM): the generator only draws the posterior sample and eps.
            step_kwargs = self.pipe.prepare_extra_step_kwargs(generator, 0.0)
            for t in timesteps:
                model_in = torch.cat([latents] * 2) if guidance else latents
                model_in = scheduler.scale_model_input(model_in, t)
                noise_pred = self.pipe.unet(model_in, t, **cond).sample
                if guidance:
                    uncond, text = noise_pred.chunk(2)
                    noise_pred = uncond + guidance_scale * (text - uncond)
                latents = scheduler.step(noise_pred, t, latents, **step_kwargs).prev_sample
        wave = self.decode(latents, length)
        if return_intermediates:
            return AudioToAudioOutput(wave, x0, eps, x_start, t_start, timesteps)
        return wave
