"""Writing a demo data set: backgrounds, one clip per plan, worker processes, markers and side tables."""

from __future__ import annotations

import csv
import functools
import io
import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy import signal
from tqdm.auto import tqdm

from rcmae.data.audio import write_wav
from rcmae.data.demo.fan import _fan
from rcmae.data.demo.gearbox import _gearbox
from rcmae.data.demo.plan import (
    _LABEL_CODE,
    _SPLIT_CODE,
    BACKGROUND_SECONDS,
    CLIP_SECONDS,
    LEVEL_DBFS,
    MACHINE_TYPES,
    MODES,
    N_BACKGROUNDS,
    N_SAMPLES,
    SAMPLE_RATE,
    TARGET_TRAIN_DEFAULT,
    ClipPlan,
    _ids,
    _mode_key,
    _seed_key,
    plan_clips,
)
from rcmae.data.demo.pump import _pump
from rcmae.data.demo.signals import _harmonics, _impulses, _modes, _rms, _slow
from rcmae.data.demo.slider import _slider
from rcmae.data.demo.units import unit_for
from rcmae.data.demo.valve import _valve
from rcmae.files import atomic_write_text

MARKER = "demo.json"
PARTIAL_MARKER = "demo.partial.json"
CLIPS_CSV = "demo_clips.csv"
FORMAT_VERSION = 1
ATTRIBUTES_CSV = "attributes_00.csv"

# Filled once per process (by make_demo_data or the pool initializer); clips only read it.
_BACKGROUNDS: np.ndarray | None = None


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
