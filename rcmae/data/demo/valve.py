"""The demo factory's valve: open/close clicks and flow bursts; leaks, chatter and missing clicks."""

from __future__ import annotations

import numpy as np

from rcmae.data.demo.plan import CLIP_SECONDS, SAMPLE_RATE
from rcmae.data.demo.signals import _band_noise, _gate, _impulses, _modes, _slow
from rcmae.data.demo.units import _Unit


def _valve(u: _Unit, kind: str, sev: float, rng: np.random.Generator, n: int) -> np.ndarray:
    interval = u.speed * (1.0 + 0.01 * rng.standard_normal())
    open_frac = u.extra
    jitter = 0.03
    if kind == "timing":
        # A sticky spool: the valve stays open too long or too short, and switches less regularly.
        open_frac *= 1.0 + rng.choice([-1.0, 1.0]) * 0.5 * sev
        jitter = 0.03 + 0.3 * sev
    n_ev = int(CLIP_SECONDS / interval) + 3
    opens = np.cumsum(interval * (1.0 + jitter * rng.standard_normal(n_ev))) - rng.uniform(0, interval) - interval
    closes = opens + interval * open_frac * (1.0 + jitter * rng.standard_normal(n_ev))
    t = np.arange(n) / SAMPLE_RATE
    idx_open = np.searchsorted(opens, t, side="right") - 1
    is_open = (idx_open >= 0) & (t < closes[np.clip(idx_open, 0, None)])
    gate = _gate(is_open, 0.015)
    # Flow noise while open stays well below the switching clicks, as in real solenoid valves.
    hiss_level = 0.04 + 0.06 * u.load
    hiss = _band_noise(rng, n, *u.band) * (1.0 + 0.2 * _slow(rng, n, 4.0))
    y = hiss_level * hiss * gate
    open_amp = rng.uniform(0.85, 1.0, n_ev)
    close_amp = rng.uniform(0.6, 0.75, n_ev)
    gains = [1.0, 0.7, 0.5]
    # Small, stiff valve bodies ring briefly: a quarter of the generic modal decay times.
    decays = [0.25 * d for d in u.decays]
    freqs = list(u.resonances)
    # Normalise by the peak of one normal click so anomalies change the click level, not the normaliser.
    click_peak = np.max(np.abs(_modes(_impulses(2000, np.array([0.01]), np.array([1.0]), width=2),
                                      freqs, decays, gains)))
    if kind == "contamination":
        # Debris on the seat damps the closing impact and detunes the body.
        close_amp *= 1.0 - 0.3 * sev
        decays = [d * (1.0 - 0.3 * sev) for d in decays]
        freqs = [f * (1.0 - 0.1 * sev) for f in freqs]
    x = _impulses(n, np.concatenate([opens, closes]), np.concatenate([open_amp, close_amp]), width=2)
    if kind == "chatter":
        # The armature bounces: a few weak extra clicks tens of ms after each switching.
        events = np.concatenate([opens, closes])
        k = int(rng.integers(2, 5))
        extra_t = (events[:, None] + np.cumsum(rng.uniform(0.012, 0.035, (events.size, k)), axis=1)).ravel()
        extra_a = (0.25 + 0.45 * sev) * rng.uniform(0.4, 1.0, extra_t.size)
        x = x + _impulses(n, extra_t, extra_a)
    # A broadband snap (the impulse itself) plus the body's ringing modes.
    clicks = (_modes(x, freqs, decays, gains) + 0.1 * x) / click_peak
    y = y + clicks
    if kind == "leak":
        # Gas passing the closed seat: a faint high hiss while the valve should be silent.
        lo = rng.uniform(4000, 5500)
        y = y + 0.3 * sev * hiss_level * _band_noise(rng, n, lo, lo * 1.35) * (1.0 - gate)
    return y
