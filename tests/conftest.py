"""Shared fixtures: one small DCASE 2020-layout data set written to a temp dir (the tests need no outside data)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

# Two CI cores: one intra-op thread per test process keeps torch from oversubscribing.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SR = 16000


def assert_close_on_scale(got, ref, rtol: float = 1e-5) -> None:
    """``|got - ref| <= rtol * max|ref|`` over a whole batch (docs/DESIGN.md, "Tolerances").

    Scores of two code paths (the Detector and a bundle, float32 and float64, another BLAS kernel) differ by
    rounding on the scale of the scores, not of each one: a z-scored ensemble score near zero compared with a
    relative tolerance of its own fails on some CPUs (0.0059243 vs 0.0059246 on an AVX-512 Xeon).
    """
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    worst = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    assert worst <= rtol * scale, f"max |difference| {worst:.3g} > {rtol:g} x max |score| {scale:.3g}"
TINY_TYPES = {"fan": ["00", "02"], "valve": ["00", "02"]}
TINY_TRAIN_PER_ID = 6
TINY_TEST_PER_ID = 4  # normal and anomalous each


def _tone_clip(rng: np.random.Generator, f0: float, seconds: float, anomalous: bool) -> np.ndarray:
    """A harmonic machine hum plus noise; anomalies add an off-harmonic whine and clicks."""
    t = np.arange(int(seconds * SR)) / SR
    y = sum((0.3 / k) * np.sin(2 * np.pi * k * f0 * (1 + 0.002 * rng.standard_normal()) * t + rng.uniform(0, 6.28))
            for k in range(1, 6))
    y = y + 0.05 * rng.standard_normal(t.size)
    if anomalous:
        y = y + 0.08 * np.sin(2 * np.pi * 3.37 * f0 * t)
        clicks = rng.integers(0, t.size - 50, size=20)
        for c in clicks:
            y[c:c + 50] += 0.5 * np.hanning(50)
    return (0.5 * y / np.max(np.abs(y))).astype(np.float32)


def write_tiny_dcase(root: Path, seconds: float = 10.0, seed: int = 0) -> Path:
    """Write ``root/dev_data/<type>/{train,test}`` with DCASE 2020 file names; returns ``root``."""
    rng = np.random.default_rng(seed)
    for t_i, (machine_type, ids) in enumerate(TINY_TYPES.items()):
        for i_i, machine_id in enumerate(ids):
            f0 = 60.0 + 40.0 * t_i + 15.0 * i_i
            train = root / "dev_data" / machine_type / "train"
            test = root / "dev_data" / machine_type / "test"
            train.mkdir(parents=True, exist_ok=True)
            test.mkdir(parents=True, exist_ok=True)
            for n in range(TINY_TRAIN_PER_ID):
                sf.write(train / f"normal_id_{machine_id}_{n:08d}.wav", _tone_clip(rng, f0, seconds, False), SR,
                         subtype="PCM_16")
            for n in range(TINY_TEST_PER_ID):
                sf.write(test / f"normal_id_{machine_id}_{n:08d}.wav", _tone_clip(rng, f0, seconds, False), SR,
                         subtype="PCM_16")
                sf.write(test / f"anomaly_id_{machine_id}_{n:08d}.wav", _tone_clip(rng, f0, seconds, True), SR,
                         subtype="PCM_16")
    return root


@pytest.fixture(scope="session")
def tiny_dcase(tmp_path_factory) -> Path:
    """A small DCASE 2020 dev-layout data set: 2 types x 2 IDs, 6 train + 4/4 test clips per ID, 10 s."""
    return write_tiny_dcase(tmp_path_factory.mktemp("tiny_dcase"))


def check_results(out: Path, data: Path) -> dict:
    """results.json has the documented shape and every per-ID AUC/pAUC equals sklearn's on its CSV scores."""
    # Imported here: the environment above must be set before anything imports torch.
    from sklearn.metrics import roc_auc_score

    from rcmae.data.index import index_dataset

    res = json.loads((out / "results.json").read_text())
    assert {"system", "data", "per_id", "per_type", "average"} <= set(res)
    index = index_dataset(data)
    test = index[(index["split"] == "test") & index["label"].isin(["normal", "anomaly"])]
    assert len(res["per_id"]) == test.groupby(["machine_type", "machine_id"]).ngroups
    for row in res["per_id"]:
        assert {"machine_type", "machine_id", "auc", "pauc", "n_normal", "n_anomaly"} <= set(row)
        csv_path = out / f"anomaly_score_{row['machine_type']}_id_{row['machine_id']}.csv"
        with open(csv_path) as f:
            scores = {name: float(s) for name, s in csv.reader(f)}
        sub = test[(test["machine_type"] == row["machine_type"]) & (test["machine_id"] == row["machine_id"])]
        y = [int(lab == "anomaly") for lab in sub["label"]]
        s = [scores[Path(p).name] for p in sub["path"]]
        assert row["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert row["pauc"] == pytest.approx(roc_auc_score(y, s, max_fpr=0.1), abs=1e-12)
        assert row["n_anomaly"] == sum(y) and row["n_normal"] == len(y) - sum(y)
    for mtype, vals in res["per_type"].items():
        ids = [r["auc"] for r in res["per_id"] if r["machine_type"] == mtype]
        assert vals["auc"] == pytest.approx(np.mean(ids))
    assert res["average"]["auc"] == pytest.approx(np.mean([v["auc"] for v in res["per_type"].values()]))
    return res


# ---------------------------------------------------------------- a DCASE 2023-style set (domain shift)
TINY23_TYPES = ("fan", "gearbox")
TINY23_TRAIN = {"source": 10, "target": 2}  # the 990:10 imbalance, scaled down
TINY23_TEST = 3  # per domain, normal and anomalous each


def write_tiny_dcase2023(root: Path, seconds: float = 1.0, seed: int = 0) -> Path:
    """Write ``root/dev_data/raw/<type>/{train,test}`` with DCASE 2023 names; returns ``root``.

    One section (00) per machine type; the target domain runs 25 % faster (a shifted hum); attributes sit
    in the names (``spd_<n>``; every third source clip is ``noAttribute``) and in ``attributes_00.csv``.
    """
    rng = np.random.default_rng(seed)
    for t_i, machine_type in enumerate(TINY23_TYPES):
        base = root / "dev_data" / "raw" / machine_type
        rows = [["file_name", "d1p", "d1v"]]
        for split in ("train", "test"):
            (base / split).mkdir(parents=True, exist_ok=True)
        for domain, n_train in TINY23_TRAIN.items():
            f0 = (70.0 + 45.0 * t_i) * (1.25 if domain == "target" else 1.0)
            speed = "3" if domain == "target" else "1"
            clips = [("train", "normal", n) for n in range(n_train)]
            clips += [("test", label, n) for label in ("normal", "anomaly") for n in range(TINY23_TEST)]
            for split, label, n in clips:
                attr = "noAttribute" if domain == "source" and n % 3 == 2 else f"spd_{speed}"
                name = f"section_00_{domain}_{split}_{label}_{n:04d}_{attr}.wav"
                sf.write(base / split / name, _tone_clip(rng, f0, seconds, label == "anomaly"), SR, subtype="PCM_16")
                pair = ["", ""] if attr == "noAttribute" else ["spd", speed]
                rows.append([f"{machine_type}/{split}/{name}", *pair])
        with open(base / "attributes_00.csv", "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows(rows)
    return root


@pytest.fixture(scope="session")
def tiny_dcase2023(tmp_path_factory) -> Path:
    """A DCASE 2023-style dev set: 2 types x section 00, 10 source + 2 target train, 3/3 test per domain, 1 s."""
    return write_tiny_dcase2023(tmp_path_factory.mktemp("tiny_dcase2023"))


# A 1-block, 32-wide model on 1-second clips: a pretrain + finetune in seconds on one CPU thread.
SHORT_OVERRIDES = [
    "model.embed_dim=32", "model.depth=1", "model.heads=2", "model.decoder_embed_dim=32", "model.decoder_depth=1",
    "model.decoder_heads=2", "model.proj_dim=32", "model.mlp_ratio=2.0", "pretrain.batch_size=8",
    "finetune.batch_size=8", "score.recon_masks=2", "pretrain.crop_frames=null", "pretrain.crops_per_clip=1",
    "data.duration=1.0", "model.n_frames=32", "pretrain.specaugment.time_width=8",
]


@pytest.fixture(scope="session")
def short_run(tmp_path_factory) -> tuple[Path, Path]:
    """``(data, run)``: 1-second tiny data and a run pretrained and fine-tuned 1 epoch each (copy before changing)."""
    from rcmae.training import stages as train

    data = write_tiny_dcase(tmp_path_factory.mktemp("short_run_data"), seconds=1.0, seed=5)
    run = tmp_path_factory.mktemp("short_run") / "run"
    train.pretrain(data, run, epochs=1, overrides=SHORT_OVERRIDES, progress=False)
    train.finetune(run, epochs=1, progress=False)
    return data, run


# ---------------------------------------------------------------- reliability figures
# `bench/bench_reliability.py` sets $RCMAE_RELIABILITY_REPORT: every test marked `reliability` is one fault
# tried; its outcome (passed = survived) is written there as JSON for bench/results/reliability.md.
_RELIABILITY_OUTCOMES: dict[str, dict] = {}


def pytest_runtest_logreport(report) -> None:
    if "reliability" not in report.keywords or not os.environ.get("RCMAE_RELIABILITY_REPORT"):
        return
    entry = _RELIABILITY_OUTCOMES.setdefault(report.nodeid, {"nodeid": report.nodeid, "outcome": "passed",
                                                             "duration": 0.0})
    entry["duration"] += report.duration
    if report.outcome != "passed" and entry["outcome"] == "passed":
        entry["outcome"] = report.outcome if report.when == "call" else f"{report.outcome} in {report.when}"


def pytest_sessionfinish(session, exitstatus) -> None:
    out = os.environ.get("RCMAE_RELIABILITY_REPORT")
    if out and _RELIABILITY_OUTCOMES:
        Path(out).write_text(json.dumps(list(_RELIABILITY_OUTCOMES.values()), indent=1))


# A tiny trained run on the synthetic demo data (one machine type, 3 IDs), for export/monitor/demo-app tests.
DEMO_RUN_OVERRIDES = [
    "model.embed_dim=32", "model.depth=1", "model.heads=2", "model.decoder_embed_dim=32", "model.decoder_depth=1",
    "model.decoder_heads=2", "model.proj_dim=32", "model.mlp_ratio=2.0", "pretrain.batch_size=8",
    "finetune.batch_size=8", "score.recon_masks=3", "score.knn_k=2",
    # No scorer override: the export, monitor and demo-app tests run the preset's shipped default (the
    # training-free ensemble of stats_maha and frame_pca); test_export adds a network ensemble on a copy.
]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """Demo data (fan only: 3 IDs x 6 train + 3/3 test clips) and a run on it: 1 + 1 epochs, evaluated."""
    from rcmae.data import demo
    from rcmae.evaluation.evaluate import evaluate_run
    from rcmae.training import stages as train

    root = tmp_path_factory.mktemp("demo_run")
    data = demo.make_demo_data(root / "demo", train_per_id=6, test_per_id=3, progress=False,
                               machine_types=["fan"], workers=1)
    run = root / "run"
    train.pretrain(data / "dev_data", run, epochs=1, overrides=DEMO_RUN_OVERRIDES, progress=False)
    train.finetune(run, epochs=1, progress=False)
    evaluate_run(run, progress=False)
    return run


@pytest.fixture(scope="session")
def demo_bundle(demo_run, tmp_path_factory) -> Path:
    """The demo run's default scorer exported in the default format (a graph spec of arrays: data)."""
    from rcmae.deploy.export import export_run

    return export_run(demo_run, tmp_path_factory.mktemp("bundle") / "bundle")


@pytest.fixture(scope="session")
def demo_bundle_torchscript(demo_run, tmp_path_factory) -> Path:
    """The demo run's default scorer exported as a TorchScript bundle (code: it loads only with trust)."""
    from rcmae.deploy.export import export_run

    return export_run(demo_run, tmp_path_factory.mktemp("bundle_ts") / "bundle", format="torchscript")
