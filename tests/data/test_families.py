"""The conveyor / compressor generator (rcmae.data.families): layout, determinism, levels, anomalies, independence."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

import rcmae.data.families as families
from rcmae.data.families import Clip, make_family_data, synthesize
from rcmae.data.index import index_dataset


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.wav"))}


def _truth(root: Path) -> list[dict]:
    return list(csv.DictReader((root / families.CLIPS_CSV).open()))


def test_layout_counts_and_labels_read_back_by_the_indexer(tmp_path):
    out = make_family_data(tmp_path / "f", seed=3, ids=2, train_per_id=3, test_per_id=2, progress=False)
    index = index_dataset(out)
    assert sorted(index["machine_type"].unique()) == ["compressor", "conveyor"]
    for mtype in families.FAMILIES:
        mine = index[index["machine_type"] == mtype]
        assert sorted(mine["machine_id"].unique()) == ["00", "02"]
        assert (mine["split"] == "train").sum() == 2 * 3
        test = mine[mine["split"] == "test"]
        assert (test["label"] == "normal").sum() == 2 * 2 and (test["label"] == "anomaly").sum() == 2 * 2
    for path in index["path"]:
        info = sf.info(path)
        assert (info.samplerate, info.frames, info.channels, info.subtype) == (16000, 160000, 1, "PCM_16")
    truth = _truth(out)
    assert len(truth) == len(index)
    assert {r["kind"] for r in truth if r["label"] == "normal"} == {""}
    assert all(r["kind"] in families.KINDS[r["machine_type"]] for r in truth if r["label"] == "anomaly")


def test_same_seed_same_bytes_other_seed_other_clips_and_clips_do_not_depend_on_the_set_size(tmp_path):
    a = make_family_data(tmp_path / "a", seed=5, ids=1, train_per_id=2, test_per_id=1, progress=False)
    b = make_family_data(tmp_path / "b", seed=5, ids=1, train_per_id=2, test_per_id=1, progress=False)
    c = make_family_data(tmp_path / "c", seed=6, ids=1, train_per_id=2, test_per_id=1, progress=False)
    big = make_family_data(tmp_path / "big", seed=5, ids=2, train_per_id=3, test_per_id=2,
                           machine_types=["conveyor"], progress=False)
    da, db, dc, dbig = _digests(a), _digests(b), _digests(c), _digests(big)
    assert da == db
    assert set(da) == set(dc) and all(da[k] != dc[k] for k in da)
    assert all(dbig[k] == v for k, v in da.items() if k.startswith("dev_data/conveyor/"))
    # Two clips of one set are never the same file.
    assert len(set(dbig.values())) == len(dbig)


def test_every_clip_has_the_level_its_table_records_and_classes_share_one_level_range(tmp_path):
    out = make_family_data(tmp_path / "f", seed=1, ids=1, train_per_id=4, test_per_id=4, progress=False)
    lo, hi = families.LEVEL_DB
    for row in _truth(out):
        y, _ = sf.read(out / row["path"], dtype="float64")
        level = 10 * np.log10(np.mean(y ** 2))
        # 16-bit quantisation at -34 dBFS moves the level by far less than 0.01 dB.
        assert level == pytest.approx(float(row["level_db"]), abs=0.01)
        assert lo <= level <= hi


def _band_share(y: np.ndarray, lo: float, hi: float) -> float:
    f, p = signal.welch(y, fs=16000, nperseg=2048)
    return float(p[(f >= lo) & (f <= hi)].sum() / p.sum())


@pytest.mark.parametrize(("mtype", "kind", "band"), [
    ("conveyor", "squeal", (2400.0, 5200.0)),   # the seized idler's tone lies in 2.5-5 kHz (+-2 % wander)
    ("conveyor", "splice", (150.0, 500.0)),     # the joint's thud rings at 250-400 Hz
    ("compressor", "leak", (4000.0, 7000.0)),   # the hiss band
    ("compressor", "knock", (700.0, 1300.0)),   # the rod knock rings at 800-1200 Hz
])
def test_each_added_anomaly_puts_energy_where_its_physics_says(mtype, kind, band):
    """An anomalous clip against the same unit's normals: more of its power in the anomaly's band."""
    normals = [synthesize(0, Clip("x", mtype, "00", "test", "normal", i))[0] for i in range(6)]
    base = max(_band_share(y, *band) for y in normals)
    found = 0
    for i in range(40):
        y, info = synthesize(0, Clip("x", mtype, "00", "test", "anomaly", i))
        if info["kind"] != kind:
            continue
        found += 1
        lo_snr = families.SNR_DB[kind][0]
        assert info["snr_db"] >= lo_snr
        assert _band_share(y, *band) > base, f"{kind} (snr {info['snr_db']:.1f} dB) adds no power in {band} Hz"
    assert found >= 3


def test_a_worn_valve_rings_lower_and_scatters_in_time():
    """``valve`` adds nothing: the valve click's resonance drops by 10-20 % (its spectral peak moves down)."""
    def peak(y):
        f, p = signal.welch(y, fs=16000, nperseg=4096)
        band = (f > 1500) & (f < 4000)
        return f[band][np.argmax(p[band])]

    normal_peak = np.median([peak(synthesize(0, Clip("x", "compressor", "02", "test", "normal", i))[0])
                             for i in range(4)])
    worn = [peak(y) for i in range(30)
            for y, info in [synthesize(0, Clip("x", "compressor", "02", "test", "anomaly", i))]
            if info["kind"] == "valve"]
    assert worn and all(0.75 * normal_peak < p < 0.93 * normal_peak for p in worn)


def test_resume_reuse_and_refusals(tmp_path):
    out = make_family_data(tmp_path / "f", seed=2, ids=1, train_per_id=2, test_per_id=1, progress=False)
    first = _digests(out)
    # Reused as is (no rewrite), and an interrupted call (partial marker, a clip missing) is completed.
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    make_family_data(out, seed=2, ids=1, train_per_id=2, test_per_id=1, progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")} == stamp
    (out / families.MARKER).rename(out / families.PARTIAL)
    (out / "dev_data/compressor/train/normal_id_00_00000001.wav").unlink()
    make_family_data(out, seed=2, ids=1, train_per_id=2, test_per_id=1, progress=False)
    assert _digests(out) == first and (out / families.MARKER).is_file() and not (out / families.PARTIAL).exists()
    # Other settings rewrite the set; clips the new set does not have go.
    make_family_data(out, seed=2, ids=1, train_per_id=1, test_per_id=1, progress=False)
    assert not (out / "dev_data/compressor/train/normal_id_00_00000001.wav").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="not empty and not written by rcmae.data.families"):
        make_family_data(foreign, progress=False)
    assert (foreign / "notes.txt").read_text() == "keep"
    with pytest.raises(ValueError, match=r"machine_types=\['fan'\]: choose one or more of"):
        make_family_data(tmp_path / "g", machine_types=["fan"], progress=False)
    with pytest.raises(ValueError, match="train_per_id=0: must be a positive integer"):
        make_family_data(tmp_path / "g", train_per_id=0, progress=False)


def test_severity_weakens_only_the_anomalies(tmp_path):
    full = make_family_data(tmp_path / "full", seed=4, ids=1, train_per_id=2, test_per_id=3, progress=False)
    half = make_family_data(tmp_path / "half", seed=4, ids=1, train_per_id=2, test_per_id=3, severity=0.5,
                            progress=False)
    a, b = _digests(full), _digests(half)
    normals = [k for k in a if "/normal_" in k]
    assert normals and all(a[k] == b[k] for k in normals)  # normal clips do not depend on the severity
    assert all(a[k] != b[k] for k in a if "/anomaly_" in k)
    ta = {r["path"]: r for r in _truth(full)}
    for r in _truth(half):
        if r["snr_db"]:
            # The same draw, 20 log10(0.5) = -6.02 dB weaker.
            assert float(r["snr_db"]) == pytest.approx(float(ta[r["path"]]["snr_db"]) - 6.0206, abs=0.01)
        assert r["kind"] == ta[r["path"]]["kind"]
    assert json.loads((half / families.MARKER).read_text())["settings"]["severity"] == 0.5
    with pytest.raises(ValueError, match=r"severity=0: must be in \(0, 1\]"):
        make_family_data(tmp_path / "bad", severity=0, progress=False)
