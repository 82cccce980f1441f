"""Demo machine units: the physical parameters of each (type, ID), near-identical and speed-shifted variants."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from rcmae.data.demo.plan import (
    MACHINE_IDS,
    MACHINE_TYPES,
    NEAR_LOAD_SPREAD,
    NEAR_RESONANCE_SPREAD,
    NEAR_SPEED_JITTER,
    NEAR_SPEED_STEPS,
    TARGET_LOAD_SHIFT,
    ClipPlan,
    _seed_key,
)


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
