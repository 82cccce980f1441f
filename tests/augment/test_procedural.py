"""The procedural backend: keyword mapping, warnings, determinism, exact SNR, and each sound model's signature.

Signatures are measured with independent tools (scipy STFT/Welch/Butterworth, an envelope autocorrelation)
against the parameters the model reports it drew.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import signal

from rcmae.augment import procedural
from rcmae.augment.procedural import SOUND_MODELS, ProceduralAugmenter, parse_prompt
from rcmae.augment.prompts import PAPER_PROMPTS

SR = 16000
N = 10 * SR


def _clip(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(N) / SR
    return (0.3 * np.sin(2 * np.pi * 100 * t) + 0.05 * rng.standard_normal(N)).astype(np.float32)


def _envelope(y: np.ndarray, hop: int = 80) -> np.ndarray:
    """Frame RMS, 5 ms frames."""
    return np.sqrt(np.mean(y[: y.size // hop * hop].reshape(-1, hop) ** 2, axis=1))


def _first_period(env: np.ndarray, fs: float, min_lag: float = 0.05) -> float:
    """The lag (s) of the first strong local maximum of the envelope autocorrelation."""
    e = env - env.mean()
    ac = np.correlate(e, e, "full")[e.size - 1:]
    ac = ac / ac[0]
    start = int(min_lag * fs)
    for i in range(max(start, 1), ac.size - 1):
        if ac[i] > 0.5 and ac[i] >= ac[i - 1] and ac[i] >= ac[i + 1]:
            return i / fs
    raise AssertionError("no periodic envelope found")


# ---------------------------------------------------------------- prompt -> models
@pytest.mark.parametrize("prompt, model", list(zip(PAPER_PROMPTS, ["saw", "press", "crusher", "moulding",
                                                                  "woodworking", "pneumatic"], strict=True)))
def test_each_paper_prompt_maps_to_its_sound_model_without_unknown_words(prompt, model):
    assert parse_prompt(prompt) == ([model], [])


def test_several_sources_give_several_layers_and_unknown_words_are_listed():
    models, unknown = parse_prompt("Add rock crushers and pneumatic drills, plus a yodelling llama")
    assert models == ["crusher", "pneumatic"]
    assert unknown == ["plus", "yodelling", "llama"]
    # Plurals and hyphenated words are understood; stop words never count as unknown.
    assert parse_prompt("metal-cutting bandsaws") == (["saw"], [])
    assert parse_prompt("the of and a in") == (["factory"], [])


def test_unknown_prompt_warns_once_with_the_words_and_uses_the_factory_bed():
    aug = ProceduralAugmenter()
    x = _clip()
    prompt = "add the banjo music of a zebra"
    with pytest.warns(UserWarning) as record:
        y = aug(x, prompt, 5.0, seed=1)
    message = str(record[0].message)
    assert "banjo, music, zebra" in message and "generic factory bed" in message
    assert " the," not in message and "add" not in message.split(":")[-1]
    # The generic bed is what was mixed in: same draws from the same seed.
    bed, _ = procedural.factory_bed(N, SR, np.random.default_rng(1))
    noise = y.astype(np.float64) - x
    np.testing.assert_allclose(noise / np.sqrt(np.mean(noise**2)), bed / np.sqrt(np.mean(bed.astype(float) ** 2)),
                               atol=2e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call on the same prompt stays quiet
        aug(x, prompt, 5.0, seed=2)


def test_known_prompt_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ProceduralAugmenter()(_clip(), PAPER_PROMPTS[0], 5.0, seed=0)


# ---------------------------------------------------------------- mixing
def test_deterministic_for_a_seed_and_different_for_another():
    aug, x = ProceduralAugmenter(), _clip()
    a = aug(x, PAPER_PROMPTS[2], 3.0, seed=11)
    b = aug(x, PAPER_PROMPTS[2], 3.0, generator=np.random.default_rng(11))
    c = aug(x, PAPER_PROMPTS[2], 3.0, seed=12)
    assert a.dtype == np.float32 and a.shape == x.shape
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 7.5, 20.0])
@pytest.mark.parametrize("prompt", [PAPER_PROMPTS[0], PAPER_PROMPTS[3], "saws, rock crushers and jackhammers"])
def test_mixed_snr_equals_the_requested_one(prompt, snr_db):
    x = _clip(3)
    y = ProceduralAugmenter()(x, prompt, snr_db, seed=5)
    x64 = x.astype(np.float64)
    noise = y.astype(np.float64) - x64
    measured = 10 * np.log10(np.sum(x64**2) / np.sum(noise**2))
    assert abs(measured - snr_db) < 0.01


def test_several_keywords_sum_their_layers():
    aug = ProceduralAugmenter()
    layer = aug.noise("saws and rock crushers", N, seed=9)
    rng = np.random.default_rng(9)
    saw, _ = procedural.saw_screech(N, SR, rng)
    crusher, _ = procedural.crusher_rumble(N, SR, rng)
    both = saw.astype(np.float64) + crusher
    np.testing.assert_allclose(layer, both / np.sqrt(np.mean(both**2)), atol=1e-4)
    assert abs(np.mean(layer.astype(np.float64) ** 2) - 1.0) < 1e-4


def test_bad_inputs_fail_with_one_clear_line():
    aug = ProceduralAugmenter()
    with pytest.raises(ValueError, match="silent"):
        aug(np.zeros(N, np.float32), PAPER_PROMPTS[0], 5.0, seed=0)
    with pytest.raises(ValueError, match=r"mono waveform \[N\]"):
        aug(np.ones((2, N), np.float32), PAPER_PROMPTS[0], 5.0, seed=0)
    with pytest.raises(ValueError, match="either generator or seed"):
        aug(_clip(), PAPER_PROMPTS[0], 5.0, generator=1, seed=1)
    with pytest.raises(ValueError, match="snr_db"):
        aug(_clip(), PAPER_PROMPTS[0], float("nan"), seed=1)


# ---------------------------------------------------------------- signatures
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_saw_is_narrow_band_and_its_pitch_sweeps(seed):
    y, p = procedural.saw_screech(N, SR, np.random.default_rng(seed))
    f, _, z = signal.stft(y, fs=SR, nperseg=1024, noverlap=512)
    power = np.abs(z[:, 1:-1]) ** 2
    peak_bin = np.argmax(power, axis=0)
    peak_hz = f[peak_bin]
    # The strongest component follows the fundamental between f_lo and f_lo * ratio, and sweeps over most of it.
    assert peak_hz.min() >= p["f_lo"] * 0.97 and peak_hz.max() <= p["f_lo"] * p["ratio"] * 1.03
    assert peak_hz.max() - peak_hz.min() > 0.7 * p["f_lo"] * (p["ratio"] - 1)
    # Narrow band: +-3 bins (+-47 Hz) around the peak hold most of each frame's energy.
    share = [power[max(i - 3, 0):i + 4, j].sum() / power[:, j].sum() for j, i in enumerate(peak_bin)]
    assert np.median(share) > 0.6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_press_buzz_is_harmonic_and_pulses_at_its_stroke_rate(seed):
    y, p = procedural.press_buzz(N, SR, np.random.default_rng(seed))
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(N, 1 / SR)
    band = (f > 50) & (f < 300)
    assert abs(f[band][np.argmax(spec[band])] - p["f0"]) < 1.0
    # The stroke rate is the strongest line of the envelope's spectrum (20 ms frames smooth out the buzz).
    env = _envelope(y, hop=320)
    line = np.abs(np.fft.rfft(env - env.mean()))
    f_env = np.fft.rfftfreq(env.size, 320 / SR)
    band = (f_env > 1) & (f_env < 8)
    assert abs(f_env[band][np.argmax(line[band])] - p["rate"]) < 0.1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crusher_energy_is_mostly_low_frequency_with_impacts(seed):
    y, p = procedural.crusher_rumble(N, SR, np.random.default_rng(seed))
    f, psd = signal.welch(y, fs=SR, nperseg=2048)
    assert psd[f < 500].sum() / psd.sum() > 0.85
    # Impacts: the envelope has peaks well above the rumble right after the drawn impact times.
    env = _envelope(y)
    hits = (p["impact_times"] * SR / 80).astype(int)
    hits = hits[hits < env.size - 4]
    assert hits.size >= 1
    assert np.median([env[h:h + 4].max() for h in hits]) > 2 * np.median(env)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_moulding_clicks_repeat_at_the_cycle_rate(seed):
    y, p = procedural.moulding_clicks(N, SR, np.random.default_rng(seed))
    period = _first_period(_envelope(y), SR / 80)
    assert abs(period - 1 / p["rate"]) < 0.01
    # Clicks are short: most frames are far below the loudest.
    env = _envelope(y)
    assert np.median(env) < 0.2 * env.max()


@pytest.mark.parametrize("seed", [0, 1])
def test_woodworking_whirrs_at_the_motor_pitch_with_cutting_bursts(seed):
    y, p = procedural.woodworking_whirr(N, SR, np.random.default_rng(seed))
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(N, 1 / SR)
    band = (f > 50) & (f < 400)
    assert abs(f[band][np.argmax(spec[band])] - p["motor_hz"]) < 1.0
    sos = signal.butter(6, [2600, 6400], btype="bandpass", fs=SR, output="sos")
    high = signal.sosfiltfilt(sos, y)
    inside = np.zeros(N, bool)
    for start, dur in p["bursts"]:
        inside[int(start * SR):int((start + dur) * SR)] = True
    assert 0.1 < inside.mean() < 0.9
    assert 10 * np.log10(np.mean(high[inside] ** 2) / np.mean(high[~inside] ** 2)) > 20


@pytest.mark.parametrize("seed", [0, 1])
def test_pneumatic_bursts_are_broadband_and_gated(seed):
    y, p = procedural.pneumatic_hiss(N, SR, np.random.default_rng(seed))
    inside = np.zeros(N, bool)
    outside = np.ones(N, bool)
    for start, dur in p["bursts"]:
        inside[int(start * SR) + 320:int((start + dur) * SR) - 320] = True
        outside[max(int(start * SR) - 800, 0):int((start + dur) * SR) + 4000] = False
    f, psd = signal.welch(y[inside], fs=SR, nperseg=512)
    band = (f > 500) & (f < 7500)
    flatness = np.exp(np.mean(np.log(psd[band]))) / np.mean(psd[band])
    assert flatness > 0.8  # white-like hiss (a tone would be near 0)
    assert outside.any()
    assert np.mean(y[outside] ** 2) < 1e-3 * np.mean(y[inside] ** 2)


def test_factory_bed_is_broadband():
    y, _ = procedural.factory_bed(N, SR, np.random.default_rng(0))
    f, psd = signal.welch(y, fs=SR, nperseg=2048)
    assert psd[f < 500].sum() / psd.sum() > 0.2 and psd[f > 2000].sum() / psd.sum() > 0.1


def test_every_model_returns_unit_rms_float32_of_the_requested_length():
    for name, model in SOUND_MODELS.items():
        y, _ = model(12345, SR, np.random.default_rng(0))
        assert y.shape == (12345,) and y.dtype == np.float32, name
        assert abs(np.sqrt(np.mean(y.astype(np.float64) ** 2)) - 1) < 1e-3, name
        assert np.all(np.isfinite(y)), name
