"""The loudness-only check (rcmae.evaluation.loudness): levels and AUCs against a hand-written loop and sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from rcmae.data.audio import write_wav
from rcmae.evaluation.loudness import clip_level_db, loudness_auc


def _write(root, mtype, mid, split, label, k, level_db, rng):
    y = rng.standard_normal(16000)
    y *= 10 ** (level_db / 20) / np.sqrt(np.mean(y ** 2))
    path = root / "dev_data" / mtype / split / f"{label}_id_{mid}_{k:08d}.wav"
    write_wav(path, y)
    return path


def test_level_and_both_detectors_equal_a_loop_with_sklearn(tmp_path):
    rng = np.random.default_rng(0)
    levels = {}
    # Two types, two IDs each: training levels around -30 dB; anomalies louder in `fan`, both ways in `pump`.
    for mtype, shift in (("fan", (4.0, 6.0)), ("pump", (-5.0, 5.0))):
        for mid in ("00", "02"):
            for k in range(8):
                levels[_write(tmp_path, mtype, mid, "train", "normal", k, -30 + rng.normal(0, 1.0), rng)] = None
            for k in range(6):
                levels[_write(tmp_path, mtype, mid, "test", "normal", k, -30 + rng.normal(0, 1.0), rng)] = None
                levels[_write(tmp_path, mtype, mid, "test", "anomaly", k, -30 + shift[k % 2], rng)] = None
    res = loudness_auc(tmp_path)

    def level(path):  # an independent RMS: 16-bit PCM read back by hand
        import soundfile as sf
        y, _ = sf.read(path, dtype="int16")
        return 20 * np.log10(np.sqrt(np.mean((y / 32768.0) ** 2)))

    per_type = {"deviation": {}, "level": {}}
    for mtype in ("fan", "pump"):
        for mid in ("00", "02"):
            train = [level(p) for p in levels if f"/{mtype}/train/normal_id_{mid}" in str(p)]
            test = [p for p in levels if f"/{mtype}/test/" in str(p) and f"_id_{mid}_" in str(p)]
            y = [int("anomaly" in p.name) for p in test]
            v = np.array([level(p) for p in test])
            z = np.abs(v - np.mean(train)) / np.std(train, ddof=1)
            for name, s in (("deviation", z), ("level", v)):
                per_type[name].setdefault(mtype, []).append((roc_auc_score(y, s), roc_auc_score(y, s, max_fpr=0.1)))
    for name in ("deviation", "level"):
        means = [np.mean(v, axis=0) for v in per_type[name].values()]
        assert res[name]["auc"] == pytest.approx(np.mean([m[0] for m in means]), abs=1e-12)
        assert res[name]["pauc"] == pytest.approx(np.mean([m[1] for m in means]), abs=1e-9)
    assert res["clips"] == 2 * 2 * 12
    # Louder anomalies in fan: both detectors see them; in pump half are quieter, which only |z| catches.
    assert res["deviation"]["auc"] > res["level"]["auc"]
    p = next(iter(levels))
    assert clip_level_db(p) == pytest.approx(level(p), abs=1e-9)
    assert res["skipped"] == []
    # A damaged clip is skipped and named; the others give the same numbers as before.
    bad = tmp_path / "dev_data" / "fan" / "test" / "normal_id_00_00000099.wav"
    bad.write_bytes(b"RIFF\x00\x00not a wav")
    again = loudness_auc(tmp_path)
    assert len(again["skipped"]) == 1 and again["skipped"][0].startswith(f"{bad}: ")
    assert again["deviation"] == res["deviation"] and again["clips"] == res["clips"]
