"""Sliding-window monitoring: streamed windows, events by hand, and two anomalies found at the right times."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import assert_close_on_scale

from rcmae import cli
from rcmae.data.audio import load_audio
from rcmae.deploy.monitor import MonitorError, find_events, open_scorer, sliding_windows, stream_samples
from rcmae.scorers.detector import Detector


def test_sliding_windows_match_direct_slicing():
    y = np.arange(1000, dtype=np.float32)
    for block in (7, 100, 1000, 4000):
        blocks = (y[i : i + block] for i in range(0, len(y), block))
        got = list(sliding_windows(blocks, window=300, hop=250))
        # Starts 0, 250, 500 (750 would run past the end), then one window ending at the end: 700.
        assert [s for s, _ in got] == [0, 250, 500, 700]
        for s, w in got:
            np.testing.assert_array_equal(w, y[s : s + 300])
    short = list(sliding_windows(iter([y[:120]]), window=300, hop=100))
    assert len(short) == 1 and short[0][0] == 0
    np.testing.assert_array_equal(short[0][1], np.pad(y[:120], (0, 180)))


def test_stream_samples_reads_blocks_and_resamples(tmp_path):
    rng = np.random.default_rng(0)
    y = (0.1 * rng.standard_normal((16000 * 3, 2))).astype(np.float32)
    sf.write(tmp_path / "st.wav", y, 16000, subtype="FLOAT")
    got = np.concatenate(list(stream_samples(tmp_path / "st.wav", 16000, channel=1, block_seconds=0.7)))
    np.testing.assert_array_equal(got, y[:, 1])
    sf.write(tmp_path / "lo.wav", y[:, 0], 8000, subtype="FLOAT")
    up = np.concatenate(list(stream_samples(tmp_path / "lo.wav", 16000, block_seconds=0.5)))
    # Streamed resampling gives the same length and (away from the edges) the same signal as one-shot soxr.
    import soxr

    ref = soxr.resample(y[:, 0], 8000, 16000)
    assert abs(len(up) - len(ref)) <= 2
    np.testing.assert_allclose(up[1000:-1000], ref[1000 : len(up) - 1000], atol=1e-3)


def test_find_events_by_hand():
    centers = np.arange(10) + 0.5  # hop 1 s
    scores = [0, 5, 6, 0, 7, 0, 0, 9, 8, 9.5]
    ev = find_events(centers, scores, threshold=4.0, hop=1.0, min_duration=1.5)
    # Runs above 4: points 1-2 ([1, 3], 2 s), point 4 ([4, 5], 1 s: too short), points 7-9 ([7, 10], 3 s).
    assert ev[["start_s", "end_s", "duration_s", "peak_s", "peak_score"]].values.tolist() == [
        [1.0, 3.0, 2.0, 2.5, 6.0], [7.0, 10.0, 3.0, 9.5, 9.5]]
    assert ev["event"].tolist() == [1, 2]
    assert find_events(centers, scores, threshold=100.0, hop=1.0).empty


@pytest.fixture(scope="module")
def long_recording(demo_run, tmp_path_factory):
    """100 s: one normal demo clip looped, with two anomalous demo clips of the same machine at 30 s and 70 s.

    The normal part repeats one training clip: independent demo clips differ in level, and a window
    straddling two of them is itself unusual to the band-statistics scorers, which is not what is tested here.
    """
    data = Path(json.loads((demo_run / "run.json").read_text())["data"]) / "fan"
    normal = sf.read(data / "train" / "normal_id_00_00000000.wav", dtype="float32")[0]
    anomalies = [sf.read(data / "test" / f"anomaly_id_00_0000000{n}.wav", dtype="float32")[0] for n in (0, 2)]
    parts = [normal] * 3 + [anomalies[0]] + [normal] * 3 + [anomalies[1]] + [normal] * 2
    path = tmp_path_factory.mktemp("long") / "line3.wav"
    sf.write(path, np.concatenate(parts), 16000, subtype="PCM_16")
    return path, [(30.0, 40.0), (70.0, 80.0)]


def test_monitor_finds_both_anomalies_at_the_right_times(demo_run, demo_bundle, long_recording, tmp_path):
    path, truth = long_recording
    out = tmp_path / "out"
    assert cli.main(["monitor", "--trust", "--bundle", str(demo_bundle), str(path), "--out", str(out), "--hop", "1",
                     "--min-duration", "2", "--machine-type", "fan", "--machine-id", "00", "--quiet"]) == 0
    series = pd.read_csv(out / "line3.scores.csv")
    events = pd.read_csv(out / "line3.events.csv")
    assert (out / "line3.html").is_file()
    assert len(series) == 91 and series["start_s"].tolist() == [float(s) for s in range(91)]
    assert len(events) == 2
    for (_, ev), (a, b) in zip(events.iterrows(), truth, strict=True):
        # Each event spans its anomalous clip, is centred on it, and stays within one window of it.
        assert ev["start_s"] <= a and ev["end_s"] >= b
        assert abs((ev["start_s"] + ev["end_s"]) / 2 - (a + b) / 2) <= 1.0
        assert ev["start_s"] > a - 10 and ev["end_s"] < b + 10
    # The series is the detector's score of each window, read independently from the file.
    det = Detector.load(demo_run)
    wave = load_audio(path, duration=None)
    starts = (0, 30, 35, 62)
    refs = [det.score(wave[s * 16000 : s * 16000 + 160000], machine_type="fan", machine_id="00")["score"]
            for s in starts]
    assert_close_on_scale([series.loc[series["start_s"] == s, "score"].item() for s in starts], refs)
    thr = det.threshold(det.default_scorer, "fan", "00")
    assert series["threshold"].eq(thr).all()
    # --run scores the same windows through the Detector: the same series.
    scorer = open_scorer(run=demo_run)
    from rcmae.deploy.monitor import monitor_recording

    via_run = monitor_recording(scorer, path, "fan", "00", hop=5.0, progress=False)
    assert_close_on_scale(via_run.series["score"].to_numpy(), series["score"].iloc[::5].to_numpy(), rtol=1e-5)


@pytest.mark.parametrize("hop", [1.0, 0.7, 12.0])  # 12 s: windows do not overlap, nothing to share
def test_streamed_monitor_scores_equal_window_by_window(demo_run, demo_bundle, demo_bundle_torchscript,
                                                        long_recording, hop):
    """The streaming monitor (log-mel frames shared by overlapping windows) against each window scored alone."""
    from rcmae.deploy.monitor import monitor_recording

    path, _ = long_recording
    for scorer in (open_scorer(run=demo_run), open_scorer(bundle=demo_bundle)):
        assert scorer.logmel is not None
        streamed = monitor_recording(scorer, path, "fan", "00", hop=hop, progress=False)
        alone = monitor_recording(scorer, path, "fan", "00", hop=hop, progress=False, stream=False)
        assert streamed.series["start_s"].tolist() == alone.series["start_s"].tolist()
        assert len(streamed.series) == int((100 - 10) / hop) + 1 + (0 if (90 / hop).is_integer() else 1)
        assert_close_on_scale(streamed.series["score"], alone.series["score"], rtol=1e-5)
        same = ["event", "start_s", "end_s", "duration_s", "peak_s", "kind"]
        assert streamed.events[same].equals(alone.events[same]) and len(alone.events) == 2
        assert_close_on_scale(streamed.events["peak_score"], alone.events["peak_score"], rtol=1e-5)
    # A TorchScript bundle's graph takes waveforms only: it is scored window by window.
    assert open_scorer(bundle=demo_bundle_torchscript, trust=True).logmel is None


def test_monitor_reports_bad_input(demo_bundle, tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(MonitorError, match="pass exactly one of --bundle BUNDLE or --run RUN"):
        open_scorer()
    scorer = open_scorer(bundle=demo_bundle, trust=True)
    from rcmae.deploy.monitor import monitor_recording, resolve_unit

    with pytest.raises(MonitorError, match="cannot tell which machine it records; pass --machine-type"):
        resolve_unit(scorer, tmp_path / "x.wav", None, None)
    with pytest.raises(MonitorError, match=r"bad.wav: cannot be read as audio"):
        monitor_recording(scorer, tmp_path / "bad.wav", "fan", "00", progress=False)
    # A batch skips the bad file, reports it, and exits 1.
    assert cli.main(["monitor", "--trust", "--bundle", str(demo_bundle), str(tmp_path / "bad.wav"), "--machine-type",
                     "fan", "--machine-id", "00", "--out", str(tmp_path / "o"), "--quiet"]) == 1


def test_demo_recording_is_monitored_with_its_anomalies_found(tmp_path):
    # The long demo recording (rcmae demo-data --recording) through a training-free run: the monitor's one
    # event covers the anomalous stretch of the truth table, and no window of normal sound crosses the threshold.
    import pandas as pd

    from rcmae.data import demo
    from rcmae.data.demo.recording import make_demo_recording
    from rcmae.deploy import monitor
    from rcmae.scorers.training_free import fit_training_free

    data = demo.make_demo_data(tmp_path / "demo", train_per_id=10, test_per_id=2, progress=False,
                               machine_types=["fan"], workers=1)
    rec = make_demo_recording(tmp_path / "rec" / "demo_fan_id_00.wav", seconds=60, anomalous=(2, 3))
    truth = pd.read_csv(rec.with_suffix(".csv"))
    assert list(truth["label"]) == ["normal", "normal", "anomaly", "anomaly", "normal", "normal"]
    bad = truth[truth["label"] == "anomaly"]
    lo, hi = float(bad["start_s"].min()), float(bad["end_s"].max())
    run = fit_training_free(data, tmp_path / "run", progress=False)
    scorer = monitor.open_scorer(run=run)
    assert monitor.resolve_unit(scorer, rec, None, None) == ("fan", "00")  # from the name's words
    res = monitor.monitor_recording(scorer, rec, "fan", "00", progress=False)
    assert len(res.events) == 1
    event = res.events.iloc[0]
    assert event["start_s"] < hi and event["end_s"] > lo and lo <= event["peak_s"] <= hi
    s = res.series
    inside = s[(s["start_s"] >= lo) & (s["end_s"] <= hi)]["score"]
    outside = s[(s["end_s"] <= lo) | (s["start_s"] >= hi)]["score"]
    assert len(inside) >= 5 and len(outside) >= 15
    assert outside.max() < res.threshold < inside.min()
