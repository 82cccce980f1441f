"""The demo factory's slider: strokes with end-stop impacts; rail damage, friction and stuck strokes."""

from __future__ import annotations

import numpy as np

from rcmae.data.demo.plan import SAMPLE_RATE
from rcmae.data.demo.signals import _band_noise, _gate, _harmonics, _impulses, _modes, _rms, _slow
from rcmae.data.demo.units import _Unit


def _slider(u: _Unit, kind: str, sev: float, rng: np.random.Generator, n: int) -> np.ndarray:
    period = u.speed * (1.0 + 0.01 * rng.standard_normal())
    move = 0.32 * period  # each of the two moves takes this long; the rest is dwell at the end stops
    if kind == "timing":
        # A worn drive belt makes the strokes slower and less regular.
        move *= 1.0 + 0.3 * sev
    t = np.arange(n) / SAMPLE_RATE + rng.uniform(0, period)
    jitter = (0.15 * sev if kind == "timing" else 0.02) * move
    t = t + jitter * _slow(rng, n, 1.0 / period)
    tau = np.mod(t, period)
    fwd = tau < move
    back = (tau >= period / 2) & (tau < period / 2 + move)
    local = np.where(fwd, tau, tau - period / 2) / move
    # The same travel in a longer move means a lower top speed (and a lower motor whine).
    v = np.where(fwd | back, np.sin(np.pi * np.clip(local, 0, 1)) ** 2, 0.0) * (0.32 * period / move)
    whine_f = u.extra * (0.05 + v)
    whine = _harmonics(whine_f, np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.5, 0.2]), rng) * v
    roll = _band_noise(rng, n, *u.band) * v
    y = whine * 0.6 + roll * (0.5 + 0.6 * u.load)
    # End-stop impacts at the end of each move, and a softer start-of-move thud.
    n_cycles = int(np.ceil((t[-1] - t[0]) / period)) + 2
    c0 = np.floor(t[0] / period) * period
    starts = c0 + period * np.arange(n_cycles)
    stops = np.concatenate([starts + move, starts + period / 2 + move])
    begins = np.concatenate([starts, starts + period / 2])
    times = np.concatenate([stops, begins])
    amps = np.concatenate([rng.uniform(0.8, 1.0, stops.size), rng.uniform(0.2, 0.3, begins.size)])
    to_clip = (lambda s: s - t[0])  # clip time of a machine-time event (ignoring the small jitter)
    x = _impulses(n, to_clip(times), amps)
    if kind == "loose_stop":
        # A loose end stop rattles: two or three weaker bounces after each end-stop impact, ringing the
        # loose part's own resonance.
        gaps = np.cumsum(rng.uniform(0.02, 0.05, (stops.size, 3)), axis=1)[:, : int(rng.integers(2, 4))]
        bounces = (to_clip(stops)[:, None] + gaps).ravel()
        bx = _impulses(n, bounces, (0.3 + 0.5 * sev) * rng.uniform(0.6, 1.0, bounces.size))
        rattle = _modes(bx, [rng.uniform(1500, 2500)], [0.01], [1.0])
    impacts = _modes(x, u.resonances, u.decays, [1.0, 0.8, 0.5])
    # Scale by the normal impacts only, so that a rattle adds to them instead of being normalised away.
    scale = 0.8 * _rms(y) / (_rms(impacts) + 1e-12)
    if kind == "loose_stop":
        impacts = impacts + rattle
    impacts = impacts * scale
    y = y + impacts
    if kind == "rail_damage":
        # A dent in the rail ticks at the same position on every pass.
        pos = rng.uniform(0.25, 0.75)
        ticks = np.concatenate([starts + pos * move, starts + period / 2 + (1 - pos) * move])
        tx = _impulses(n, to_clip(ticks), np.full(ticks.size, 1.0))
        tick = _modes(tx, [rng.uniform(3000, 5000), rng.uniform(1200, 2000)], [0.015, 0.02], [1.0, 0.7])
        y = y + (0.5 + 0.7 * sev) * np.max(np.abs(impacts)) * tick / (np.max(np.abs(tick)) + 1e-12)
    elif kind == "no_grease":
        scrape = _band_noise(rng, n, 2000.0, 7000.0) * v * _gate(_slow(rng, n, 2.0) > 0.0, 0.05)
        y = y + 0.12 * sev * _rms(y) * scrape / (_rms(scrape) + 1e-12)
    return y
