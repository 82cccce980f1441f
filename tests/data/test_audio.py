"""rcmae.data.audio: reading, channel choice, resampling, pad/crop, errors, atomic writes, clip checks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from rcmae.data.audio import AudioError, audio_info, check_clip, fix_length, load_audio, write_wav

SR = 16000


def _pcm16(rng: np.random.Generator, n: int, channels: int = 1) -> np.ndarray:
    """Random int16 samples; read back as float32 they are exactly value / 32768."""
    shape = (n,) if channels == 1 else (n, channels)
    return rng.integers(-20000, 20000, size=shape, dtype=np.int16)


def test_fix_length_pads_and_crops_last_axis():
    y = np.arange(1, 6, dtype=np.float32)
    assert fix_length(y, 3).tolist() == [1, 2, 3]
    assert fix_length(y, 7).tolist() == [1, 2, 3, 4, 5, 0, 0]
    assert fix_length(y, 5).tolist() == y.tolist()
    batch = np.ones((2, 4), dtype=np.float32)
    assert fix_length(batch, 6).tolist() == [[1, 1, 1, 1, 0, 0]] * 2
    assert fix_length(batch, 1).shape == (2, 1)
    with pytest.raises(ValueError, match="n must be"):
        fix_length(y, -1)


def test_load_pcm16_exact_and_pad_crop(tmp_path):
    rng = np.random.default_rng(0)
    raw = _pcm16(rng, 3 * SR)
    path = tmp_path / "normal_id_00_00000000.wav"
    sf.write(path, raw, SR, subtype="PCM_16")
    expected = raw.astype(np.float64) / 32768.0
    padded = load_audio(path)  # 3 s -> 10 s
    assert padded.dtype == np.float32 and padded.shape == (160000,)
    np.testing.assert_array_equal(padded[: 3 * SR], expected.astype(np.float32))
    assert not padded[3 * SR:].any()
    cropped = load_audio(path, duration=1.25)
    assert cropped.shape == (20000,)
    np.testing.assert_array_equal(cropped, expected[:20000].astype(np.float32))
    full = load_audio(path, duration=None)
    assert full.shape == (3 * SR,)
    with pytest.raises(ValueError, match="duration"):
        load_audio(path, duration=0)


def test_long_clip_is_cropped_silently_from_start(tmp_path):
    rng = np.random.default_rng(1)
    raw = _pcm16(rng, 11 * SR)  # like the real ToyCar clips
    path = tmp_path / "toycar.wav"
    sf.write(path, raw, SR, subtype="PCM_16")
    y = load_audio(path)
    np.testing.assert_array_equal(y, (raw[: 10 * SR] / 32768.0).astype(np.float32))


def test_multichannel_channel_choice_and_mean(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.uniform(-0.5, 0.5, size=(SR, 8)).astype(np.float32)  # MIMII raw files have 8 channels
    path = tmp_path / "mimii.wav"
    sf.write(path, x, SR, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path, duration=1.0), x[:, 0])
    np.testing.assert_array_equal(load_audio(path, duration=1.0, channel=5), x[:, 5])
    mean = load_audio(path, duration=1.0, channel="mean")
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(axis=1), atol=1e-7)
    with pytest.raises(AudioError, match=r"has 8 channel\(s\) but channel=8"):
        load_audio(path, channel=8)
    with pytest.raises(ValueError, match="channel must be an index or 'mean'"):
        load_audio(path, channel="max")


def _peak_hz(y: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    return float(np.fft.rfftfreq(y.size, 1 / sr)[np.argmax(spectrum)])


def test_resample_44k_sine_keeps_frequency_and_length(tmp_path):
    sr_in, f0, seconds = 44100, 1000.0, 2.0
    t = np.arange(int(seconds * sr_in)) / sr_in
    x = 0.5 * np.sin(2 * np.pi * f0 * t)
    path = tmp_path / "sine44k.wav"
    sf.write(path, x, sr_in, subtype="FLOAT")
    y = load_audio(path, duration=None)
    assert y.shape == (int(seconds * SR),)
    assert abs(_peak_hz(y, SR) - f0) <= SR / y.size  # within one FFT bin
    # An independent polyphase resampler (160/441) agrees away from the edges.
    ref = resample_poly(x, 160, 441)
    np.testing.assert_allclose(y[1000:-1000], ref[1000:-1000], atol=2e-3)
    # The analytic sine at 16 kHz, too.
    t16 = np.arange(y.size) / SR
    np.testing.assert_allclose(y[1000:-1000], 0.5 * np.sin(2 * np.pi * f0 * t16)[1000:-1000], atol=2e-3)
    # Cropping while resampling (only part of the file is decoded) matches resample-then-crop.
    short = load_audio(path, duration=0.5)
    assert short.shape == (8000,)
    np.testing.assert_allclose(short, y[:8000], atol=1e-5)


def _assert_one_line_error(err: pytest.ExceptionInfo, path: Path, problem: str) -> None:
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert problem in message
    assert "; " in message  # problem; fix


def test_errors_name_the_file_and_problem(tmp_path):
    missing = tmp_path / "missing.wav"
    with pytest.raises(AudioError) as err:
        load_audio(missing)
    _assert_one_line_error(err, missing, "file not found")

    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    with pytest.raises(AudioError) as err:
        load_audio(text)
    _assert_one_line_error(err, text, "not a readable audio file")

    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), SR, subtype="PCM_16")
    with pytest.raises(AudioError) as err:
        load_audio(empty)
    _assert_one_line_error(err, empty, "empty (0 samples)")

    zeros = tmp_path / "zeros.wav"
    sf.write(zeros, np.zeros(SR, dtype=np.int16), SR, subtype="PCM_16")
    with pytest.raises(AudioError) as err:
        load_audio(zeros)
    _assert_one_line_error(err, zeros, "all zeros")

    nan = tmp_path / "nan.wav"
    x = np.full(SR, 0.1, dtype=np.float32)
    x[123] = np.nan
    sf.write(nan, x, SR, subtype="FLOAT")
    with pytest.raises(AudioError) as err:
        load_audio(nan)
    _assert_one_line_error(err, nan, "NaN or infinite")

    # A multichannel file whose channel 0 is dead: the fix points at another channel.
    dead = tmp_path / "dead0.wav"
    x2 = np.zeros((SR, 2), dtype=np.float32)
    x2[:, 1] = 0.25
    sf.write(dead, x2, SR, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"channel 0 is all zeros \(digital silence\); try channel=.mean."):
        load_audio(dead)
    np.testing.assert_allclose(load_audio(dead, duration=1.0, channel="mean"), 0.125)
    assert issubclass(AudioError, ValueError)


def test_write_wav_roundtrip_clip_and_atomic(tmp_path):
    rng = np.random.default_rng(3)
    y = rng.uniform(-0.9, 0.9, size=SR).astype(np.float32)
    y[:3] = [2.0, -3.0, 1.0]
    path = tmp_path / "sub" / "out.wav"
    assert write_wav(path, y) == path
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (SR, 1, "PCM_16", "WAV")
    raw = sf.read(path, dtype="int16")[0]
    assert raw[:3].tolist() == [32767, -32768, 32767]  # clipped to [-1, 1]
    back = raw[3:] / 32768.0
    assert np.max(np.abs(back - y[3:])) <= 1.0 / 32768 + 1e-7  # 16-bit quantisation
    # A failed write leaves the old file untouched and no temporary files behind.
    before = path.read_bytes()
    bad = y.copy()
    bad[10] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        write_wav(path, bad)
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == ["out.wav"]
    with pytest.raises(ValueError, match="non-empty"):
        write_wav(path, np.zeros(0))


def test_audio_info_fields(tmp_path):
    path = tmp_path / "stereo.wav"
    sf.write(path, np.full((22050, 2), 0.1, dtype=np.float32), 44100, subtype="PCM_24")
    info = audio_info(path)
    assert info == {
        "path": str(path), "sample_rate": 44100, "channels": 2, "frames": 22050, "duration": 0.5,
        "format": "WAV", "subtype": "PCM_24",
    }
    with pytest.raises(AudioError, match="file not found"):
        audio_info(tmp_path / "nope.wav")


def test_check_clip_lists_problems_without_raising(tmp_path):
    good = tmp_path / "normal_id_00_00000000.wav"
    rng = np.random.default_rng(4)
    sf.write(good, _pcm16(rng, 10 * SR), SR, subtype="PCM_16")
    assert check_clip(good) == []

    odd = tmp_path / "section_00_target_test_anomaly_0003_speed_1.wav"
    sf.write(odd, rng.uniform(-0.5, 0.5, size=(11 * 44100, 2)), 44100, subtype="PCM_16")
    assert check_clip(odd) == [
        "sample rate 44100 Hz, not 16000 Hz (it will be resampled)",
        "2 channels (channel 0 is used by default)",
        "11.00 s long, not 10 s (training uses its first 10 s; scoring covers it in overlapping windows)",
    ]

    silent = tmp_path / "recording.wav"
    sf.write(silent, np.zeros(10 * SR, dtype=np.int16), SR, subtype="PCM_16")
    problems = check_clip(silent)
    assert len(problems) == 2
    assert problems[0].startswith("file name does not parse")
    assert problems[1] == "silent: channel 0 is all zeros"

    loud = tmp_path / "id_02_00000001.wav"
    sf.write(loud, np.clip(3 * rng.standard_normal(10 * SR), -1, 1), SR, subtype="PCM_16")
    (clipped,) = check_clip(loud)
    assert clipped.startswith("clipped: ")

    text = tmp_path / "anomaly_id_00_00000001.wav"
    text.write_text("hello")
    (unreadable,) = check_clip(text)
    assert unreadable.startswith("not a readable audio file")
