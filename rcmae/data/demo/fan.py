"""The demo factory's fan: blade-pass and shaft harmonics, flow noise; imbalance, bearing and rubbing faults."""

from __future__ import annotations

import numpy as np

from rcmae.data.demo.plan import SAMPLE_RATE
from rcmae.data.demo.signals import _TWO_PI, _band_noise, _bearing, _harmonics, _modes, _rubbing, _slow
from rcmae.data.demo.units import _Unit


# ------------------------------------------------------------------ machine models
def _fan(u: _Unit, kind: str, sev: float, rng: np.random.Generator, n: int) -> np.ndarray:
    drift = 0.006 * _slow(rng, n, 0.3) + 0.0015 * _slow(rng, n, 8.0)
    speed = u.speed * (1.0 + 0.003 * rng.standard_normal())
    if kind == "clogging":
        # A blocked intake unloads the blades: the fan speeds up slightly and moves less air.
        speed *= 1.0 + 0.03 * sev
    f = speed * (1.0 + drift)
    b = u.blades
    orders = np.array([1, 2, 3, b, 2 * b, 3 * b, 4 * b], dtype=float)
    amps = np.array([0.10, 0.05, 0.03, 1.0, 0.45, 0.2, 0.08]) * rng.uniform(0.85, 1.15, 7)
    # RMS of the normal tonal part: anomalies that change harmonic levels must not be normalised away.
    tonal_rms = np.sqrt(0.5 * np.sum(amps**2))
    if kind == "imbalance":
        # More 1x-3x shaft orders, and sidebands of the blade-pass tone at +-1x (its modulation).
        amps[:3] *= 1.0 + 4.0 * sev
        orders = np.r_[orders, b - 1, b + 1]
        amps = np.r_[amps, 0.25 * sev, 0.25 * sev]
    elif kind == "clogging":
        # Stalled flow over the blades strengthens the blade-pass tones.
        amps[3:] *= 1.0 + 0.5 * sev
    tonal = _harmonics(f, orders, amps, rng)
    phase = (_TWO_PI / SAMPLE_RATE) * np.cumsum(f)
    # Aerodynamic noise, lightly modulated at the blade-pass rate.
    lo, hi = u.band
    if kind == "clogging":
        # Less air through a blocked intake: the aerodynamic noise loses its top end.
        hi *= 1.0 - 0.4 * sev
    air = _band_noise(rng, n, lo, hi) * (1.0 + 0.25 * np.sin(b * phase))
    air_level = 0.6 + 0.8 * u.load
    if kind == "clogging":
        air_level *= 1.0 - 0.12 * sev
    y = tonal / tonal_rms + air_level * air
    y = y + 0.5 * _modes(y, u.resonances, u.decays, [1.0, 0.7, 0.5]) / 10.0
    if kind == "imbalance":
        # An unbalanced rotor also shakes the housing: amplitude modulation at the shaft rate.
        y = y * (1.0 + 0.35 * sev * np.sin(phase + rng.uniform(0, _TWO_PI)))
    elif kind == "bearing":
        y = y + _bearing(u, f, sev, rng, n, level=0.35)
    elif kind == "rubbing":
        y = y + _rubbing(phase, sev, rng, n, level=0.3)
    return y
