"""Listening to augmentations: load a clip, augment it with a prompt, keep it in a bank."""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # diffusers is heavy: imported only when AudioLDM is actually used
    from rcmae.augment.audioldm import AudioLDMAugmenter

DEFAULT_AUDIOLDM = "cvssp/audioldm-s-full-v2"


@dataclass
class Clip:
    """A loaded clip with its log-mel, for the audio player and the spectrogram figure."""

    wave: np.ndarray
    sample_rate: int
    logmel: np.ndarray
    hop_length: int


def load_clip(path: str | os.PathLike | None = None, wave: np.ndarray | None = None, sample_rate: int = 16000,
              duration: float | None = 10.0) -> Clip:
    """Load a clip (or take a waveform) and compute its log-mel with ``rcmae.data.features.LogMel``."""
    import torch

    from rcmae.data.audio import load_audio
    from rcmae.data.features import LogMel, LogMelConfig

    if wave is None:
        if path is None:
            raise ValueError("load_clip: pass a path or a waveform")
        wave = load_audio(path, sample_rate=sample_rate, duration=duration)
    cfg = LogMelConfig(sample_rate=sample_rate)
    with torch.no_grad():
        logmel = LogMel(cfg)(torch.as_tensor(np.asarray(wave, dtype=np.float32))).numpy()
    return Clip(np.asarray(wave, dtype=np.float32), sample_rate, logmel, cfg.hop_length)


# ---------------------------------------------------------------- audition page
def audition(clip_path: str | os.PathLike, prompt: str, backend: str = "procedural", seed: int = 0,
             snr_db: float = 5.0, t0: float = 0.5, steps: int = 20, guidance: float = 2.5,
             model: str | None = None, augmenter: AudioLDMAugmenter | None = None) -> dict:
    """Augment one clip with one prompt; returns the original and augmented :class:`Clip` and the settings.

    ``backend="audioldm"`` loads local weights only (``model`` folder or hub cache, never a download);
    missing weights raise the backend's one-line ``FileNotFoundError`` so the page can offer procedural.
    ``augmenter`` reuses an already loaded AudioLDM augmenter.
    """
    from rcmae.data.audio import load_audio

    wave = load_audio(clip_path)
    if backend == "procedural":
        from rcmae.augment.procedural import ProceduralAugmenter

        out = ProceduralAugmenter()(wave, prompt, snr_db=snr_db, seed=seed)
        meta = {"backend": "procedural", "model_id": "", "revision": "", "snr_db": snr_db}
    elif backend == "audioldm":
        import torch

        aug = augmenter if augmenter is not None else load_audioldm(model)
        gen = torch.Generator().manual_seed(seed)
        out = aug(wave, prompt, num_inference_steps=steps, guidance_scale=guidance, t0=t0, generator=gen)
        out = getattr(out, "audio", out)
        meta = {"backend": "audioldm", "model_id": getattr(aug, "model_id", model or ""),
                "revision": getattr(aug, "revision", ""), "steps": steps, "t0": t0, "guidance": guidance}
    else:
        raise ValueError(f"backend: {backend!r} is not known; use 'procedural' or 'audioldm'")
    out = np.asarray(out, dtype=np.float32).reshape(-1)[: wave.size]
    out = np.pad(out, (0, wave.size - out.size))
    # Limit peaks the same way the bank does before writing, so what is heard is what would be kept.
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if peak > 0.999:
        out = out * (0.999 / peak)
    original, augmented = load_clip(wave=wave), load_clip(wave=out)
    return {"original": original, "augmented": augmented, "diff": augmented.logmel - original.logmel,
            "source": str(Path(clip_path).resolve()), "prompt": prompt, "seed": seed, **meta}


def load_audioldm(model: str | None = None, device: str | None = None) -> AudioLDMAugmenter:
    """The AudioLDM augmenter from local weights only (a folder or the Hugging Face cache; no download)."""
    from rcmae.augment.audioldm import AudioLDMAugmenter

    return AudioLDMAugmenter.from_pretrained(model or DEFAULT_AUDIOLDM, device=device, allow_download=False)


def keep_audition(result: dict, bank: str | os.PathLike) -> Path:
    """Add an auditioned clip to a bank: ``audio/<type>/<stem>__aud<seed>_<hash>.wav`` and a manifest row.

    The row has the columns of ``rcmae augment`` (``rcmae.augment.bank.MANIFEST_COLUMNS``), so
    ``read_manifest`` and pretraining with ``--aug <bank>`` treat kept auditions like any bank clip.
    """
    import csv
    import io

    from rcmae.augment.bank import MANIFEST_COLUMNS, sha256_file
    from rcmae.data.audio import write_wav
    from rcmae.files import atomic_write_text

    bank = Path(bank)
    src = Path(result["source"])
    wave = result["augmented"].wave
    key = f"{result['backend']}|{result['prompt']}"
    tag = f"{zlib.crc32(key.encode()):08x}"
    out = bank / "audio" / src.parent.parent.name / f"{src.stem}__aud{result['seed']}_{tag}.wav"
    write_wav(out, wave, result["augmented"].sample_rate)
    proc = result["backend"] == "procedural"
    row = {"source": str(src), "output": out.relative_to(bank).as_posix(), "prompt": result["prompt"],
           "backend": result["backend"], "model_id": result.get("model_id", ""),
           "revision": result.get("revision", ""), "seed": result["seed"],
           "steps": "" if proc else result.get("steps", ""), "t0": "" if proc else result.get("t0", ""),
           "guidance": "" if proc else result.get("guidance", ""),
           "snr_db": result.get("snr_db", "") if proc else "",
           "sha256": sha256_file(out)}
    manifest = bank / "manifest.csv"
    text = manifest.read_text(encoding="utf-8") if manifest.is_file() else ""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if not text:
        writer.writerow(MANIFEST_COLUMNS)
    writer.writerow([row[c] for c in MANIFEST_COLUMNS])
    atomic_write_text(manifest, text + buffer.getvalue())
    return out
