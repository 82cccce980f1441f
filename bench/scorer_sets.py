"""Small, unlike data sets for comparing scorers (issue 9): the demo data and two variants made here.

The suite's own generator modes (near-identical units, domain shift) belong to ``rcmae/data/demo/`` on the suite
branch; until they land, this script patches the demo generator *in this process only* (never the files of
the package) to make quick stand-ins:

- ``demo``:  demo data, seed 0, fan/slider/valve, 30 train + 15/15 test clips per ID;
- ``near``:  seed 5, fan/gearbox/pump; the three units of a type are copies of ID 00 with the speed 3% and the
  resonances 2% apart per ID (real DCASE units differ that little);
- ``shift``: seed 9, gearbox/slider/valve; every test clip is recorded 5 dB noisier (machine-to-background
  ratio) and 4 dB louder than the training clips: a covariate shift between training and test.

Usage: ``python bench/scorer_sets.py OUT [--sets demo,near,shift]`` writes ``OUT/<set>/dev_data/...``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from rcmae.data import demo
from rcmae.data.demo import plan as demo_plan
from rcmae.data.demo import units as demo_units

SETS = {
    "demo": {"seed": 0, "types": ("fan", "slider", "valve")},
    "near": {"seed": 5, "types": ("fan", "gearbox", "pump")},
    "shift": {"seed": 9, "types": ("gearbox", "slider", "valve")},
}
TRAIN_PER_ID, TEST_PER_ID = 30, 15


def _near_unit(orig):
    def unit(seed: int, machine_type: str, machine_id: str):
        base = orig(seed, machine_type, demo.MACHINE_IDS[0])
        k = demo.MACHINE_IDS.index(machine_id)
        return dataclasses.replace(base, machine_id=machine_id, speed=base.speed * (1 + 0.03 * k),
                                   resonances=tuple(r * (1 + 0.02 * k) for r in base.resonances))
    return unit


def _shifted_plan(orig):
    def plan(seed, machine_type, machine_id, split, label, index):
        p = orig(seed, machine_type, machine_id, split, label, index)
        return dataclasses.replace(p, snr_db=p.snr_db - 5.0, gain_db=p.gain_db + 4.0) if split == "test" else p
    return plan


def make_set(name: str, out: Path) -> Path:
    """Write set ``name`` under ``out`` (the demo generator patched for this call only)."""
    spec = SETS[name]
    unit, plan = demo_units._unit, demo_plan.plan_clip
    try:
        if name == "near":
            demo_units._unit = _near_unit(unit)
        if name == "shift":
            demo_plan.plan_clip = _shifted_plan(plan)
        return demo.make_demo_data(out, seed=spec["seed"], train_per_id=TRAIN_PER_ID, test_per_id=TEST_PER_ID,
                                   progress=False, machine_types=spec["types"], workers=1)
    finally:
        demo_units._unit, demo_plan.plan_clip = unit, plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--sets", default=",".join(SETS))
    args = ap.parse_args()
    for name in args.sets.split(","):
        print(name, make_set(name, args.out / name), flush=True)


if __name__ == "__main__":
    main()
