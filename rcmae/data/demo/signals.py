"""Signal building blocks of the demo factory: drifting speed, harmonics, band noise, resonances, impacts, faults."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import signal

from rcmae.data.demo.plan import SAMPLE_RATE
from rcmae.data.demo.units import _Unit

_TWO_PI = 2.0 * np.pi


# ------------------------------------------------------------------ signal helpers
def _slow(rng: np.random.Generator, n: int, rate_hz: float) -> np.ndarray:
    """A smooth zero-mean, unit-variance random trajectory with about ``rate_hz`` changes per second."""
    n_ctrl = int(np.ceil(n / SAMPLE_RATE * rate_hz)) + 2
    ctrl = rng.standard_normal(n_ctrl)
    # Raised-cosine interpolation (continuous slope at the control points) on a 2 ms grid, then linear
    # interpolation to the sample rate: the trajectories are far slower than 2 ms, and this is 30x cheaper.
    step = 32
    grid = np.arange(0, n + step, step)
    pos = np.minimum(grid * ((n_ctrl - 1) / n), n_ctrl - 1 - 1e-9)
    i = pos.astype(np.int64)
    w = 0.5 - 0.5 * np.cos(np.pi * (pos - i))
    return np.interp(np.arange(n), grid, ctrl[i] * (1.0 - w) + ctrl[i + 1] * w)


def _harmonics(freq: np.ndarray, orders: np.ndarray, amps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sum of ``amps[k] * sin(orders[k] * phase + random phase)`` for an instantaneous frequency track."""
    # The phase wrapped to [0, 2 pi) keeps float32 accurate (k * phase stays below ~300 rad, error ~2e-5 rad);
    # float32 sines are about twice as fast as float64 ones.
    phase = np.mod((_TWO_PI / SAMPLE_RATE) * np.cumsum(freq), _TWO_PI).astype(np.float32)
    offsets = rng.uniform(0.0, _TWO_PI, orders.size)
    y = np.zeros(freq.size)
    top = float(freq.max())
    for k, a, off in zip(orders, amps, offsets, strict=True):
        # Orders whose top frequency passes Nyquist would alias into an audible artefact: skip them.
        if k * top < 0.48 * SAMPLE_RATE:
            y += a * np.sin(np.float32(k) * phase + np.float32(off))
    return y


def _band_noise(rng: np.random.Generator, n: int, lo: float, hi: float, order: int = 2) -> np.ndarray:
    """White noise band-passed to [lo, hi] Hz, scaled to unit RMS."""
    sos = signal.butter(order, [lo, min(hi, 0.45 * SAMPLE_RATE)], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    y = signal.sosfilt(sos, rng.standard_normal(n))
    return y / (np.sqrt(np.mean(y**2)) + 1e-12)


def _modes(x: np.ndarray, freqs: Sequence[float], decays_s: Sequence[float], gains: Sequence[float]) -> np.ndarray:
    """Excite a bank of damped two-pole resonators (structural modes) with ``x``."""
    y = np.zeros_like(x)
    for f, tau, g in zip(freqs, decays_s, gains, strict=True):
        r = np.exp(-1.0 / (tau * SAMPLE_RATE))
        w = _TWO_PI * f / SAMPLE_RATE
        # (1 - r) normalises the peak gain so that modes with different decays stay comparable.
        y += signal.lfilter([g * (1.0 - r) * 2.0], [1.0, -2.0 * r * np.cos(w), r * r], x)
    return y


def _impulses(n: int, times_s: np.ndarray, amps: np.ndarray, width: int = 3) -> np.ndarray:
    """A train of short Hann-shaped pulses at ``times_s`` (pulses outside the clip are dropped)."""
    x = np.zeros(n)
    idx = np.round(np.asarray(times_s) * SAMPLE_RATE).astype(np.int64)
    ok = (idx >= 0) & (idx < n - width)
    np.add.at(x, idx[ok], np.asarray(amps, dtype=float)[ok])
    if width > 1:
        x = np.convolve(x, np.hanning(width + 2)[1:-1], mode="same")
    return x


def _rms(y: np.ndarray) -> float:
    return float(np.sqrt(np.mean(y**2)) + 1e-12)


def _gate(mask: np.ndarray, ramp_s: float = 0.01) -> np.ndarray:
    """Smooth a 0/1 mask with a Hann ramp so switching does not click."""
    k = max(3, int(ramp_s * SAMPLE_RATE))
    win = np.hanning(k)
    return np.convolve(mask.astype(float), win / win.sum(), mode="same")


def _bearing(u: _Unit, f: np.ndarray, sev: float, rng: np.random.Generator, n: int, level: float) -> np.ndarray:
    """Faint periodic impacts at the bearing fault frequency, ringing a high structural resonance."""
    fault = u.extra * f
    phase = np.cumsum(fault) / SAMPLE_RATE
    hits = np.flatnonzero(np.diff(np.floor(phase)) > 0)
    amps = rng.uniform(0.5, 1.0, hits.size)
    x = _impulses(n, hits / SAMPLE_RATE + rng.normal(0, 2e-4, hits.size), amps)
    ring = _modes(x, [rng.uniform(2800, 4500)], [0.004], [1.0])
    return level * sev * ring / (np.sqrt(np.mean(ring**2)) + 1e-12)


def _rubbing(phase: np.ndarray, sev: float, rng: np.random.Generator, n: int, level: float) -> np.ndarray:
    """Intermittent broadband scraping, modulated once per revolution, in bursts of a fraction of a second."""
    bursts = _slow(rng, n, 1.5) > 0.6
    env = _gate(bursts, 0.05) * np.clip(np.sin(phase + rng.uniform(0, _TWO_PI)), 0, None) ** 2
    scrape = _band_noise(rng, n, 1500.0, 7000.0)
    return level * sev * scrape * env
