"""Demo generator modes (near-identical units, domain shift, DCASE 2023 layout) and the default set's bytes."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from rcmae import cli, data
from rcmae.data import demo

# sha256 of files written by `make_demo_data(out, seed=0, train_per_id=1, test_per_id=1,
# machine_types=["fan", "valve"], workers=1)`, computed with the generator as it was BEFORE the modes were added
# (commit d4a6e6e): the default set must stay byte-identical.
DEFAULT_DIGESTS = {
    "demo.json": "5c79d10b22a0f31be5eea8f36259a511f08fe61ae1b80b8f45573fc4e13f770e",
    "demo_clips.csv": "29e592d7cdaa650eb469b0123d8025a2bafd8ba623dff4a07b5772c0adb01694",
    "dev_data/fan/test/anomaly_id_00_00000000.wav": "fbf6fcaf706f58733d2892dc4d8468d10f8c32645b5efe43d2590b381ed5b625",
    "dev_data/fan/train/normal_id_04_00000000.wav": "c171c86147badfc6b2de13a145aac08e3240474664aef9455eb0037a5d96daef",
    "dev_data/valve/test/normal_id_02_00000000.wav":
        "cc31a7744450d8a58187016d19caf4305b0fa34e81887cf0e8e13f2aaef80d12",
    "dev_data/valve/test/anomaly_id_04_00000000.wav":
        "4ea2fc5bdcde08529823da582ae42a46f7a3b6487ee126b4c2d204dd65517f83",
    "dev_data/valve/train/normal_id_00_00000000.wav":
        "ef9c9917eb4d0939a1c2516d8f5ba1b92276369de748c9a3b8ba300866aadc0f",
}


def test_default_set_is_byte_identical_to_before_the_modes(tmp_path):
    out = demo.make_demo_data(tmp_path / "d", seed=0, train_per_id=1, test_per_id=1, progress=False,
                              machine_types=["fan", "valve"], workers=1)
    got = {rel: hashlib.sha256((out / rel).read_bytes()).hexdigest() for rel in DEFAULT_DIGESTS}
    assert got == DEFAULT_DIGESTS
    assert not (out / "dev_data" / "raw").exists()


def _blade_pass_hz(plan: demo.ClipPlan, seed: int = 0) -> float:
    """The fan's strongest tone near its expected blade-pass frequency, from the clip's own spectrum (+30 dB SNR)."""
    y = demo.synthesize_clip(dataclasses.replace(plan, snr_db=30.0), seed).astype(np.float64)
    spec = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    freqs = np.fft.rfftfreq(y.size, 1.0 / demo.SAMPLE_RATE)
    u = demo.unit_for(seed, plan)
    expect = u.speed * u.blades
    band = (freqs > 0.85 * expect) & (freqs < 1.15 * expect)
    return float(freqs[band][np.argmax(spec[band])])


def _pairwise_rel(values) -> list[float]:
    return [abs(a / b - 1.0) for a, b in itertools.permutations(values, 2)]


def test_near_identical_units_differ_by_a_few_percent():
    for machine_type in demo.MACHINE_TYPES:
        units = [demo.unit_for(0, demo.plan_clip(0, machine_type, i, "train", "normal", 0, mode="near-identical"))
                 for i in demo.MACHINE_IDS]
        speed = _pairwise_rel([u.speed for u in units])
        # Steps of 1.5 % +- 0.5 %: neighbours 0.5-2.5 % apart, the outer two at most ~4 %.
        assert max(speed) <= 0.042 and min(speed) >= 0.004, (machine_type, speed)
        for k in range(3):
            res = _pairwise_rel([u.resonances[k] for u in units])
            assert max(res) <= 0.031, (machine_type, res)
        assert len({(u.blades, u.band, u.decays) for u in units}) == 1
        # The original mode's units are far more different (that is what the mode removes).
        orig = [demo.unit_for(0, demo.plan_clip(0, machine_type, i, "train", "normal", 0)) for i in demo.MACHINE_IDS]
        assert max(_pairwise_rel([u.speed for u in orig])) > 0.08


def test_near_identical_fundamentals_measured_in_the_audio():
    plans = [demo.plan_clip(0, "fan", i, "train", "normal", 0, mode="near-identical") for i in demo.MACHINE_IDS]
    measured = [_blade_pass_hz(p) for p in plans]
    nominal = [demo.unit_for(0, p).speed * demo.unit_for(0, p).blades for p in plans]
    # Each clip has its own ~0.3 % speed offset and a slow drift: the measured tone is within 1.5 % of the unit's.
    assert all(abs(m / n - 1) < 0.015 for m, n in zip(measured, nominal, strict=True)), (measured, nominal)
    assert max(_pairwise_rel(measured)) < 0.06


def test_domain_shift_mode_counts_names_and_shift(tmp_path):
    out = demo.make_demo_data(tmp_path / "ds", seed=0, train_per_id=4, test_per_id=2, progress=False,
                              machine_types=["fan"], workers=1, mode="domain-shift", target_train_per_id=2)
    index = data.index_dataset(out)
    assert len(index) == 3 * (4 + 2 + 2 * 2 * 2)
    rows = list(csv.DictReader((out / demo.CLIPS_CSV).open()))
    assert len(rows) == len(index)
    for r in rows:
        parsed = data.parse_name(r["path"])
        assert parsed["machine_id"] == r["machine_id"] and parsed["label"] == r["label"]
    per = {(r["machine_id"], r["split"], r["label"], r["domain"]): 0 for r in rows}
    for r in rows:
        per[(r["machine_id"], r["split"], r["label"], r["domain"])] += 1
    for i in demo.MACHINE_IDS:
        assert per[(i, "train", "normal", "source")] == 4 and per[(i, "train", "normal", "target")] == 2
        for label, domain in itertools.product(("normal", "anomaly"), ("source", "target")):
            assert per[(i, "test", label, domain)] == 2
    # Target training clips are numbered after the source ones (2020 names carry no domain).
    targets = sorted(Path(r["path"]).name for r in rows if r["domain"] == "target" and r["split"] == "train")
    assert targets[:2] == ["normal_id_00_00000004.wav", "normal_id_00_00000005.wav"]
    meta = json.loads((out / demo.MARKER).read_text())
    assert meta["mode"] == "domain-shift" and meta["counts"]["fan"]["train_target"] == 6
    # The target condition runs 12 % faster than the 100 % source setting: measured in the audio.
    src = demo.plan_clip(0, "fan", "02", "train", "normal", 1, mode="domain-shift", domain="source")
    tgt = demo.plan_clip(0, "fan", "02", "train", "normal", 0, mode="domain-shift", domain="target")
    assert dict(src.attributes)["spd"] == "100" and dict(tgt.attributes)["spd"] == str(demo.TARGET_SPEED)
    ratio = _blade_pass_hz(tgt) / _blade_pass_hz(src)
    assert abs(ratio - demo.TARGET_SPEED / 100) < 0.015, ratio
    # ... and hums in another hall: the target backgrounds differ from the source ones.
    assert not np.allclose(demo.make_backgrounds(0, variant="target")[0, :1000], demo.make_backgrounds(0)[0, :1000])


def test_2023_mode_layout_attributes_and_parsing(tmp_path):
    out = tmp_path / "d23"
    assert cli.main(["demo-data", str(out), "--mode", "2023", "--train-per-id", "5", "--target-train-per-id", "1",
                     "--test-per-id", "1", "--quiet"]) == 0
    wavs = sorted(out.rglob("*.wav"))
    per_type = 5 + 1 + 4
    assert len(wavs) == len(demo.MACHINE_TYPES) * per_type
    for w in wavs:
        rel = w.relative_to(out)
        assert rel.parts[:2] == ("dev_data", "raw") and rel.parts[2] in demo.MACHINE_TYPES
        parsed = data.parse_name(w)
        assert parsed["section"] == "00" and parsed["domain"] in ("source", "target")
        assert parsed["split"] == rel.parts[3]
        # DCASE 2023: section_00_<domain>_<split>_<label>_NNNN_<attr>_<value>...
        tail = w.stem.split("_")[6:]
        assert tail[0::2] == ["spd", "bg"]
        assert (tail[3] == "B") == (parsed["domain"] == "target")
    index = data.index_dataset(out)
    assert len(index) == len(wavs) and set(index["machine_type"]) == set(demo.MACHINE_TYPES)
    assert set(index["domain"]) == {"source", "target"}
    for machine_type in demo.MACHINE_TYPES:
        table = list(csv.reader((out / "dev_data" / "raw" / machine_type / demo.ATTRIBUTES_CSV).open()))
        assert table[0] == ["file_name", "d1p", "d1v", "d2p", "d2v"]
        names = {f"{machine_type}/{w.parent.name}/{w.name}" for w in wavs if w.parts[-3] == machine_type}
        assert {r[0] for r in table[1:]} == names and len(table) - 1 == per_type
        for r in table[1:]:
            # The CSV's attributes are the ones in the file name.
            assert Path(r[0]).stem.endswith(f"_{r[1]}_{r[2]}_{r[3]}_{r[4]}")
        domains = [data.parse_name(r[0])["domain"] for r in table[1:] if "/train/" in r[0]]
        assert domains.count("source") == 5 and domains.count("target") == 1


def test_modes_are_deterministic_and_distinct(tmp_path):
    kw = {"seed": 0, "train_per_id": 1, "test_per_id": 1, "progress": False, "machine_types": ["valve"],
          "workers": 1}
    a = demo.make_demo_data(tmp_path / "a", mode="near-identical", **kw)
    b = demo.make_demo_data(tmp_path / "b", mode="near-identical", **kw)
    digests = [{p.relative_to(r): p.read_bytes() for p in sorted(r.rglob("*.wav"))} for r in (a, b)]
    assert digests[0] == digests[1]
    # Switching the mode in place rewrites the set (no stale clips of the other mode remain).
    demo.make_demo_data(a, mode="2023", **kw)
    assert not list((a / "dev_data").glob("valve/*/*.wav")) and len(list(a.rglob("*.wav"))) == 1 + 3 + 4


def test_bad_mode_is_one_clear_line(tmp_path):
    with pytest.raises(ValueError, match="mode='2019'") as err:
        demo.make_demo_data(tmp_path / "x", progress=False, mode="2019")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="target_train_per_id"):
        demo.make_demo_data(tmp_path / "x", progress=False, mode="2023", target_train_per_id=0)
