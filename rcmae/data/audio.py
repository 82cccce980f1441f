"""Reading and writing machine-sound clips.

One way in for every clip: ``load_audio`` reads with soundfile, picks a channel (channel 0 by
default, the DCASE convention for 8-channel MIMII recordings) or the mean, resamples to 16 kHz with
soxr through librosa, and pads with zeros / crops from the start to a fixed length. Anything that
cannot become a usable waveform raises ``AudioError`` with one line that names the file, the
problem and the fix. ``write_wav`` is the one way out: 16-bit PCM, written atomically.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

__all__ = [
    "AudioError",
    "audio_info",
    "check_clip",
    "fix_length",
    "load_audio",
    "write_wav",
]

# soxr's steep "HQ" filter: transparent up to ~0.91 of Nyquist, fast on CPU.
RES_TYPE = "soxr_hq"
# Extra input read past the crop point when cropping a long file, so that the resampler's filter
# sees real signal (not the cut) for every output sample we keep.
_RESAMPLE_MARGIN_S = 0.1
# Fraction of samples at full scale above which check_clip calls a clip clipped.
_CLIPPED_FRACTION = 1e-3


class AudioError(ValueError):
    """A clip that cannot be used; the message is ``"<path>: <problem>; <fix>"`` on one line."""

    def __init__(self, path: str | os.PathLike, problem: str, fix: str) -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.path}: {problem}; {fix}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    # libsndfile repeats the path ("Error opening '<path>': Format not recognised."); ours leads already.
    return line.rsplit("': ", 1)[-1]


def _open_info(path: Path) -> sf._SoundFileInfo:
    """``sf.info`` with every failure turned into an AudioError."""
    if not path.exists():
        raise AudioError(path, "file not found", "check the path (and that the data folder is mounted)")
    if path.is_dir():
        raise AudioError(path, "is a folder, not an audio file", "pass the path of a .wav file")
    try:
        return sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, OSError) as err:
        raise AudioError(
            path,
            f"not a readable audio file ({_first_line(err)})",
            "convert it to 16-bit PCM WAV (e.g. ffmpeg -i IN -ar 16000 -c:a pcm_s16le OUT.wav) or remove it",
        ) from err


def audio_info(path: str | os.PathLike) -> dict:
    """Header facts of an audio file without decoding it.

    Returns:
        ``{"path", "sample_rate", "channels", "frames", "duration", "format", "subtype"}``; duration in seconds.

    Raises:
        AudioError: the file is missing or not readable audio.
    """
    path = Path(path)
    info = _open_info(path)
    return {
        "path": str(path),
        "sample_rate": int(info.samplerate),
        "channels": int(info.channels),
        "frames": int(info.frames),
        "duration": float(info.frames) / info.samplerate if info.samplerate else 0.0,
        "format": info.format,
        "subtype": info.subtype,
    }


def fix_length(y: np.ndarray, n: int) -> np.ndarray:
    """Crop (keep the start) or zero-pad (at the end) the last axis of ``y`` to ``n`` samples."""
    if n < 0:
        raise ValueError(f"fix_length: n must be >= 0, got {n}")
    length = y.shape[-1]
    if length >= n:
        return y[..., :n]
    pad = [(0, 0)] * (y.ndim - 1) + [(0, n - length)]
    return np.pad(y, pad, mode="constant")


def _target_length(duration: float | None, sample_rate: int) -> int | None:
    if duration is None:
        return None
    if not (isinstance(duration, (int, float)) and math.isfinite(duration) and duration > 0):
        raise ValueError(f"duration must be a positive number of seconds or None, got {duration!r}")
    return int(round(duration * sample_rate))


def _select_channel(path: Path, x: np.ndarray, channel: int | str) -> tuple[np.ndarray, str]:
    """``x`` is [frames, channels]; returns the mono signal and a word for error messages."""
    n_channels = x.shape[1]
    if isinstance(channel, str):
        if channel != "mean":
            raise ValueError(f"channel must be an index or 'mean', got {channel!r}")
        return x.mean(axis=1), "the channel mean"
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
        raise ValueError(f"channel must be an index or 'mean', got {channel!r}")
    if not 0 <= channel < n_channels:
        raise AudioError(
            path, f"has {n_channels} channel(s) but channel={channel} was asked for",
            f"use a channel in 0..{n_channels - 1} or 'mean'",
        )
    return x[:, channel], f"channel {channel}"


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = 16000,
    duration: float | None = 10.0,
    channel: int | str = 0,
) -> np.ndarray:
    """Read one clip as float32 mono at ``sample_rate``, padded/cropped to ``duration`` seconds.

    Args:
        path: any format libsndfile reads (WAV, FLAC, OGG, ...).
        sample_rate: output rate in Hz; other rates are resampled with soxr (``soxr_hq``).
        duration: output length in seconds (``round(duration * sample_rate)`` samples; zero-padded at the
            end or cropped from the start), or ``None`` for the whole file.
        channel: channel index for multichannel files (0 = the DCASE convention), or ``"mean"``.

    Returns:
        float32 array ``[N]``.

    Raises:
        AudioError: missing, unreadable / not audio, empty, non-finite, or all-zero (in the used channel).
    """
    path = Path(path)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    n_out = _target_length(duration, sample_rate)
    info = _open_info(path)
    if info.frames == 0:
        raise AudioError(path, "is empty (0 samples)", "re-record or re-export the clip, or remove it")
    # Long recordings: decode only what the crop keeps (plus a little for the resampler).
    frames = -1
    if n_out is not None:
        needed = math.ceil(n_out * info.samplerate / sample_rate)
        if info.samplerate != sample_rate:
            needed += math.ceil(_RESAMPLE_MARGIN_S * info.samplerate)
        frames = min(needed, info.frames)
    try:
        x = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)[0]
    except (sf.SoundFileError, RuntimeError, OSError) as err:
        raise AudioError(
            path, f"could not be decoded ({_first_line(err)})", "the file is probably truncated; re-export it"
        ) from err
    if x.shape[0] == 0:
        raise AudioError(path, "is empty (0 samples)", "re-record or re-export the clip, or remove it")
    y, used = _select_channel(path, x, channel)
    if not np.isfinite(y).all():
        raise AudioError(path, f"{used} contains NaN or infinite samples", "re-export the clip with finite values")
    if not np.any(y):
        fix = "try channel='mean' or another channel" if x.shape[1] > 1 else "check the recording; remove the clip"
        raise AudioError(path, f"{used} is all zeros (digital silence)", fix)
    if info.samplerate != sample_rate:
        y = librosa.resample(y, orig_sr=info.samplerate, target_sr=sample_rate, res_type=RES_TYPE)
    if n_out is not None:
        y = fix_length(y, n_out)
    return np.ascontiguousarray(y, dtype=np.float32)


def write_wav(path: str | os.PathLike, y: np.ndarray, sample_rate: int = 16000) -> Path:
    """Write ``y`` (``[N]`` or ``[N, channels]``, floats in [-1, 1]) as 16-bit PCM WAV, atomically.

    Values outside [-1, 1] are clipped. The file appears complete or not at all: it is written to a
    temporary file in the same folder and moved into place with ``os.replace``.

    Raises:
        ValueError: ``y`` is empty, has more than two dimensions, or holds NaN/inf.
    """
    path = Path(path)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim not in (1, 2) or y.shape[0] == 0:
        raise ValueError(f"{path}: write_wav needs a non-empty [N] or [N, channels] array, got shape {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError(f"{path}: waveform contains NaN or infinite samples; fix the signal before writing")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        sf.write(tmp, np.clip(y, -1.0, 1.0), int(sample_rate), subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_clip(path: str | os.PathLike, sample_rate: int = 16000, duration: float | None = 10.0) -> list[str]:
    """Human-readable problems of one clip, for listings; never raises for a bad file.

    Reports: unreadable / not audio, empty, non-finite, silent, clipped, a sample rate other than
    ``sample_rate`` (it will be resampled), several channels (channel 0 is used), a length other than
    ``duration`` (and what training and scoring do with it), and a file name that no supported layout parses.

    Returns:
        A list of one-line strings; empty when the clip is fine.
    """
    # Imported here: rcmae.data builds on rcmae.data.audio, not the other way round.
    from rcmae.data.names import parse_name

    path = Path(path)
    problems: list[str] = []
    if parse_name(path) is None:
        problems.append(
            "file name does not parse: expected e.g. normal_id_00_00000000.wav or "
            "section_00_source_train_normal_0000.wav"
        )
    try:
        info = audio_info(path)
    except AudioError as err:
        return [f"{err.problem}; {err.fix}", *problems]
    if info["frames"] == 0:
        return ["empty (0 samples)", *problems]
    if info["sample_rate"] != sample_rate:
        problems.append(f"sample rate {info['sample_rate']} Hz, not {sample_rate} Hz (it will be resampled)")
    if info["channels"] > 1:
        problems.append(f"{info['channels']} channels (channel 0 is used by default)")
    if duration is not None and abs(info["duration"] - duration) > 1.0 / info["sample_rate"]:
        if info["duration"] > duration:
            action = f"training uses its first {duration:g} s; scoring covers it in overlapping windows"
        else:
            action = "training zero-pads it; scoring loops it to length"
        problems.append(f"{info['duration']:.2f} s long, not {duration:g} s ({action})")
    try:
        x = sf.read(str(path), dtype="float32", always_2d=True)[0]
    except (sf.SoundFileError, RuntimeError, OSError) as err:
        return [f"could not be decoded ({_first_line(err)})", *problems]
    if not np.isfinite(x).all():
        problems.append("contains NaN or infinite samples")
    elif not np.any(x[:, 0]):
        problems.append("silent: channel 0 is all zeros")
    elif np.mean(np.abs(x) >= 0.999) > _CLIPPED_FRACTION:
        problems.append(f"clipped: {100 * np.mean(np.abs(x) >= 0.999):.2f}% of samples at full scale")
    return problems
