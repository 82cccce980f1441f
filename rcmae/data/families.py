"""Two synthetic machine families built apart from the demo factory: belt conveyors and piston compressors.

The report suite (docs/benchmark.md) needs machine sounds that no choice of rcmae ever looked at and that do not
come from the demo factory's recipe, whose quirks every default was chosen on. This module shares no synthesis
code with :mod:`rcmae.data.demo` (an import contract in pyproject.toml forbids the import): its own sources, its
own units, its own anomalies, written down before any detector ran on them. Only their strength (``severity``)
was set afterwards, once, on a seed that is never reported and with the `knn` baseline alone
(bench/results/decisions.md, decision 2).

- ``conveyor``: a belt conveyor. Motor hum (twice the line frequency) and shaft harmonics, idler rollers struck
  as the belt passes (each strike rings the roller's own resonance), belt friction noise swelling once per belt
  revolution. Anomalies: ``squeal`` (a seized idler: a wandering narrow-band tone, on and off), ``splice`` (a
  damaged belt joint: a heavy low thud once per revolution), ``misalign`` (the belt rubbing the frame: a higher
  friction band pulsing at the roller rate).
- ``compressor``: a two-cylinder piston compressor. Per crank turn two compression pulses (low-frequency noise
  bursts) each followed by a valve click (a short high resonance), over motor hum. Anomalies: ``leak`` (hiss
  during each compression), ``knock`` (a loose rod: a mid-frequency knock at top dead centre), ``valve`` (a worn
  valve spring: the click rings lower and its timing scatters; nothing is added).

Loudness cannot tell the classes apart by construction: every clip, normal or anomalous, is scaled to an RMS level
drawn from one distribution (uniform in ``LEVEL_DB``). The suite reports a per-clip loudness detector's AUC beside
each set (:func:`rcmae.evaluation.loudness.loudness_auc`) to show it.

Layout: DCASE 2020 (``dev_data/<type>/train/normal_id_XX_NNNNNNNN.wav``, ``test/{normal,anomaly}_id_...``), 16 kHz,
10 s, 16-bit PCM. The same seed gives byte-identical files; each clip depends only on (seed, type, unit, split,
label, number), so sizes and type subsets never change the clips they share.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal
from tqdm.auto import tqdm

from rcmae.data.audio import write_wav
from rcmae.files import atomic_write_text

__all__ = ["FAMILIES", "KINDS", "make_family_data"]

SR = 16000
SECONDS = 10.0
FAMILIES = ("conveyor", "compressor")
KINDS = {"conveyor": ("squeal", "splice", "misalign"), "compressor": ("leak", "knock", "valve")}
MARKER = "families.json"  # written last: the set is complete
PARTIAL = "families.partial.json"
CLIPS_CSV = "families_clips.csv"
# Anomaly strength: the anomalous component's RMS relative to the normal mix, in dB (uniform in the range).
SNR_DB = {"squeal": (-22.0, -12.0), "splice": (-16.0, -8.0), "misalign": (-18.0, -10.0),
          "leak": (-20.0, -12.0), "knock": (-16.0, -8.0)}
LEVEL_DB = (-32.0, -22.0)  # every clip's RMS in dBFS, normal or not
_TYPE_CODE = {"conveyor": 31, "compressor": 47}
_SPLIT_CODE = {("train", "normal"): 1, ("test", "normal"): 2, ("test", "anomaly"): 3}


@dataclass(frozen=True)
class Clip:
    path: str
    machine_type: str
    machine_id: str
    split: str
    label: str
    number: int


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def _unit(seed: int, machine_type: str, unit: int) -> dict:
    """A unit's fixed build: its rates, resonances and mix (drawn from the unit's own stream)."""
    r = _rng(seed, _TYPE_CODE[machine_type], unit, 0)
    if machine_type == "conveyor":
        return {
            "line": float(r.choice([50.0, 60.0])),
            "shaft": float(r.uniform(23.0, 29.0)),
            "harmonics": r.uniform(0.2, 1.0, 6),
            "roller_rate": float(r.uniform(4.0, 8.0)),
            "belt_rate": float(r.uniform(0.25, 0.5)),
            "roller_f": float(r.uniform(700.0, 1600.0)),
            "friction_lo": float(r.uniform(900.0, 2000.0)),
            "friction_width": float(r.uniform(1.8, 3.0)),
            "mix": r.uniform(0.5, 1.5, 3),
        }
    return {
        "line": float(r.choice([50.0, 60.0])),
        "crank": float(r.uniform(12.0, 22.0)),
        "harmonics": r.uniform(0.2, 1.0, 5),
        "pulse_hi": float(r.uniform(250.0, 450.0)),
        "valve_f": float(r.uniform(2000.0, 3500.0)),
        "valve_at": float(r.uniform(0.12, 0.22)),
        "mix": r.uniform(0.5, 1.5, 3),
    }


def _resonator(x: np.ndarray, freq: float, decay_s: float) -> np.ndarray:
    """``x`` through a two-pole resonance at ``freq`` whose impulse response decays by 1/e in ``decay_s``."""
    radius = np.exp(-1.0 / (decay_s * SR))
    w = 2 * np.pi * freq / SR
    return signal.lfilter([1.0 - radius], [1.0, -2.0 * radius * np.cos(w), radius * radius], x)


def _band_noise(r: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    sos = signal.butter(2, [lo, min(hi, 0.45 * SR)], btype="bandpass", fs=SR, output="sos")
    return signal.sosfilt(sos, r.standard_normal(n))


def _strikes(n: int, times: np.ndarray, amps: np.ndarray) -> np.ndarray:
    x = np.zeros(n)
    idx = np.round(times * SR).astype(int)
    keep = (idx >= 0) & (idx < n)
    np.add.at(x, idx[keep], amps[keep])
    return x


def _train(r: np.random.Generator, rate: float, jitter: float, seconds: float = SECONDS) -> np.ndarray:
    """Event times of a jittered periodic train at ``rate`` Hz with a random start."""
    period = 1.0 / rate
    count = int(seconds * rate) + 2
    gaps = period * (1.0 + jitter * r.standard_normal(count))
    return r.uniform(0.0, period) + np.concatenate([[0.0], np.cumsum(np.maximum(gaps, 0.2 * period))[:-1]])


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / (np.sqrt(np.mean(x * x)) + 1e-12)


def _hum(r: np.random.Generator, t: np.ndarray, line: float, shaft: float, harmonics: np.ndarray) -> np.ndarray:
    y = np.sin(2 * np.pi * 2 * line * t + r.uniform(0, 2 * np.pi))
    for k, a in enumerate(harmonics, 1):
        y += a * np.sin(2 * np.pi * k * shaft * t + r.uniform(0, 2 * np.pi))
    return y


def _conveyor(u: dict, r: np.random.Generator, kind: str | None, severity: float = 1.0
              ) -> tuple[np.ndarray, np.ndarray | None]:
    n = int(SR * SECONDS)
    t = np.arange(n) / SR
    speed = 1.0 + 0.01 * r.standard_normal()
    hum = _hum(r, t, u["line"], u["shaft"] * speed, u["harmonics"])
    times = _train(r, u["roller_rate"] * speed, 0.04)
    rolls = _resonator(_strikes(n, times, r.lognormal(0.0, 0.3, len(times))), u["roller_f"], 0.015)
    rolls += 0.4 * _resonator(_strikes(n, times, r.lognormal(0.0, 0.3, len(times))), 1.7 * u["roller_f"], 0.008)
    belt_phase = r.uniform(0, 2 * np.pi)
    swell = 1.0 + 0.35 * np.sin(2 * np.pi * u["belt_rate"] * speed * t + belt_phase)
    lo = u["friction_lo"]
    friction = swell * _band_noise(r, n, lo, lo * u["friction_width"])
    w = u["mix"]
    normal = w[0] * _unit_rms(hum) + w[1] * _unit_rms(rolls) + w[2] * _unit_rms(friction)
    if kind is None:
        return normal, None
    if kind == "squeal":
        f0 = r.uniform(2500.0, 5000.0)
        wander = 1.0 + 0.02 * np.sin(2 * np.pi * r.uniform(0.2, 0.5) * t + r.uniform(0, 2 * np.pi))
        tone = np.sin(2 * np.pi * np.cumsum(f0 * wander) / SR)
        gate = np.zeros(n)
        for start in r.uniform(0.0, SECONDS - 1.0, r.integers(2, 5)):
            seg = slice(int(start * SR), int(min(SECONDS, start + r.uniform(1.0, 3.0)) * SR))
            gate[seg] = 1.0
        extra = signal.sosfiltfilt(signal.butter(2, 20.0, fs=SR, output="sos"), gate) * tone
    elif kind == "splice":
        period = 1.0 / (u["belt_rate"] * speed)
        thuds = r.uniform(0.0, period) + period * np.arange(int(SECONDS / period) + 1)
        extra = _resonator(_strikes(n, thuds, r.uniform(0.8, 1.2, len(thuds))), r.uniform(250.0, 400.0), 0.06)
        extra += 0.3 * _resonator(_strikes(n, thuds + 0.02, np.ones(len(thuds))), 1.3 * u["roller_f"], 0.01)
    else:  # misalign
        hi = lo * u["friction_width"]
        pulse = 0.5 * (1.0 + np.sin(2 * np.pi * u["roller_rate"] * speed * t + r.uniform(0, 2 * np.pi)))
        extra = pulse ** 2 * _band_noise(r, n, hi, 1.5 * hi)
    return normal, extra


def _compressor(u: dict, r: np.random.Generator, kind: str | None, severity: float = 1.0
                ) -> tuple[np.ndarray, np.ndarray | None]:
    n = int(SR * SECONDS)
    t = np.arange(n) / SR
    crank = u["crank"] * (1.0 + 0.01 * r.standard_normal())
    hum = _hum(r, t, u["line"], u["line"] / 2.0 * 0.97, u["harmonics"])
    turns = _train(r, crank, 0.01)
    strokes = np.sort(np.concatenate([turns, turns + 0.5 / crank]))  # two cylinders, half a turn apart
    burst = int(0.3 / crank * SR)
    envelope = np.zeros(n)
    for s in np.round(strokes * SR).astype(int):
        lo, hi = max(s, 0), min(s + burst, n)
        if lo < hi:
            envelope[lo:hi] += np.hanning(burst)[lo - s: hi - s]
    pulses = envelope * _band_noise(r, n, 40.0, u["pulse_hi"])
    worn = kind == "valve"
    # A worn spring: the click scatters up to 8x more and rings 10-20 % lower, both scaled by the severity.
    # (Written so that severity 1 computes exactly what the first recipe did.)
    spread = 0.08 if severity == 1.0 else 0.01 + 0.07 * severity
    scatter = (spread if worn else 0.01) / crank
    click_times = strokes + u["valve_at"] / crank + scatter * r.standard_normal(len(strokes))
    shift = r.uniform(0.8, 0.9) if worn else 1.0
    valve_f = u["valve_f"] * (shift if severity == 1.0 else 1.0 - severity * (1.0 - shift))
    clicks = _resonator(_strikes(n, click_times, r.lognormal(0.0, 0.2, len(strokes))), valve_f, 0.004)
    w = u["mix"]
    normal = w[0] * _unit_rms(hum) + w[1] * _unit_rms(pulses) + w[2] * _unit_rms(clicks)
    if kind is None or worn:
        return normal, None
    if kind == "leak":
        extra = envelope * _band_noise(r, n, 4000.0, 7000.0)
    else:  # knock
        hit = r.random(len(turns)) < 0.7
        at = turns[hit] + r.uniform(-0.01, 0.01) / crank
        extra = _resonator(_strikes(n, at, r.uniform(0.7, 1.3, len(at))), r.uniform(800.0, 1200.0), 0.012)
    return normal, extra


def synthesize(seed: int, clip: Clip, severity: float = 1.0) -> tuple[np.ndarray, dict]:
    """One clip's waveform (float32, 10 s at 16 kHz) and its ground truth (kind, snr_db, level_db).

    ``severity`` in (0, 1] scales every anomaly: an added component by ``20 log10(severity)`` dB, a worn valve's
    shift and scatter proportionally. 1 is the recipe as written first; the same draws are made at every severity,
    so only the anomalies' strength changes.
    """
    unit = int(clip.machine_id)
    u = _unit(seed, clip.machine_type, unit)
    r = _rng(seed, _TYPE_CODE[clip.machine_type], unit, _SPLIT_CODE[(clip.split, clip.label)], clip.number)
    kinds = KINDS[clip.machine_type]
    kind = kinds[int(r.integers(len(kinds)))] if clip.label == "anomaly" else None
    make = _conveyor if clip.machine_type == "conveyor" else _compressor
    normal, extra = make(u, r, kind, severity)
    snr = None
    if extra is not None:
        snr = float(r.uniform(*SNR_DB[kind])) + 20 * np.log10(severity)
        normal = normal + _unit_rms(extra) * np.sqrt(np.mean(normal * normal)) * 10 ** (snr / 20)
    # Room and microphone: a pinkish floor 25-35 dB under the machine.
    floor = signal.lfilter([1.0], [1.0, -0.97], r.standard_normal(len(normal)))
    y = normal + _unit_rms(floor) * np.sqrt(np.mean(normal * normal)) * 10 ** (-r.uniform(25.0, 35.0) / 20)
    level = float(r.uniform(*LEVEL_DB))
    y = _unit_rms(y) * 10 ** (level / 20)
    return y.astype(np.float32), {"kind": kind or "", "snr_db": snr, "level_db": level}


def plan(seed: int, machine_types: Sequence[str], ids: int, train_per_id: int, test_per_id: int) -> list[Clip]:
    clips = []
    for mtype in machine_types:
        for k in range(ids):
            mid = f"{2 * k:02d}"
            for split, label, count in (("train", "normal", train_per_id), ("test", "normal", test_per_id),
                                        ("test", "anomaly", test_per_id)):
                for i in range(count):
                    name = f"{label}_id_{mid}_{i:08d}.wav"
                    clips.append(Clip(f"dev_data/{mtype}/{split}/{name}", mtype, mid, split, label, i))
    return clips


def make_family_data(out: str | Path, seed: int = 0, machine_types: Sequence[str] = FAMILIES, ids: int = 2,
                     train_per_id: int = 30, test_per_id: int = 10, severity: float = 1.0,
                     progress: bool = True) -> Path:
    """Write a conveyor / compressor set under ``out/dev_data/`` (DCASE 2020 layout) and return ``out``.

    Args:
        out: an empty (or missing) folder, or one holding this generator's earlier (possibly interrupted) output:
            the same settings are reused or resumed, other settings are rewritten.
        seed: the same seed gives byte-identical files.
        machine_types: a subset of ``FAMILIES``.
        ids: machine IDs per type (named 00, 02, 04, ...).
        train_per_id: normal training clips per ID.
        test_per_id: normal and anomalous test clips (each) per ID.
        severity: anomaly strength in (0, 1] (:func:`synthesize`); normal clips do not depend on it.

    Ground truth (anomaly kind, its strength, every clip's level) goes to ``families_clips.csv``; ``families.json``
    is written last, so its presence means the set is complete.
    """
    out = Path(out)
    types = list(machine_types)
    if not types or any(m not in FAMILIES for m in types):
        raise ValueError(f"machine_types={types!r}: choose one or more of {list(FAMILIES)}")
    for name, value in (("seed", seed), ("ids", ids), ("train_per_id", train_per_id), ("test_per_id", test_per_id)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < (0 if name == "seed" else 1):
            raise ValueError(f"{name}={value!r}: must be a {'non-negative' if name == 'seed' else 'positive'} integer")
    if not 0.0 < float(severity) <= 1.0:
        raise ValueError(f"severity={severity!r}: must be in (0, 1] (1 = the anomalies as first written)")
    settings = {"generator": "rcmae.data.families", "seed": int(seed), "machine_types": types, "ids": int(ids),
                "train_per_id": int(train_per_id), "test_per_id": int(test_per_id)}
    if severity != 1.0:  # (sets written before severity existed keep their settings, and so their marker)
        settings["severity"] = float(severity)

    def read(path: Path) -> dict | None:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    done = read(out / MARKER)
    if done and done.get("settings") == settings:
        return out
    ours = (out / MARKER).exists() or (out / PARTIAL).exists()
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder; give a new or empty folder for the family data")
    if not ours and out.is_dir() and any(out.iterdir()):
        raise ValueError(f"{out}: not empty and not written by rcmae.data.families; choose an empty folder")
    clips = plan(seed, types, ids, train_per_id, test_per_id)
    resumable = read(out / PARTIAL) == settings
    if ours and not resumable:
        wanted = {c.path for c in clips}
        for old in (out / "dev_data").rglob("*.wav") if (out / "dev_data").is_dir() else []:
            if old.relative_to(out).as_posix() not in wanted:
                old.unlink()
    (out / MARKER).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / PARTIAL, json.dumps(settings, indent=2))
    truth = []
    for clip in tqdm(clips, desc="family data", unit="clip", disable=not progress):
        y, info = synthesize(seed, clip, severity)
        truth.append((clip, info))
        if not (resumable and (out / clip.path).exists()):
            write_wav(out / clip.path, y, SR)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "machine_type", "machine_id", "split", "label", "kind", "snr_db", "level_db"])
    for clip, info in truth:
        snr = "" if info["snr_db"] is None else f"{info['snr_db']:.2f}"
        w.writerow([clip.path, clip.machine_type, clip.machine_id, clip.split, clip.label, info["kind"], snr,
                    f"{info['level_db']:.3f}"])
    atomic_write_text(out / CLIPS_CSV, buf.getvalue())
    atomic_write_text(out / MARKER, json.dumps({"settings": settings, "clips": len(clips)}, indent=2))
    (out / PARTIAL).unlink(missing_ok=True)
    return out
