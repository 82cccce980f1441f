"""rcmae.data.features against librosa (the reference front-end) and numpy statistics."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from rcmae.data.features import FeatureStats, LogMel, LogMelConfig, compute_stats

SR = 16000


def _librosa_db(y: np.ndarray, c: LogMelConfig) -> np.ndarray:
    S = librosa.feature.melspectrogram(
        y=y.astype(np.float64), sr=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.win_length,
        n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax, power=c.power, center=c.center, pad_mode=c.pad_mode,
    )
    if c.power == 2.0:
        return librosa.power_to_db(S, ref=1.0, amin=c.amin, top_db=None)
    return librosa.amplitude_to_db(S, ref=1.0, amin=np.sqrt(c.amin), top_db=None)


def _clips() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(10 * SR) / SR
    return {
        "noise": (0.1 * rng.standard_normal(10 * SR)).astype(np.float32),
        "sine": (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32),
    }


@pytest.mark.parametrize("name", ["noise", "sine"])
def test_logmel_matches_librosa_within_80db_of_peak(name):
    y = _clips()[name]
    c = LogMelConfig()
    ours = LogMel(c)(torch.from_numpy(y)).numpy()
    ref = _librosa_db(y, c)
    assert ours.shape == ref.shape == (128, 1 + y.size // 512)
    near = ref >= ref.max() - 80.0
    assert near.mean() > 0.1  # the comparison covers a real share of the bins
    assert np.max(np.abs(ours - ref)[near]) < 1e-3


def test_logmel_other_parameters_match_librosa():
    # The AE baseline's front-end (0 Hz to Nyquist) and a magnitude variant go through the same module.
    y = _clips()["noise"][: 3 * SR]
    for c in (LogMelConfig(fmin=0.0, fmax=8000.0), LogMelConfig(power=1.0, n_mels=64, hop_length=160)):
        ours = LogMel(c)(y).numpy()
        ref = _librosa_db(y, c)
        near = ref >= ref.max() - 80.0
        assert np.max(np.abs(ours - ref)[near]) < 1e-3


def test_batch_equals_clip_by_clip_and_frame_count():
    clips = np.stack(list(_clips().values()))
    m = LogMel()
    batch = m(clips)
    assert batch.shape == (2, 128, 313)  # 10 s at hop 512: 1 + 160000 // 512
    for i in range(2):
        assert torch.allclose(batch[i], m(clips[i]), atol=1e-4)
    chunks = m.transform_batches(clips, batch_size=1)
    assert torch.allclose(chunks, batch, atol=1e-4)


def test_a_big_cpu_batch_is_computed_in_chunks_with_the_same_result(monkeypatch):
    import rcmae.data.features as features

    clips = np.stack(list(_clips().values()) * 3)  # 6 clips: 3 chunks of 2
    m = LogMel()
    calls = []
    stft = torch.stft
    monkeypatch.setattr(torch, "stft", lambda x, *a, **k: calls.append(x.shape[0]) or stft(x, *a, **k))
    chunked = m(clips)
    assert calls == [2, 2, 2]
    calls.clear()
    monkeypatch.setattr(features, "CPU_CHUNK", 100)  # one batch: what every clip's log-mel was before
    whole = m(clips)
    assert calls == [6]
    assert torch.allclose(chunked, whole, rtol=0, atol=1e-4)  # dB: 1e-4 dB is far below any audible change
    # A traced module never loops over the batch (the chunk slices of the example batch would be baked in).
    monkeypatch.setattr(features, "CPU_CHUNK", 2)
    traced = torch.jit.trace(m, torch.from_numpy(clips[:3]), check_trace=False)
    out = traced(torch.from_numpy(clips))
    assert out.shape == whole.shape and torch.allclose(out, whole, atol=1e-4)


def test_top_db_floors_relative_to_peak():
    y = _clips()["sine"][:SR]
    c = LogMelConfig(top_db=60.0)
    db = LogMel(c)(y).numpy()
    assert db.min() == pytest.approx(db.max() - 60.0, abs=1e-4)


def test_bad_config_and_shape_errors():
    with pytest.raises(ValueError, match="fmax"):
        LogMelConfig(fmax=9000.0)
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        LogMel()(np.zeros((1, 2, 3)))


def test_compute_stats_matches_numpy_over_all_frames(tmp_path):
    rng = np.random.default_rng(1)
    batches = [rng.normal(size=(3, 8, 20)) * 5 - 40, rng.normal(size=(2, 8, 11)) * 2 + 3]
    stats = compute_stats(batches)
    frames = np.concatenate([b.transpose(1, 0, 2).reshape(8, -1) for b in batches], axis=1)
    np.testing.assert_allclose(stats.mean, frames.mean(axis=1), rtol=1e-10)
    np.testing.assert_allclose(stats.std, frames.std(axis=1), rtol=1e-8)
    assert stats.n_frames == 3 * 20 + 2 * 11

    x = batches[0]
    normed = stats.apply(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(normed, (x - frames.mean(1)[:, None]) / frames.std(1)[:, None], rtol=1e-6)

    stats.save(tmp_path / "stats.json")
    back = FeatureStats.load(tmp_path / "stats.json")
    np.testing.assert_array_equal(back.mean, stats.mean)
    np.testing.assert_array_equal(back.std, stats.std)


def test_constant_bin_std_is_floored():
    x = np.zeros((2, 4, 5))
    x[:, 1] = np.arange(5)
    stats = compute_stats([x])
    assert stats.std[0] == pytest.approx(stats.min_std)
    assert np.all(np.isfinite(stats.apply(x)))


def test_no_clips_is_a_clear_error():
    with pytest.raises(ValueError, match="no training clips"):
        compute_stats([])
