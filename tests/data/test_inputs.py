"""Bad test sets and odd clips: one clear line, earlier results kept, nothing silently padded or cut."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import SHORT_OVERRIDES, SR

from rcmae import cli
from rcmae.data.audio import load_audio
from rcmae.data.checks import check_labelled_test, clip_windows
from rcmae.run import trainset as train
from rcmae.run.config import load_config
from rcmae.scorers.detector import Detector

pytestmark = pytest.mark.reliability  # bad-input cases of the fault-injection suite (issue 11)


def _without(data: Path, dest: Path, prefix: str) -> Path:
    shutil.copytree(data, dest)
    for wav in dest.rglob(f"test/{prefix}_*.wav"):
        wav.unlink()
    return dest


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _err_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.strip().splitlines() if "clip/s" not in ln and "it/s" not in ln]


def test_check_labelled_test_by_hand():
    both = pd.DataFrame({"machine_type": ["fan"] * 2, "machine_id": ["00"] * 2, "label": ["normal", "anomaly"]})
    check_labelled_test(both, "d")
    with pytest.raises(ValueError, match="no normal clips"):
        check_labelled_test(both.iloc[1:], "d")
    with pytest.raises(ValueError, match="no anomalous clips"):
        check_labelled_test(both.iloc[:1], "d")
    split = pd.DataFrame({"machine_type": ["fan", "valve"], "machine_id": ["00", "00"],
                          "label": ["normal", "anomaly"]})
    with pytest.raises(ValueError, match="no machine ID has both"):
        check_labelled_test(split, "d")


@pytest.mark.parametrize("drop", ["normal", "anomaly"])
def test_evaluate_one_line_and_keeps_earlier_results(short_run, tmp_path, capsys, drop):
    data, run0 = short_run
    run = tmp_path / "run"
    shutil.copytree(run0, run)
    assert cli.main(["evaluate", "--run", str(run)]) == 0
    before = _digest(run / "eval")
    assert before
    capsys.readouterr()
    bad = _without(data, tmp_path / "bad", drop)
    assert cli.main(["evaluate", "--run", str(run), "--data", str(bad)]) == 2
    err = _err_lines(capsys.readouterr().err)
    assert len(err) == 1 and str(bad) in err[0] and ("no normal" if drop == "normal" else "no anomalous") in err[0]
    assert _digest(run / "eval") == before


@pytest.mark.parametrize("baseline", ["knn", "ae"])
def test_baseline_without_normals_is_one_line(short_run, tmp_path, capsys, baseline):
    data, _ = short_run
    bad = _without(data, tmp_path / "bad", "normal")
    out = tmp_path / "out"
    assert cli.main(["baseline", baseline, "--data", str(bad), "--out", str(out)]) == 2
    err = _err_lines(capsys.readouterr().err)
    assert len(err) == 1 and "no normal clips" in err[0]
    assert not (out / "results.json").exists()


# ------------------------------------------------------------------------------------------ clip lengths
def test_clip_windows_by_hand():
    wave = np.arange(25, dtype=np.float32)
    same, note = clip_windows(wave[:10], 10, 10)
    assert note is None and same.shape == (1, 10)
    windows, note = clip_windows(wave, 10, 10)
    # Half-overlapping windows, the last one ending at the clip's end: starts 0, 5, 10, 15.
    assert [w[0] for w in windows] == [0, 5, 10, 15] and windows[-1][-1] == 24
    assert "2.50 s" in note and "4 overlapping" in note
    looped, note = clip_windows(wave[:4], 10, 10)
    assert looped.tolist() == [[0, 1, 2, 3, 0, 1, 2, 3, 0, 1]] and "looped" in note


def _clip(data: Path, label: str = "normal", n: int = 0) -> Path:
    return data / "dev_data" / "fan" / "test" / f"{label}_id_00_{n:08d}.wav"


def test_long_clip_is_scored_over_its_whole_length(short_run, tmp_path):
    data, run = short_run
    det = Detector.load(run)
    parts = [load_audio(_clip(data, "normal", 0), duration=None), load_audio(_clip(data, "normal", 1), duration=None),
             load_audio(_clip(data, "anomaly", 0), duration=None)]
    long = np.concatenate(parts)
    folder = tmp_path / "dev_data" / "fan" / "test"
    folder.mkdir(parents=True)
    path = folder / "normal_id_00_00000099.wav"
    sf.write(path, long, SR, subtype="FLOAT")
    row = det.score_paths([path], scorer="knn")[0]
    n = SR  # the run's clip length: 1 s
    manual = [long[s:s + n] for s in range(0, long.size - n + 1, n // 2)]
    expected = det.score_waveforms(np.stack(manual), ["fan"] * len(manual), ["00"] * len(manual), "knn")
    assert row["score"] == pytest.approx(float(expected.max()), rel=1e-5)
    assert row["windows"] == len(manual) == 5 and "longer" in row["note"]
    # The anomalous last second counts: the whole clip scores at least as high as its first second.
    first = det.score_waveforms(long[None, :n], ["fan"], ["00"], "knn")[0]
    assert row["score"] >= first


def test_short_clip_is_looped_and_said(short_run, tmp_path, capsys):
    data, run = short_run
    wave = load_audio(_clip(data), duration=None)[: SR // 4]
    folder = tmp_path / "dev_data" / "fan" / "test"
    folder.mkdir(parents=True)
    path = folder / "normal_id_00_00000042.wav"
    sf.write(path, wave, SR, subtype="FLOAT")
    assert cli.main(["score", "--run", str(run), "--scorer", "knn", str(path)]) == 0
    captured = capsys.readouterr()
    assert "shorter" in captured.err and "looped" in captured.err
    det = Detector.load(run)
    expected = det.score_waveforms(np.tile(wave, 4)[None], ["fan"], ["00"], "knn")[0]
    assert f"score {expected:.4f}" in captured.out


def test_score_folder_finds_upper_case_wav_and_says_when_empty(short_run, tmp_path, capsys):
    data, run = short_run
    folder = tmp_path / "dev_data" / "fan" / "test"
    folder.mkdir(parents=True)
    shutil.copy(_clip(data), folder / "normal_id_00_00000001.WAV")
    assert cli.main(["score", "--run", str(run), str(folder)]) == 0
    assert "normal_id_00_00000001.WAV: score" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    assert cli.main(["score", "--run", str(run), str(empty)]) == 2
    err = _err_lines(capsys.readouterr().err)
    assert len(err) == 1 and "no .wav files" in err[0]


def test_missing_clip_says_no_such_file(short_run, tmp_path, capsys):
    _, run = short_run
    missing = tmp_path / "nothing_here.wav"
    assert cli.main(["score", "--run", str(run), str(missing)]) == 1
    assert f"{missing}: skipped (no such file" in capsys.readouterr().out


def test_training_skips_labelled_anomalies_and_reports_lengths(short_run, tmp_path, capsys):
    data, _ = short_run
    copy = tmp_path / "d"
    shutil.copytree(data, copy)
    train_dir = copy / "dev_data" / "fan" / "train"
    shutil.copy(_clip(copy, "anomaly"), train_dir / "anomaly_id_00_00000000.wav")
    wave = load_audio(train_dir / "normal_id_00_00000000.wav", duration=None)
    sf.write(train_dir / "normal_id_00_00000000.wav", wave[: SR // 2], SR, subtype="FLOAT")
    sf.write(train_dir / "normal_id_00_00000001.wav", np.tile(wave, 3), SR, subtype="FLOAT")
    cfg = load_config("tiny", SHORT_OVERRIDES)
    data_, _ = train.load_train_data(copy, cfg, progress=False)
    err = capsys.readouterr().err
    assert not any("anomaly_" in Path(p).name for p in data_.paths) and len(data_.paths) == 24
    assert "skipping 1 labelled anomalous clip(s) in train/" in err
    assert "1 clip(s) shorter than 1 s" in err and "zero-padded" in err
    assert "1 clip(s) longer than 1 s" in err and "first 1 s" in err
