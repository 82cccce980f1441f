"""Demo factory data: determinism, DCASE 2020 layout, clip format, resume, and that anomalies are measurable."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from rcmae import cli
from rcmae.data import demo
from rcmae.data.demo import generate as demo_generate

# Independent of rcmae.data: the official DCASE 2020 dev file-name pattern.
NAME = re.compile(r"^(normal|anomaly)_id_(\d\d)_(\d{8})\.wav$")
SMALL = {"train_per_id": 1, "test_per_id": 1}


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / "dev_data").rglob("*.wav"))}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    """All machine types, 1 train + 1/1 test clips per ID, written through the command line."""
    out = tmp_path_factory.mktemp("demo") / "small"
    assert cli.main(["demo-data", str(out), "--train-per-id", "1", "--test-per-id", "1", "--quiet"]) == 0
    return out


def test_same_seed_same_bytes_regardless_of_workers_and_subset(small_set, tmp_path):
    again = demo.make_demo_data(tmp_path / "again", seed=0, progress=False, workers=2, **SMALL)
    ref = _digests(small_set)
    assert len(ref) == len(demo.MACHINE_TYPES) * 3 * 3
    assert _digests(again) == ref
    # A clip depends on (seed, type, ID, split, label, index) only: generating one type alone gives the same bytes.
    valve = _digests(demo.make_demo_data(tmp_path / "valve", seed=0, progress=False, workers=1,
                                         machine_types=["valve"], **SMALL))
    assert valve == {k: v for k, v in ref.items() if k.startswith("dev_data/valve/")}


def test_other_seed_differs(small_set, tmp_path):
    other = _digests(demo.make_demo_data(tmp_path / "s1", seed=1, progress=False, workers=1,
                                         machine_types=["fan"], **SMALL))
    ref = _digests(small_set)
    assert other.keys() <= ref.keys()
    assert all(other[k] != ref[k] for k in other)


def test_layout_counts_and_names(tmp_path):
    # First a bigger set, then the same folder with other settings: the stale clips must go.
    demo.make_demo_data(tmp_path / "d", seed=0, train_per_id=3, test_per_id=1, progress=False,
                        machine_types=["pump", "valve"], workers=1)
    out = demo.make_demo_data(tmp_path / "d", seed=0, train_per_id=1, test_per_id=2, progress=False,
                              machine_types=["pump", "slider"], workers=1)
    counts: Counter = Counter()
    for wav in (out / "dev_data").rglob("*"):
        if wav.is_dir():
            continue
        m = NAME.match(wav.name)
        assert m, f"not a DCASE 2020 dev name: {wav}"
        machine_type, split = wav.parent.parent.name, wav.parent.name
        assert wav.parent.parent.parent.name == "dev_data" and split in ("train", "test")
        assert not (split == "train" and m[1] == "anomaly")
        counts[(machine_type, m[2], split, m[1])] += 1
    expected = {(t, i, s, lab): n for t in ("pump", "slider") for i in ("00", "02", "04")
                for s, lab, n in (("train", "normal", 1), ("test", "normal", 2), ("test", "anomaly", 2))}
    assert dict(counts) == expected
    assert sorted(p.name for p in (out / "dev_data").iterdir()) == ["pump", "slider"]
    meta = json.loads((out / demo.MARKER).read_text())
    assert (meta["seed"], meta["train_per_id"], meta["test_per_id"], meta["clips"]) == (0, 1, 2, 2 * 3 * 5)
    # The per-clip ground truth lists every file with its anomaly kind; kinds cycle so each kind appears.
    rows = (out / demo.CLIPS_CSV).read_text().splitlines()
    assert len(rows) == 1 + 30
    assert {r.split(",")[5] for r in rows[1:] if ",anomaly," in r and ",pump," in r} == {"leak", "clogging"}


def test_default_design_has_four_types_three_ids_and_kinds():
    assert len(demo.MACHINE_TYPES) >= 4 and len(demo.MACHINE_IDS) >= 3
    assert all(len(demo.ANOMALY_KINDS[t]) >= 3 for t in demo.MACHINE_TYPES)
    plans = demo.plan_clips(seed=0)  # the defaults: 50 train, 20 + 20 test per ID
    assert len(plans) == len(demo.MACHINE_TYPES) * len(demo.MACHINE_IDS) * (50 + 40)
    test = [p for p in plans if p.split == "test"]
    snr = np.array([p.snr_db for p in plans])
    assert snr.min() >= -6.0 and snr.max() <= 6.0 and np.ptp(snr) > 10.0
    # Test normal i and anomaly i share SNR and gain, so the level distributions of the classes match.
    pairs = {(p.machine_type, p.machine_id, p.index, p.label): (p.snr_db, p.gain_db) for p in test}
    assert all(pairs[(t, i, k, "normal")] == pairs[(t, i, k, "anomaly")] for t, i, k, _ in pairs)


def test_clip_format(small_set):
    wavs = sorted((small_set / "dev_data").rglob("*.wav"))
    for wav in wavs:
        info = sf.info(wav)
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 160000, "PCM_16"), wav
        pcm, _ = sf.read(wav, dtype="int16")
        y = pcm.astype(np.float64) / 32768.0
        assert np.isfinite(y).all()
        rms_db = 20 * np.log10(np.sqrt(np.mean(y**2)))
        assert -45.0 < rms_db < -15.0, (wav, rms_db)  # -36 to -26 dBFS +- 6 dB random gain: not silent
        assert np.abs(pcm.astype(np.int32)).max() < 32767, f"clipped: {wav}"
        # Not a DC-only or constant signal: broadband energy in the upper half of the spectrum too.
        spec = np.abs(np.fft.rfft(y)) ** 2
        assert spec[spec.size // 8:].sum() > 1e-4 * spec.sum(), wav


def test_is_demo_data(small_set, tiny_dcase, tmp_path):
    assert demo.is_demo_data(small_set)
    assert not demo.is_demo_data(tmp_path)
    assert not demo.is_demo_data(tiny_dcase)
    assert not demo.is_demo_data(tmp_path / "missing")


def test_cli_if_missing_is_a_no_op(small_set, capsys):
    before = _digests(small_set)
    assert cli.main(["demo-data", str(small_set), "--if-missing", "--quiet"]) == 0
    assert "already" in capsys.readouterr().out
    assert _digests(small_set) == before


def test_interrupted_run_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    ref = _digests(demo.make_demo_data(tmp_path / "ref", progress=False, machine_types=["valve"], workers=1, **SMALL))
    real = demo_generate.write_wav
    calls = {"n": 0}

    def dying_write(path, y, sample_rate=16000):
        calls["n"] += 1
        if calls["n"] > 4:
            raise KeyboardInterrupt
        return real(path, y, sample_rate)

    monkeypatch.setattr(demo_generate, "write_wav", dying_write)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        demo.make_demo_data(out, progress=False, machine_types=["valve"], workers=1, **SMALL)
    assert not demo.is_demo_data(out)
    assert len(_digests(out)) == 4
    assert not list(out.rglob("*.tmp")), "a temp file was left behind"
    calls["n"] = -100  # let the resumed run finish
    demo.make_demo_data(out, progress=False, machine_types=["valve"], workers=1, **SMALL)
    assert calls["n"] == -100 + 9 - 4, "the resumed run should write only the missing clips"
    assert demo.is_demo_data(out) and _digests(out) == ref


def test_bad_input_is_one_clear_line(tmp_path, tiny_dcase, capsys):
    for kwargs, field in (({"seed": -1}, "seed"), ({"train_per_id": 0}, "train_per_id"),
                          ({"test_per_id": 2.5}, "test_per_id"), ({"machine_types": ["drill"]}, "machine_types")):
        with pytest.raises(ValueError, match=field) as err:
            demo.make_demo_data(tmp_path / "x", progress=False, **kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="not rcmae demo data"):
        demo.make_demo_data(tiny_dcase, progress=False, **SMALL)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        demo.make_demo_data(tmp_path / "file", progress=False)
    # The command line turns it into one "rcmae demo-data: error: ..." line and exit status 2.
    assert cli.main(["demo-data", str(tmp_path / "y"), "--train-per-id", "0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rcmae demo-data: error: train_per_id=0") and err.count("\n") == 1


def _features(y: np.ndarray) -> np.ndarray:
    """Reference clip features with librosa: per-mel-bin mean, std and 99th percentile of the log-mel over time."""
    mel = librosa.feature.melspectrogram(y=y.astype(np.float64), sr=16000, n_fft=1024, hop_length=512, n_mels=64,
                                         fmin=50.0, fmax=8000.0)
    db = librosa.power_to_db(mel)
    return np.concatenate([db.mean(axis=1), db.std(axis=1), np.percentile(db, 99, axis=1)])


@pytest.mark.parametrize("machine_type", demo.MACHINE_TYPES)
def test_anomalies_are_measurably_different(machine_type):
    """At full severity and +6 dB SNR, anomalies lie further from the training normals than test normals do."""
    def clip(split: str, label: str, i: int, **changes) -> np.ndarray:
        plan = dataclasses.replace(demo.plan_clip(0, machine_type, "02", split, label, i), snr_db=6.0, **changes)
        return _features(demo.synthesize_clip(plan, 0))

    n = 8  # two clips of each of the four anomaly kinds
    train = np.array([clip("train", "normal", i) for i in range(n)])
    normal = np.array([clip("test", "normal", i) for i in range(n)])
    anomaly = np.array([clip("test", "anomaly", i, severity=1.0) for i in range(n)])
    scaler = StandardScaler().fit(train)
    ref = scaler.transform(train)
    # Nearest-neighbour distance written out as a loop over training clips.
    dist = [np.array([min(np.linalg.norm(x - r) for r in ref) for x in scaler.transform(group)])
            for group in (normal, anomaly)]
    auc = roc_auc_score(np.r_[np.zeros(n), np.ones(n)], np.r_[dist[0], dist[1]])
    assert auc >= 0.75, (machine_type, auc)
    assert dist[1].mean() > 1.3 * dist[0].mean(), (machine_type, dist[0].mean(), dist[1].mean())


def test_demo_recording_length_truth_and_crossfades(tmp_path):
    from rcmae.data.audio import audio_info, load_audio
    from rcmae.data.demo.recording import FADE_S, make_demo_recording

    rec = make_demo_recording(tmp_path / "r.wav", seconds=35, anomalous=(1,))
    n = 4  # 35 s rounds up to four 10 s clips, joined by three 50 ms crossfades
    assert audio_info(rec)["frames"] == 4 * 160000 - 3 * int(FADE_S * 16000)
    truth = (tmp_path / "r.csv").read_text().splitlines()
    assert truth[0] == "start_s,end_s,label" and len(truth) == 1 + n
    assert [row.split(",")[2] for row in truth[1:]] == ["normal", "anomaly", "normal", "normal"]
    assert truth[2].split(",")[:2] == ["9.950", "19.950"]
    y = load_audio(rec, duration=None)
    # One steady machine: the level of every clip's middle second is the same within 3 dB (the data set's
    # clips vary by up to +-6 dB of gain on purpose; a monitored recording does not).
    levels = [20 * np.log10(np.sqrt(np.mean(y[k * 159200 + 64000 : k * 159200 + 80000] ** 2))) for k in range(n)]
    assert max(levels) - min(levels) < 3.0
    # Same arguments, same bytes.
    assert make_demo_recording(tmp_path / "r2.wav", seconds=35, anomalous=(1,)).read_bytes() == rec.read_bytes()
