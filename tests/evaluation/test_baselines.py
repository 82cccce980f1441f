"""The AE and kNN baselines against hand-computed references (loops over frames, numpy, librosa, sklearn)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import librosa
import numpy as np
import pytest
import torch
from torch import nn

from rcmae.data.features import LogMel
from rcmae.data.index import index_dataset
from rcmae.evaluation.baselines import run_baseline
from rcmae.evaluation.baselines.ae import AEConfig, DenseAE, clip_scores, train_ae, vectorize
from rcmae.evaluation.baselines.knn import clip_statistics, knn_scores

sys.path.insert(0, str(Path(__file__).parents[1]))
from conftest import check_results, write_tiny_dcase  # noqa: E402


# ---------------------------------------------------------------- AE: features and vectors
def baseline_vectors_loop(log_mel: np.ndarray, frames: int) -> np.ndarray:
    """The official file_to_vector_array's concatenation, written out as a loop over frames."""
    n_mels, n_frames = log_mel.shape
    size = n_frames - frames + 1
    out = np.zeros((size, n_mels * frames))
    for j in range(size):
        for t in range(frames):
            out[j, n_mels * t : n_mels * (t + 1)] = log_mel[:, j + t]
    return out


def test_vectorize_matches_the_baseline_loop():
    rng = np.random.default_rng(0)
    mels = rng.standard_normal((2, 128, 313)).astype(np.float32)
    v = vectorize(torch.from_numpy(mels), frames=5)
    assert v.shape == (2, 309, 640)
    for i in range(2):
        np.testing.assert_array_equal(v[i].numpy(), baseline_vectors_loop(mels[i], 5))
    assert vectorize(torch.from_numpy(mels[0]), frames=3).shape == (311, 384)
    with pytest.raises(ValueError, match="shorter"):
        vectorize(torch.zeros(1, 128, 4), frames=5)


def test_front_end_matches_librosa_features_computed_as_the_2020_baseline_does():
    """313 frames -> 309 vectors of 640 for a 10 s clip; dB matches 10*log10(S + eps) of librosa's melspectrogram."""
    rng = np.random.default_rng(1)
    t = np.arange(160000) / 16000
    y = (0.1 * rng.standard_normal(160000) + 0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    cfg = AEConfig()
    db = LogMel(cfg.logmel_config())(torch.from_numpy(y)).numpy()
    assert db.shape == (128, 313)
    # librosa 0.6 (pinned by the baseline) centred frames with reflect padding.
    s = librosa.feature.melspectrogram(y=y.astype(np.float64), sr=16000, n_fft=1024, hop_length=512, n_mels=128,
                                       power=2.0, pad_mode="reflect")
    ref = 20.0 / 2.0 * np.log10(s + sys.float_info.epsilon)
    assert np.abs(db - ref).max() < 1e-4  # measured 2e-5 dB; zero padding instead of reflect would give ~7 dB
    assert vectorize(torch.from_numpy(db), cfg.frames).shape == (309, 640)


def test_dense_ae_layer_sizes_and_batchnorm_placement():
    model = DenseAE()
    layers = list(model.layers)
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    sizes = [(m.in_features, m.out_features) for m in linears]
    assert sizes == [(640, 128), (128, 128), (128, 128), (128, 128), (128, 8),
                     (8, 128), (128, 128), (128, 128), (128, 128), (128, 640)]
    # Dense -> BatchNorm -> ReLU on each of the 9 hidden layers; the output Dense is linear.
    for i in range(9):
        lin, bn, act = layers[3 * i : 3 * i + 3]
        assert isinstance(lin, nn.Linear) and isinstance(bn, nn.BatchNorm1d) and isinstance(act, nn.ReLU)
        assert bn.num_features == lin.out_features
        assert bn.eps == pytest.approx(1e-3) and bn.momentum == pytest.approx(0.01)
    assert isinstance(layers[-1], nn.Linear) and len(layers) == 28
    assert all(torch.all(m.bias == 0) for m in linears)


def test_clip_score_is_mean_over_vectors_of_per_vector_mse():
    rng = np.random.default_rng(2)
    mels = torch.from_numpy(rng.standard_normal((3, 128, 40)).astype(np.float32) * 5 - 30)
    model, _ = train_ae(mels, AEConfig(epochs=1, batch_size=64), seed=0, progress=False)
    got = clip_scores(model, mels, frames=5)
    model.eval()
    for i in range(3):
        x = baseline_vectors_loop(mels[i].numpy(), 5)
        with torch.no_grad():
            recon = model(torch.from_numpy(x).float()).numpy()
        errors = np.mean(np.square(x - recon), axis=1)
        assert got[i] == pytest.approx(np.mean(errors), rel=1e-5)


def test_training_is_seeded_and_reports_the_keras_validation_loss():
    rng = np.random.default_rng(3)
    mels = torch.from_numpy(rng.standard_normal((4, 16, 30)).astype(np.float32))
    cfg = AEConfig(n_mels=16, epochs=3, batch_size=16)
    m1, h1 = train_ae(mels, cfg, seed=5, progress=False)
    m2, h2 = train_ae(mels, cfg, seed=5, progress=False)
    m3, _ = train_ae(mels, cfg, seed=6, progress=False)
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])
    assert not torch.equal(m1.layers[0].weight, m3.layers[0].weight)
    assert h1 == h2 and len(h1["loss"]) == 3 and len(h1["val_loss"]) == 3
    # Keras validation_split: the last 10 % of the vectors in file order, scored in inference mode.
    vecs = np.concatenate([baseline_vectors_loop(m.numpy(), 5) for m in mels])
    val = vecs[int(len(vecs) * 0.9) :]
    m1.eval()
    with torch.no_grad():
        recon = m1(torch.from_numpy(val).float()).numpy()
    assert h1["val_loss"][-1] == pytest.approx(np.mean(np.square(val - recon)), rel=1e-5)


def test_ae_end_to_end_writes_results_models_and_resumes(tiny_dcase, tmp_path):
    out = tmp_path / "ae"
    res = run_baseline("ae", tiny_dcase, out, epochs=2, seed=0, progress=False)
    check_results(out, tiny_dcase)
    assert res["system"] == "ae"
    for mtype in ("fan", "valve"):
        saved = torch.load(out / "models" / f"model_{mtype}.pt", weights_only=True)
        assert saved["state_dict"]["layers.0.weight"].shape == (128, 640)
        assert len(saved["history"]["loss"]) == 2 and len(saved["history"]["val_loss"]) == 2
    stamp = (out / "models" / "model_fan.pt").stat().st_mtime_ns
    again = run_baseline("ae", tiny_dcase, out, epochs=2, seed=0, progress=False)
    assert (out / "models" / "model_fan.pt").stat().st_mtime_ns == stamp  # reused, not retrained
    assert again["per_id"] == res["per_id"]


# ---------------------------------------------------------------- kNN
def test_knn_scores_match_a_brute_force_loop():
    rng = np.random.default_rng(4)
    train, test = rng.standard_normal((7, 5)), rng.standard_normal((4, 5))
    for metric in ("euclidean", "cosine"):
        for k in (1, 3, 10):
            got = knn_scores(train, test, k=k, metric=metric)
            for i, q in enumerate(test):
                if metric == "euclidean":
                    d = [np.sqrt(np.sum((q - t) ** 2)) for t in train]
                else:
                    d = [1 - q @ t / (np.linalg.norm(q) * np.linalg.norm(t)) for t in train]
                assert got[i] == pytest.approx(np.mean(sorted(d)[: min(k, 7)]), abs=1e-9)
    with pytest.raises(ValueError, match="metric"):
        knn_scores(train, test, metric="manhattan")


def test_clip_statistics_are_mean_and_std_over_time():
    x = np.random.default_rng(5).standard_normal((2, 3, 11))
    stats = clip_statistics(torch.from_numpy(x))
    assert stats.shape == (2, 6)
    np.testing.assert_allclose(stats[:, :3], x.mean(axis=2))
    np.testing.assert_allclose(stats[:, 3:], x.std(axis=2))


def test_knn_end_to_end_on_logmel_statistics(tiny_dcase, tmp_path):
    res = run_baseline("knn", tiny_dcase, tmp_path / "knn", progress=False)
    check_results(tmp_path / "knn", tiny_dcase)
    assert res["baseline"]["metric"] == "euclidean" and res["baseline"]["k"] == 1
    # The tiny set's anomalies add a whine and clicks that shift the band levels: kNN must see them.
    assert res["average"]["auc"] > 0.8


def test_knn_on_run_embeddings_equals_per_id_cosine_by_hand(tiny_dcase, tmp_path):
    index = index_dataset(tiny_dcase)
    rng = np.random.default_rng(6)
    z = rng.standard_normal((len(index), 8))
    run = tmp_path / "run"
    (run / "embeddings").mkdir(parents=True)
    np.savez(run / "embeddings" / "finetune.npz", path=index["path"].to_numpy(str), z=z)
    # A second space the run also holds; the fine-tuned one must be preferred.
    np.savez(run / "embeddings" / "pretrain.npz", path=index["path"].to_numpy(str), z=rng.standard_normal(z.shape))
    out = tmp_path / "knn_emb"
    run_baseline("knn", tiny_dcase, out, embeddings=run, k=2, progress=False)
    check_results(out, tiny_dcase)
    with open(out / "anomaly_score_valve_id_02.csv") as f:
        got = {name: float(s) for name, s in csv.reader(f)}
    rows = index[(index["machine_type"] == "valve") & (index["machine_id"] == "02")]
    train = [z[i] for i in rows.index[rows["split"] == "train"]]
    for i in rows.index[rows["split"] == "test"]:
        d = sorted(1 - z[i] @ t / (np.linalg.norm(z[i]) * np.linalg.norm(t)) for t in train)
        assert got[Path(index.loc[i, "path"]).name] == pytest.approx(np.mean(d[:2]), abs=1e-9)


# ---------------------------------------------------------------- bad input
def test_bad_clip_is_skipped_and_reported(tmp_path):
    data = write_tiny_dcase(tmp_path / "data", seconds=1.0, seed=1)
    bad = data / "dev_data" / "fan" / "train" / "normal_id_00_00000099.wav"
    bad.write_bytes(b"RIFF....not a wav")
    res = run_baseline("knn", data, tmp_path / "out", progress=False)
    assert [p for p, _ in res["skipped_files"]] == [str(bad)]
    assert len(res["per_id"]) == 4


def test_bad_names_and_settings_raise_one_clear_line(tiny_dcase, tmp_path):
    with pytest.raises(ValueError, match="unknown baseline 'svm'"):
        run_baseline("svm", tiny_dcase, tmp_path / "x")
    with pytest.raises(ValueError, match="unknown setting"):
        run_baseline("ae", tiny_dcase, tmp_path / "x", hidden_units=3)
    with pytest.raises(ValueError, match="metric"):
        run_baseline("knn", tiny_dcase, tmp_path / "x", metric="manhattan", progress=False)
    with pytest.raises(FileNotFoundError):
        run_baseline("knn", tmp_path / "missing", tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="embeddings"):
        run_baseline("knn", tiny_dcase, tmp_path / "x", embeddings=tmp_path / "norun", progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        AEConfig(batch_size=1)


def test_cli_baseline_knn_flags(tiny_dcase, tmp_path, capsys):
    from rcmae.cli import main

    out = tmp_path / "cli_knn"
    assert main(["baseline", "knn", "--data", str(tiny_dcase), "--out", str(out), "--k", "2"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["baseline"]["k"] == 2 and res["baseline"]["metric"] == "euclidean"
    assert f"AUC {res['average']['auc']:.4f}" in capsys.readouterr().out
    assert main(["baseline", "ae", "--data", str(tiny_dcase), "--out", str(out), "--k", "3"]) == 2
    assert "apply to the knn baseline only" in capsys.readouterr().err
