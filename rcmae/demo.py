"""Synthetic demo factory data in the DCASE 2020 Task 2 layout.

``make_demo_data(out)`` writes ``out/dev_data/<type>/{train,test}/{normal,anomaly}_id_XX_NNNNNNNN.wav``:
five machine types (fan, gearbox, pump, slider, valve) with three units (IDs 00, 02, 04) each, 10 s,
16 kHz, 16-bit mono clips. Every clip is a physically motivated machine model (shaft and blade-pass harmonics
with speed drift, flow noise, impacts, structural resonances) mixed with a shared factory background at
-6 to 6 dB SNR as in MIMII, then given a random gain so that loudness carries no label. Anomalies are
subtle and of several kinds per type (see ``ANOMALY_KINDS`` and docs/demo-data.md).

Each clip draws from its own ``numpy.random.Generator`` seeded by (seed, type, ID, split, label, index),
so the bytes depend on the seed only, not on the order of generation or the number of worker processes.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import os
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal
from tqdm.auto import tqdm

from rcmae.audio import write_wav
from rcmae.files import atomic_write_text

SAMPLE_RATE = 16000
CLIP_SECONDS = 10.0
N_SAMPLES = int(SAMPLE_RATE * CLIP_SECONDS)
MACHINE_IDS = ("00", "02", "04")
MACHINE_TYPES = ("fan", "gearbox", "pump", "slider", "valve")
ANOMALY_KINDS: dict[str, tuple[str, ...]] = {
    "fan": ("imbalance", "bearing", "rubbing", "clogging"),
    "gearbox": ("tooth_crack", "wear", "misalignment", "bearing"),
    "pump": ("leak", "clogging", "cavitation", "bearing"),
    "slider": ("rail_damage", "no_grease", "timing", "loose_stop"),
    "valve": ("timing", "chatter", "leak", "contamination"),
}
MARKER = "demo.json"
PARTIAL_MARKER = "demo.partial.json"
CLIPS_CSV = "demo_clips.csv"
FORMAT_VERSION = 1
SNR_RANGE_DB = (-6.0, 6.0)
GAIN_RANGE_DB = (-6.0, 6.0)
# Clip RMS before the random gain, per type: impact-heavy sounds (crest factors up to ~30 dB) sit lower so that
# their peaks stay below full scale.
LEVEL_DBFS = {"fan": -26.0, "gearbox": -26.0, "pump": -26.0, "slider": -28.0, "valve": -36.0}
N_BACKGROUNDS = 4
BACKGROUND_SECONDS = 30.0

# Generator modes (``make_demo_data(mode=...)``, ``rcmae demo-data --mode``); "2020" is the original set and stays
# byte-identical. See docs/demo-data.md.
MODES = ("2020", "near-identical", "domain-shift", "2023")
# near-identical: the units of a type are one design; each ID's speed is the type's base speed times
# (1 + NEAR_SPEED_STEPS[k] + U(-NEAR_SPEED_JITTER, NEAR_SPEED_JITTER)) and each resonance is the base one times
# (1 + U(-NEAR_RESONANCE_SPREAD, NEAR_RESONANCE_SPREAD)): units differ by 1-4 % in speed and at most ~3 % in
# resonance, as real units of one model do.
NEAR_SPEED_STEPS = (-0.015, 0.0, 0.015)
NEAR_SPEED_JITTER = 0.005
NEAR_RESONANCE_SPREAD = 0.015
NEAR_LOAD_SPREAD = 0.05
# domain-shift / 2023: the source domain runs at a few speed settings (percent of nominal, cycled over the clip
# index), the target domain at another setting, another load and in another factory hall (other backgrounds).
SOURCE_SPEEDS = (96, 100, 104)
TARGET_SPEED = 112
TARGET_LOAD_SHIFT = 0.35
BACKGROUND_NAMES = {"source": "A", "target": "B"}
TARGET_TRAIN_DEFAULT = 3
ATTRIBUTES_CSV = "attributes_00.csv"

_TWO_PI = 2.0 * np.pi
_SPLIT_CODE = {"train": 0, "test": 1}
_LABEL_CODE = {"normal": 0, "anomaly": 1}

# Filled once per process (by make_demo_data or the pool initializer); clips only read it.
_BACKGROUNDS: np.ndarray | None = None


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


def _seed_key(*parts: object) -> list[int]:
    """Stable integer entropy for numpy's SeedSequence (crc32 of strings: Python's hash() is salted)."""
    return [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]


# ------------------------------------------------------------------ units and clip plans
@dataclass(frozen=True)
class _Unit:
    """The fixed physical parameters of one machine unit (one machine ID)."""

    machine_type: str
    machine_id: str
    speed: float  # shaft rate / stroke rate / cycle interval, type-specific meaning
    blades: int
    resonances: tuple[float, ...]
    decays: tuple[float, ...]
    load: float  # 0..1: shifts the balance between tonal and noise parts
    band: tuple[float, float]
    extra: float  # one more type-specific parameter (bearing ratio, whine frequency, ...)


def _unit(seed: int, machine_type: str, machine_id: str) -> _Unit:
    """Draw one unit's parameters; units of a type differ the way real ones do (speed, resonances, load)."""
    rng = np.random.default_rng(_seed_key(seed, "unit", machine_type, machine_id))
    k = MACHINE_IDS.index(machine_id) if machine_id in MACHINE_IDS else int(machine_id) // 2
    # Speeds are spread over the IDs (plus a random part) so the units are distinguishable but overlap in kind.
    if machine_type == "fan":
        speed = 16.0 + 3.5 * k + rng.uniform(-0.8, 0.8)
        blades = int(rng.integers(5, 8))
        res = tuple(sorted(rng.uniform([350, 900, 2000], [700, 1800, 3600])))
        band = (80.0, float(rng.uniform(1800, 3000)))
        extra = float(rng.uniform(3.0, 3.6))  # outer-race bearing fault order
    elif machine_type == "gearbox":
        speed = 22.0 + 5.0 * k + rng.uniform(-1.0, 1.0)  # input shaft rate, Hz
        blades = int(rng.integers(17, 30))  # pinion teeth: the gear-mesh frequency is teeth x shaft rate
        res = tuple(sorted(rng.uniform([500, 1300, 2600], [1100, 2400, 4200])))
        band = (float(rng.uniform(100, 200)), float(rng.uniform(2500, 4000)))
        extra = float(rng.uniform(2.6, 3.2))
    elif machine_type == "pump":
        speed = 24.0 + 2.5 * k + rng.uniform(-0.6, 0.6)
        blades = int(rng.integers(5, 9))
        res = tuple(sorted(rng.uniform([250, 700, 1600], [500, 1400, 3000])))
        band = (float(rng.uniform(150, 250)), float(rng.uniform(1200, 2200)))
        extra = float(rng.uniform(3.0, 3.6))
    elif machine_type == "slider":
        speed = 1.6 + 0.45 * k + rng.uniform(-0.1, 0.1)  # full stroke cycle period in seconds
        blades = int(rng.integers(2, 4))
        res = tuple(sorted(rng.uniform([600, 1500, 3000], [1200, 2800, 5000])))
        band = (float(rng.uniform(300, 600)), float(rng.uniform(2500, 4500)))
        extra = float(280.0 + 90.0 * k + rng.uniform(-30, 30))  # motor whine at full speed, Hz
    elif machine_type == "valve":
        speed = 0.9 + 0.35 * k + rng.uniform(-0.08, 0.08)  # open/close cycle interval in seconds
        blades = 0
        res = tuple(sorted(rng.uniform([900, 2200, 4000], [1800, 3800, 6500])))
        band = (float(rng.uniform(800, 1500)), float(rng.uniform(3500, 6000)))
        extra = float(rng.uniform(0.35, 0.55))  # fraction of the cycle the valve is open
    else:
        raise ValueError(f"machine_type={machine_type!r}: unknown demo machine type; use one of {MACHINE_TYPES}")
    decays = tuple(float(d) for d in rng.uniform(0.015, 0.06, len(res)))
    return _Unit(machine_type, machine_id, float(speed), blades, tuple(float(r) for r in res), decays,
                 float(rng.uniform(0.3, 0.9)), band, extra)


def _near_identical_unit(seed: int, machine_type: str, machine_id: str) -> _Unit:
    """A unit of the near-identical mode: the type's base design (ID 00's draw) with small per-unit deviations."""
    base = _unit(seed, machine_type, "00")
    rng = np.random.default_rng(_seed_key(seed, "near-identical", machine_type, machine_id))
    k = MACHINE_IDS.index(machine_id)
    dv = NEAR_SPEED_STEPS[k] + rng.uniform(-NEAR_SPEED_JITTER, NEAR_SPEED_JITTER)
    res = tuple(float(r * (1.0 + rng.uniform(-NEAR_RESONANCE_SPREAD, NEAR_RESONANCE_SPREAD)))
                for r in base.resonances)
    load = float(np.clip(base.load + rng.uniform(-NEAR_LOAD_SPREAD, NEAR_LOAD_SPREAD), 0.0, 1.0))
    return _with_speed(dataclasses.replace(base, machine_id=machine_id, resonances=res, load=load), 1.0 + dv)


def _with_speed(u: _Unit, factor: float) -> _Unit:
    """The unit running ``factor`` times faster (a cycle period shrinks; the slider's motor whine rises)."""
    if u.machine_type in ("fan", "gearbox", "pump"):
        return dataclasses.replace(u, speed=u.speed * factor)
    if u.machine_type == "slider":
        return dataclasses.replace(u, speed=u.speed / factor, extra=u.extra * factor)
    return dataclasses.replace(u, speed=u.speed / factor)  # valve: switching interval


def unit_for(seed: int, plan: ClipPlan) -> _Unit:
    """The physical unit (with its operating condition) that sounds in ``plan``'s clip."""
    if plan.mode == "near-identical":
        return _near_identical_unit(seed, plan.machine_type, plan.machine_id)
    u = _unit(seed, plan.machine_type, plan.machine_id)
    if not plan.domain:
        return u
    speed = float(dict(plan.attributes)["spd"]) / 100.0
    if plan.domain == "target":
        load = u.load + TARGET_LOAD_SHIFT if u.load < 0.55 else u.load - TARGET_LOAD_SHIFT
        u = dataclasses.replace(u, load=float(load))
    return _with_speed(u, speed)


@dataclass(frozen=True)
class ClipPlan:
    """What one clip will be, drawn cheaply without synthesis (so a resumed run can still list every clip).

    Attributes:
        path: the clip's path relative to the data root (``dev_data/<type>/<split>/<label>_id_XX_NNNNNNNN.wav``).
        kind: ``"normal"`` or the anomaly kind (one of ``ANOMALY_KINDS[machine_type]``).
        severity: 0 for normal clips, else 0.35-1.0 (scales the anomaly's strength).
        snr_db: machine-to-background power ratio of the mix (-6 to 6 dB).
        gain_db: random level offset around the type's nominal RMS (-6 to 6 dB).
        background, offset: which shared background recording, and the sample where the excerpt starts.
        mode: the generator mode (one of ``MODES``; ``"2020"`` for the original set).
        domain: ``"source"`` or ``"target"`` in the domain-shift and 2023 modes, else ``""``.
        attributes: ``((name, value), ...)`` of the operating condition (``spd``: speed setting in percent of
            nominal; ``bg``: factory background set A/B), in the domain-shift and 2023 modes, else ``()``.
    """

    path: str
    machine_type: str
    machine_id: str
    split: str
    label: str
    index: int
    kind: str
    severity: float
    snr_db: float
    gain_db: float
    background: int
    offset: int
    mode: str = "2020"
    domain: str = ""
    attributes: tuple[tuple[str, str], ...] = ()


def _mode_key(mode: str, domain: str) -> list[int]:
    """Extra seed entropy of the non-default modes (empty for "2020", so its clips keep their bytes)."""
    return [] if mode == "2020" else _seed_key(mode, domain or "-")


def _attributes(domain: str, index: int) -> tuple[tuple[str, str], ...]:
    """The operating condition of a domain-shift / 2023 clip: source cycles over SOURCE_SPEEDS, target is fixed."""
    if not domain:
        return ()
    speed = SOURCE_SPEEDS[index % len(SOURCE_SPEEDS)] if domain == "source" else TARGET_SPEED
    return (("spd", str(speed)), ("bg", BACKGROUND_NAMES[domain]))


def clip_path(mode: str, machine_type: str, machine_id: str, split: str, label: str, index: int, domain: str = "",
              attributes: tuple[tuple[str, str], ...] = ()) -> str:
    """A clip's path relative to the data root in the mode's layout (2020 names, or 2023 section names)."""
    if mode == "2023":
        tail = "".join(f"_{k}_{v}" for k, v in attributes)
        name = f"section_{machine_id}_{domain}_{split}_{label}_{index:04d}{tail}.wav"
        return f"dev_data/raw/{machine_type}/{split}/{name}"
    return f"dev_data/{machine_type}/{split}/{label}_id_{machine_id}_{index:08d}.wav"


def plan_clip(seed: int, machine_type: str, machine_id: str, split: str, label: str, index: int, *,
              mode: str = "2020", domain: str = "", number: int | None = None) -> ClipPlan:
    """The plan of one clip; depends only on its arguments (not on the other clips of the set).

    ``mode`` and ``domain`` select a generator mode (``MODES``) and, in the domain-shift and 2023 modes, the
    ``"source"`` or ``"target"`` operating condition; ``index`` counts within (ID, split, label, domain).
    ``number`` is the number written in the file name (default ``index``; the domain-shift mode numbers the
    target clips after the source ones, as 2020 names carry no domain).
    """
    extra = _mode_key(mode, domain)
    key = _seed_key(seed, machine_type, machine_id, _SPLIT_CODE[split], _LABEL_CODE[label], index) + extra
    rng = np.random.default_rng(key + [0])
    # SNR and gain are drawn without the label: test normal i and anomaly i share them, so that the two
    # classes have the same level distribution and loudness only reflects the anomaly itself.
    level_rng = np.random.default_rng(_seed_key(seed, machine_type, machine_id, _SPLIT_CODE[split], index, "level")
                                      + extra)
    snr_db = float(level_rng.uniform(*SNR_RANGE_DB))
    gain_db = float(level_rng.uniform(*GAIN_RANGE_DB))
    kinds = ANOMALY_KINDS[machine_type]
    # Kinds cycle over the index so every kind appears equally often in each ID's test set.
    kind = kinds[index % len(kinds)] if label == "anomaly" else "normal"
    severity = float(rng.uniform(0.35, 1.0)) if label == "anomaly" else 0.0
    background = int(rng.integers(N_BACKGROUNDS))
    offset = int(rng.integers(int(BACKGROUND_SECONDS * SAMPLE_RATE) - N_SAMPLES))
    if mode == "2020":
        path = f"dev_data/{machine_type}/{split}/{label}_id_{machine_id}_{index:08d}.wav"
        return ClipPlan(path, machine_type, machine_id, split, label, index, kind, severity, snr_db, gain_db,
                        background, offset)
    attributes = _attributes(domain, index)
    path = clip_path(mode, machine_type, machine_id, split, label, index if number is None else number, domain,
                     attributes)
    return ClipPlan(path, machine_type, machine_id, split, label, index, kind, severity, snr_db, gain_db,
                    background, offset, mode, domain, attributes)


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


_MODELS = {"fan": _fan, "gearbox": _gearbox, "pump": _pump, "slider": _slider, "valve": _valve}


# ------------------------------------------------------------------ background
@functools.lru_cache(maxsize=2)
def make_backgrounds(seed: int, n_backgrounds: int = N_BACKGROUNDS, seconds: float = BACKGROUND_SECONDS,
                     variant: str = "") -> np.ndarray:
    """Synthesise the shared factory background recordings for one seed: ``[n_backgrounds, seconds * 16000]``.

    Each mixes distant machinery hum (mains and another machine's harmonics), occasional distant
    impacts, babble-like speech-shaped noise and a diffuse noise floor, each at a random level.
    ``variant`` (e.g. ``"target"``) draws another hall's recordings; ``""`` is the original set.
    """
    n = int(seconds * SAMPLE_RATE)
    out = np.zeros((n_backgrounds, n))
    for b in range(n_backgrounds):
        rng = np.random.default_rng(_seed_key(seed, "background", b) if not variant
                                    else _seed_key(seed, "background", variant, b))
        f_mains = 50.0 * (1.0 + 0.0005 * _slow(rng, n, 0.2))
        hum = _harmonics(f_mains, np.arange(1.0, 7.0), 1.0 / np.arange(1.0, 7.0) ** 1.5, rng)
        f_far = rng.uniform(20, 45) * (1.0 + 0.003 * _slow(rng, n, 0.5))
        far = _harmonics(f_far, np.arange(1.0, 13.0), rng.uniform(0.2, 1.0, 12) / np.arange(1.0, 13.0), rng)
        far = signal.sosfilt(signal.butter(2, 900, fs=SAMPLE_RATE, output="sos"), far)
        times = np.cumsum(rng.exponential(1.0 / rng.uniform(0.4, 1.5), 200))
        x = _impulses(n, times, rng.uniform(0.2, 1.0, times.size), width=8)
        impacts = _modes(x, rng.uniform(150, 2500, 4), rng.uniform(0.03, 0.2, 4), rng.uniform(0.3, 1.0, 4))
        impacts = signal.sosfilt(signal.butter(2, 3000, fs=SAMPLE_RATE, output="sos"), impacts)
        babble = np.zeros(n)
        for _ in range(int(rng.integers(3, 7))):
            # A talker: noise through three formant resonators, gated by a syllable-rate envelope.
            voice = _modes(rng.standard_normal(n), rng.uniform([350, 1000, 2300], [800, 1800, 3200]),
                           [0.004, 0.003, 0.002], [1.0, 0.6, 0.3])
            env = np.clip(_slow(rng, n, 4.0), 0, None) ** 1.5 * (_slow(rng, n, 0.3) > -0.3)
            babble += voice / _rms(voice) * env
        floor = signal.sosfilt(signal.butter(1, 500, fs=SAMPLE_RATE, output="sos"), rng.standard_normal(n))
        parts = [hum, far, impacts, babble, floor]
        levels_db = rng.uniform([-12, -6, -10, -8, -4], [-4, 0, -2, 0, 0])
        out[b] = sum(10 ** (lv / 20) * p / _rms(p) for p, lv in zip(parts, levels_db, strict=True))
        out[b] /= _rms(out[b])
    out.flags.writeable = False  # cached and shared: nobody may change it
    return out


# ------------------------------------------------------------------ one clip
def synthesize_clip(plan: ClipPlan, seed: int, backgrounds: np.ndarray | None = None) -> np.ndarray:
    """The float32 waveform ``[160000]`` of one planned clip (machine model + background at the plan's SNR and gain).

    ``backgrounds`` defaults to ``make_backgrounds(seed)`` (cached); pass it to avoid the lookup in tight loops.
    Target-domain clips always use ``make_backgrounds(seed, variant="target")``.
    """
    if plan.domain == "target":
        # The target domain's other factory hall (cached per process).
        backgrounds = make_backgrounds(seed, variant="target")
    elif backgrounds is None:
        backgrounds = make_backgrounds(seed)
    key = _seed_key(seed, plan.machine_type, plan.machine_id, _SPLIT_CODE[plan.split],
                    _LABEL_CODE[plan.label], plan.index) + _mode_key(plan.mode, plan.domain)
    rng = np.random.default_rng(key + [1])
    unit = unit_for(seed, plan)
    machine = _MODELS[plan.machine_type](unit, plan.kind, plan.severity, rng, N_SAMPLES)
    machine = machine / _rms(machine)
    bg = backgrounds[plan.background, plan.offset:plan.offset + N_SAMPLES]
    mix = machine + bg * 10 ** (-plan.snr_db / 20)
    y = mix / _rms(mix) * 10 ** ((LEVEL_DBFS[plan.machine_type] + plan.gain_db) / 20)
    peak = float(np.max(np.abs(y)))
    if peak > 0.95:
        # Rare impact-heavy clips: scale down rather than clip (the gain is random anyway).
        y = y * (0.95 / peak)
    return y.astype(np.float32)


def _init_worker(backgrounds: np.ndarray) -> None:
    global _BACKGROUNDS
    _BACKGROUNDS = backgrounds


def _make_one(args: tuple[ClipPlan, int, str]) -> str:
    plan, seed, root = args
    assert _BACKGROUNDS is not None
    write_wav(Path(root) / plan.path, synthesize_clip(plan, seed, _BACKGROUNDS), SAMPLE_RATE)
    return plan.path


# ------------------------------------------------------------------ public API
def _ids(mode: str) -> tuple[str, ...]:
    """Machine IDs (2020 layouts) or the one section "00" per type (2023 mode)."""
    return ("00",) if mode == "2023" else MACHINE_IDS


def plan_clips(seed: int = 0, train_per_id: int = 50, test_per_id: int = 20,
               machine_types: Sequence[str] = MACHINE_TYPES, *, mode: str = "2020",
               target_train_per_id: int = TARGET_TRAIN_DEFAULT) -> list[ClipPlan]:
    """Every clip of a demo set, in a fixed order, with its anomaly kind, severity, SNR and gain.

    In the domain-shift and 2023 modes ``train_per_id`` counts the source training clips and
    ``target_train_per_id`` the target ones; ``test_per_id`` counts the test clips per (domain, label), so a
    unit's test set holds source and target normals and anomalies, ``test_per_id`` of each.
    """
    plans = []
    for machine_type in machine_types:
        for machine_id in _ids(mode):
            if mode in ("2020", "near-identical"):
                plans += [plan_clip(seed, machine_type, machine_id, "train", "normal", i, mode=mode)
                          for i in range(train_per_id)]
                for label in ("normal", "anomaly"):
                    plans += [plan_clip(seed, machine_type, machine_id, "test", label, i, mode=mode)
                              for i in range(test_per_id)]
                continue
            # 2020 names carry no domain: the domain-shift mode numbers the target clips after the source ones;
            # 2023 names count per domain.
            shift = mode == "domain-shift"
            for domain, n in (("source", train_per_id), ("target", target_train_per_id)):
                offset = train_per_id if shift and domain == "target" else 0
                plans += [plan_clip(seed, machine_type, machine_id, "train", "normal", i, mode=mode, domain=domain,
                                    number=offset + i) for i in range(n)]
            for label in ("normal", "anomaly"):
                for domain in ("source", "target"):
                    offset = test_per_id if shift and domain == "target" else 0
                    plans += [plan_clip(seed, machine_type, machine_id, "test", label, i, mode=mode, domain=domain,
                                        number=offset + i) for i in range(test_per_id)]
    return plans


def _settings(seed: int, train_per_id: int, test_per_id: int, machine_types: Sequence[str], mode: str = "2020",
              target_train_per_id: int = TARGET_TRAIN_DEFAULT) -> dict:
    settings = {
        "format": "rcmae-demo",
        "version": FORMAT_VERSION,
        "seed": seed,
        "train_per_id": train_per_id,
        "test_per_id": test_per_id,
        "machine_types": list(machine_types),
        "machine_ids": list(_ids(mode)),
        "sample_rate": SAMPLE_RATE,
        "seconds": CLIP_SECONDS,
    }
    # The original set's marker keeps its bytes: mode keys only for the other modes.
    if mode != "2020":
        settings["mode"] = mode
    if mode in ("domain-shift", "2023"):
        settings["target_train_per_id"] = target_train_per_id
    return settings


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_demo_data(out: str | Path) -> bool:
    """True when ``out`` holds a complete demo set (its ``demo.json`` marker is written last)."""
    marker = _read_json(Path(out) / MARKER)
    return bool(marker) and marker.get("format") == "rcmae-demo" and (Path(out) / "dev_data").is_dir()


def make_demo_data(out: str | Path, seed: int = 0, train_per_id: int = 50, test_per_id: int = 20,
                   progress: bool = True, *, machine_types: Sequence[str] | None = None,
                   workers: int | None = None, mode: str = "2020",
                   target_train_per_id: int = TARGET_TRAIN_DEFAULT) -> Path:
    """Write the demo factory data set under ``out/dev_data/`` and return ``out``.

    Args:
        out: output folder; created if missing. It must be empty, or hold demo data from an earlier
            (possibly interrupted) call: an interrupted call with the same settings is resumed.
        seed: random seed; the same seed gives byte-identical files.
        train_per_id: normal training clips per machine ID (source-domain ones in the domain-shift and 2023
            modes).
        test_per_id: normal and anomalous test clips (each) per machine ID; per domain as well in the
            domain-shift and 2023 modes.
        progress: show a tqdm progress bar.
        machine_types: a subset of ``MACHINE_TYPES`` (default all five); the clips of a type do not
            depend on which other types are generated.
        workers: processes to use (default: up to 2, the cores available).
        mode: ``"2020"`` (the original set, default), ``"near-identical"`` (units of a type differ by a few
            percent), ``"domain-shift"`` (2020 layout, many source and a few target-condition training clips)
            or ``"2023"`` (DCASE 2023 layout: one section per type, source/target domains, attributes in the
            names and ``attributes_00.csv``). See docs/demo-data.md.
        target_train_per_id: target-domain training clips per ID / section (domain-shift and 2023 modes).
    """
    out = Path(out)
    types = tuple(MACHINE_TYPES if machine_types is None else machine_types)
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: unknown demo mode; use one of {list(MODES)}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r}: the demo seed must be a non-negative integer")
    for name, value in (("train_per_id", train_per_id), ("test_per_id", test_per_id),
                        ("target_train_per_id", target_train_per_id)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r}: must be a positive integer number of clips per machine ID")
    seed, train_per_id, test_per_id = int(seed), int(train_per_id), int(test_per_id)
    target_train_per_id = int(target_train_per_id)
    unknown = [m for m in types if m not in MACHINE_TYPES]
    if unknown or not types:
        raise ValueError(f"machine_types={list(types)!r}: choose one or more of {list(MACHINE_TYPES)}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers={workers!r}: must be a positive number of processes")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder; give a new or empty folder for the demo data")

    settings = _settings(seed, train_per_id, test_per_id, types, mode, target_train_per_id)
    marker, partial = out / MARKER, out / PARTIAL_MARKER
    done = _read_json(marker)
    if done and {k: done.get(k) for k in settings} == settings and done.get("mode", "2020") == mode:
        return out
    resumable = _read_json(partial) == settings
    ours = marker.exists() or partial.exists()
    if not ours and (out / "dev_data").exists() and any((out / "dev_data").rglob("*.wav")):
        raise ValueError(f"{out}: already holds a dev_data folder that is not rcmae demo data; "
                         "choose an empty folder")

    plans = plan_clips(seed, train_per_id, test_per_id, types, mode=mode, target_train_per_id=target_train_per_id)
    if ours:
        # An earlier demo set with other settings: drop its clips (and attribute tables) that the new set does not
        # have (stale counts, types or modes would otherwise silently mix into the new set).
        wanted = {p.path for p in plans}
        for old in list((out / "dev_data").rglob("*.wav")) + list((out / "dev_data").rglob(ATTRIBUTES_CSV)):
            if old.relative_to(out).as_posix() not in wanted:
                old.unlink()
        folders = [d for d in (out / "dev_data").rglob("*") if d.is_dir()]
        for folder in sorted(folders, key=lambda d: len(d.parts), reverse=True):
            if not any(folder.iterdir()):
                folder.rmdir()
    for d in {(out / p.path).parent for p in plans}:
        d.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    atomic_write_text(partial, json.dumps(settings, indent=2))
    # Files are written atomically, so any that exist after an interrupted run with the same settings are complete.
    todo = [p for p in plans if not (resumable and (out / p.path).exists())]

    backgrounds = make_backgrounds(seed)
    n_workers = workers or min(2, os.cpu_count() or 1)
    jobs = [(p, seed, str(out)) for p in todo]
    bar = tqdm(total=len(todo), desc="demo data", unit="clip", disable=not progress)
    if n_workers == 1 or len(todo) < 8:
        _init_worker(backgrounds)
        for job in jobs:
            _make_one(job)
            bar.update()
    else:
        with ProcessPoolExecutor(n_workers, initializer=_init_worker, initargs=(backgrounds,)) as pool:
            for _ in pool.map(_make_one, jobs, chunksize=4):
                bar.update()
    bar.close()

    _write_clip_table(out / CLIPS_CSV, plans)
    if mode == "2023":
        _write_attribute_tables(out, plans)
    counts = _counts(plans, types)
    # The marker goes last: is_demo_data() is only true for a complete set.
    atomic_write_text(marker, json.dumps({**settings, "counts": counts, "clips": len(plans)}, indent=2))
    partial.unlink(missing_ok=True)
    return out


def _counts(plans: list[ClipPlan], types: Sequence[str]) -> dict:
    """Per type: clip counts (2020 mode: train / test_normal / test_anomaly; the domain modes add per-domain ones)."""
    counts: dict = {}
    for m in types:
        mine = [p for p in plans if p.machine_type == m]
        c = {"train": sum(p.split == "train" for p in mine),
             "test_normal": sum(p.split == "test" and p.label == "normal" for p in mine),
             "test_anomaly": sum(p.split == "test" and p.label == "anomaly" for p in mine)}
        if any(p.domain for p in mine):
            for d in ("source", "target"):
                c[f"train_{d}"] = sum(p.split == "train" and p.domain == d for p in mine)
                c[f"test_normal_{d}"] = sum(p.split == "test" and p.label == "normal" and p.domain == d for p in mine)
                c[f"test_anomaly_{d}"] = sum(p.split == "test" and p.label == "anomaly" and p.domain == d
                                             for p in mine)
        counts[m] = c
    return counts


def _write_clip_table(path: Path, plans: list[ClipPlan]) -> None:
    """Per-clip ground truth for analysis: anomaly kind, severity, SNR and gain of every file.

    The domain-shift and 2023 modes add the domain and the attributes (``spd=104;bg=A``).
    """
    with_domain = any(p.domain for p in plans)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = ["path", "machine_type", "machine_id", "split", "label", "kind", "severity", "snr_db", "gain_db"]
    w.writerow(head + (["domain", "attributes"] if with_domain else []))
    for p in plans:
        row = [p.path, p.machine_type, p.machine_id, p.split, p.label, p.kind, f"{p.severity:.3f}",
               f"{p.snr_db:.2f}", f"{p.gain_db:.2f}"]
        if with_domain:
            row += [p.domain, ";".join(f"{k}={v}" for k, v in p.attributes)]
        w.writerow(row)
    atomic_write_text(path, buf.getvalue())


def _write_attribute_tables(out: Path, plans: list[ClipPlan]) -> None:
    """``dev_data/raw/<type>/attributes_00.csv`` as in the DCASE 2023 sets: ``file_name,d1p,d1v,d2p,d2v``.

    ``file_name`` is ``<type>/<split>/<clip name>``; one row per clip, training and test.
    """
    by_type: dict[str, list[ClipPlan]] = {}
    for p in plans:
        by_type.setdefault(p.machine_type, []).append(p)
    for machine_type, mine in by_type.items():
        n_attr = max(len(p.attributes) for p in mine)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["file_name"] + [f"d{i + 1}{x}" for i in range(n_attr) for x in ("p", "v")])
        for p in sorted(mine, key=lambda q: q.path):
            name = Path(p.path).name
            w.writerow([f"{machine_type}/{p.split}/{name}"] + [x for kv in p.attributes for x in kv])
        atomic_write_text(out / "dev_data" / "raw" / machine_type / ATTRIBUTES_CSV, buf.getvalue())
