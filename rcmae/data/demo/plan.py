"""What the demo factory writes: its constants, modes and the plan of every clip (path, label, kind, severity)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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
SNR_RANGE_DB = (-6.0, 6.0)
GAIN_RANGE_DB = (-6.0, 6.0)
# Clip RMS before the random gain, per type: impact-heavy sounds (crest factors up to ~30 dB) sit lower so that
# their peaks stay below full scale.
LEVEL_DBFS = {"fan": -26.0, "gearbox": -26.0, "pump": -26.0, "slider": -28.0, "valve": -36.0}

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
_SPLIT_CODE = {"train": 0, "test": 1}
_LABEL_CODE = {"normal": 0, "anomaly": 1}


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
N_BACKGROUNDS = 4
BACKGROUND_SECONDS = 30.0


def _seed_key(*parts: object) -> list[int]:
    """Stable integer entropy for numpy's SeedSequence (crc32 of strings: Python's hash() is salted)."""
    return [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]
