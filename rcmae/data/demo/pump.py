"""The demo factory's pump: vane-pass harmonics and flow; cavitation, clogging and bearing faults."""

from __future__ import annotations

import numpy as np

from rcmae.data.demo.signals import _band_noise, _bearing, _harmonics, _impulses, _modes, _rms, _slow
from rcmae.data.demo.units import _Unit


def _pump(u: _Unit, kind: str, sev: float, rng: np.random.Generator, n: int) -> np.ndarray:
    drift = 0.004 * _slow(rng, n, 0.3) + 0.001 * _slow(rng, n, 6.0)
    speed = u.speed * (1.0 + 0.003 * rng.standard_normal())
    if kind == "clogging":
        # A clogged impeller works harder: the induction motor slips a little more.
        speed *= 1.0 - 0.03 * sev
    f = speed * (1.0 + drift)
    b = u.blades
    orders = np.array([1, 2, b, 2 * b, 3 * b], dtype=float)
    amps = np.array([0.3, 0.12, 1.0, 0.35, 0.12]) * rng.uniform(0.85, 1.15, 5)
    tonal_rms = np.sqrt(0.5 * np.sum(amps**2))
    if kind == "clogging":
        amps[2:] *= 1.0 + 0.8 * sev
    tonal = _harmonics(f, orders, amps, rng)
    # Electrical hum at twice the mains frequency, independent of the shaft speed.
    hum = _harmonics(np.full(n, 100.0), np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.4, 0.2]), rng)
    lo, hi = u.band
    if kind == "clogging":
        # A restricted passage: less high-frequency flow noise, more low turbulent rumble.
        hi *= 1.0 - 0.3 * sev
    flow = _band_noise(rng, n, lo, hi) * (1.0 + 0.3 * _slow(rng, n, 3.0)).clip(0.2)
    flow_level = 0.8 + 0.8 * u.load
    if kind == "clogging":
        flow_level *= 1.0 - 0.2 * sev
    y = tonal / tonal_rms + 0.3 * hum / _rms(hum) + flow_level * flow
    y = y + _modes(y, u.resonances, u.decays, [1.0, 0.6, 0.4]) / 20.0
    if kind == "clogging":
        y = y + 0.4 * sev * _band_noise(rng, n, 40.0, 160.0)
    elif kind == "leak":
        # A leak hisses: a faint, narrow-ish broadband band well above the flow noise.
        lo = rng.uniform(3000, 4500)
        y = y + 0.15 * sev * _rms(y) * _band_noise(rng, n, lo, lo * 1.5)
    elif kind == "cavitation":
        # Collapsing vapour bubbles: random sharp crackles exciting the casing.
        times = np.cumsum(rng.exponential(1.0 / (20.0 + 40.0 * sev), 800))
        x = _impulses(n, times, rng.uniform(0.2, 1.0, times.size), width=2)
        crackle = _modes(x, [rng.uniform(2500, 3500), rng.uniform(4500, 6500)], [0.002, 0.0015], [1.0, 0.8])
        y = y + 0.15 * sev * _rms(y) * crackle / _rms(crackle)
    elif kind == "bearing":
        y = y + _bearing(u, f, sev, rng, n, level=0.25 * _rms(y))
    return y
