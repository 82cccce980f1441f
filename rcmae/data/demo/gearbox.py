"""The demo factory's gearbox: gear-mesh harmonics with sidebands; tooth and bearing faults."""

from __future__ import annotations

import numpy as np

from rcmae.data.demo.plan import SAMPLE_RATE
from rcmae.data.demo.signals import _band_noise, _bearing, _harmonics, _impulses, _modes, _rms, _slow
from rcmae.data.demo.units import _Unit


def _gearbox(u: _Unit, kind: str, sev: float, rng: np.random.Generator, n: int) -> np.ndarray:
    # A toy-car-like drive on a test bench: the speed wanders more than a mains-driven motor's.
    drift = 0.02 * _slow(rng, n, 0.4) + 0.002 * _slow(rng, n, 6.0)
    f = u.speed * (1.0 + 0.01 * rng.standard_normal()) * (1.0 + drift)
    z = u.blades
    # Gear mesh: harmonics of the mesh frequency with weak +-1x sidebands (normal run-out modulation).
    orders = np.array([z, 2 * z, 3 * z, z - 1, z + 1, 2 * z - 1, 2 * z + 1, 1, 2], dtype=float)
    amps = np.array([1.0, 0.5, 0.2, 0.08, 0.08, 0.04, 0.04, 0.15, 0.08]) * rng.uniform(0.85, 1.15, 9)
    tonal_rms = np.sqrt(0.5 * np.sum(amps**2))
    if kind == "wear":
        # Worn flanks: a weaker fundamental mesh tone, stronger mesh harmonics.
        amps[0] *= 1.0 - 0.3 * sev
        amps[1:3] *= 1.0 + 1.2 * sev
    elif kind == "misalignment":
        # Misaligned shafts: strong 2x shaft order and 2x sidebands around the mesh tone.
        amps[8] *= 1.0 + 3.0 * sev
        orders = np.r_[orders, z - 2, z + 2, 2 * z - 2, 2 * z + 2]
        amps = np.r_[amps, 0.6 * sev, 0.6 * sev, 0.3 * sev, 0.3 * sev]
    tonal = _harmonics(f, orders, amps, rng)
    noise = _band_noise(rng, n, *u.band)
    y = tonal / tonal_rms + (0.4 + 0.6 * u.load) * noise
    if kind == "wear":
        # Rougher flanks also add broadband mesh noise around the mesh frequency.
        mesh = float(np.mean(f)) * z
        y = y + 0.3 * sev * _band_noise(rng, n, 0.7 * mesh, 2.2 * mesh)
    y = y + _modes(y, u.resonances, u.decays, [1.0, 0.6, 0.4]) / 20.0
    if kind == "tooth_crack":
        # A cracked tooth: one soft impact per revolution, ringing the housing.
        phase = np.cumsum(f) / SAMPLE_RATE
        hits = np.flatnonzero(np.diff(np.floor(phase + rng.uniform())) > 0)
        x = _impulses(n, hits / SAMPLE_RATE, rng.uniform(0.7, 1.0, hits.size))
        ring = _modes(x, u.resonances, [0.006, 0.005, 0.004], [1.0, 0.8, 0.6])
        y = y + 0.5 * sev * _rms(y) * ring / _rms(ring)
    elif kind == "bearing":
        y = y + _bearing(u, f, sev, rng, n, level=0.3 * _rms(y))
    return y
