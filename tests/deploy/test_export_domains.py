"""Bundles of a DCASE 2021+-style run (source and target domains) score like the run: the graphs keep the
scorers' per-domain banks and take the minimum over them (TorchScript per scorer, ONNX for an ensemble of all
domain-aware scorers); and the in-graph band statistics and context frames equal their numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SHORT_OVERRIDES

from rcmae.data.audio import load_audio
from rcmae.data.index import index_dataset
from rcmae.deploy.bundle import Bundle
from rcmae.deploy.export import export_run
from rcmae.deploy.graph.gaussian import GaussianBanks, band_stats_graph, compress_precisions
from rcmae.deploy.graph.heads import context_frames_graph
from rcmae.deploy.graph.knn import Banks
from rcmae.scorers import band_stats, context_frames, fit_gaussian, mahalanobis
from rcmae.scorers.detector import Detector
from rcmae.training import stages as train

# Every scorer whose references are kept per domain, in one ensemble (the ONNX test exports them all at once).
DOMAIN_AWARE = ["knn", "knn_joint", "maha", "stats_maha", "frame_pca", "frame_maha"]


@pytest.fixture(scope="module")
def run23(tiny_dcase2023, tmp_path_factory):
    run = tmp_path_factory.mktemp("export23") / "run"
    overrides = [*SHORT_OVERRIDES, "score.knn_k=2", "score.default_scorer=ensemble",
                 f"score.ensemble=[{','.join(DOMAIN_AWARE)}]"]
    train.pretrain(tiny_dcase2023, run, epochs=1, overrides=overrides, progress=False)
    train.finetune(run, epochs=1, progress=False)
    return run


@pytest.fixture(scope="module")
def det23(run23):
    return Detector.load(run23)


@pytest.fixture(scope="module")
def test_clips(tiny_dcase2023):
    index = index_dataset(tiny_dcase2023)
    test = index[index["split"] == "test"].sort_values("path")
    assert set(test["domain"]) == {"source", "target"} and set(test["label"]) == {"normal", "anomaly"}
    waves = np.stack([load_audio(p, duration=1.0) for p in test["path"]])
    return test, waves


def _run_scores(det: Detector, test, waves, scorer: str) -> np.ndarray:
    return det.score_waveforms(waves, list(test["machine_type"]), list(test["machine_id"]), scorer)


def _bundle_scores(bundle: Bundle, test, waves) -> np.ndarray:
    return bundle.score_waveforms(waves, list(test["machine_type"]), list(test["machine_id"]))


def test_the_run_has_two_domain_banks_per_unit_and_they_matter(det23, test_clips):
    test, waves = test_clips
    banked = {s: _run_scores(det23, test, waves, s) for s in ("knn", "maha", "stats_maha")}
    det23.cfg.score.domain_banks = False
    try:
        pooled = {s: _run_scores(det23, test, waves, s) for s in ("knn", "maha", "stats_maha")}
    finally:
        det23.cfg.score.domain_banks = True
    # Pooling the domains changes the scores: a graph that ignored the banks could not match the run below.
    for s in banked:
        assert np.abs(banked[s] - pooled[s]).max() > 1e-3 * np.abs(banked[s]).max(), s


@pytest.mark.parametrize("scorer", ["knn", "knn_joint", "maha", "stats_maha", "frame_pca", "frame_maha", "knn_norm",
                                    "stats_knn", "idprob", "recon", "recon_topk", "ensemble"])
def test_torchscript_bundle_scores_equal_the_run(run23, det23, test_clips, tmp_path, scorer):
    test, waves = test_clips
    assert scorer in det23.scorers
    bundle = Bundle(export_run(run23, tmp_path / scorer, scorer=scorer, examples=0), trust=True)
    ref = _run_scores(det23, test, waves, scorer)
    # Per-unit z-scores cross zero: their float32-embedding noise is compared to the score scale, not to each score.
    atol = 1e-5 * np.abs(ref).max() if scorer in ("knn_norm", "stats_knn", "ensemble") else 1e-9
    np.testing.assert_allclose(_bundle_scores(bundle, test, waves), ref, rtol=1e-5, atol=atol)
    if scorer in ("knn", "maha", "stats_maha"):
        with np.load(tmp_path / scorer / "references.npz") as refs:
            # Two units (fan, gearbox section 00), each with a source and a target bank.
            unit_banks = refs[f"{scorer}_unit_banks"]
            assert unit_banks.shape == (2, 2) and sorted(unit_banks.ravel().tolist()) == [0, 1, 2, 3]
    # knn_norm and stats_knn pool the domains (one bank per unit); idprob and recon keep no references.
    if scorer not in ("idprob", "recon", "recon_topk", "knn_norm", "stats_knn"):
        assert bundle.meta["domain_banks"] is True
        assert "- Domains: a machine trained on source and target clips" in (tmp_path / scorer / "MODEL_CARD.md"
                                                                             ).read_text()


def test_onnx_bundle_of_the_domain_aware_ensemble_scores_like_the_run(run23, det23, test_clips, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is in requirements.txt; install it for ONNX export")
    test, waves = test_clips
    assert det23.default_scorer == "ensemble" and det23.cfg.score.ensemble == DOMAIN_AWARE
    bundle = Bundle(export_run(run23, tmp_path / "onnx", format="onnx", examples=0))  # ONNX: data, no trust needed
    assert bundle.format == "onnx" and bundle.scorer == "ensemble"
    ref = _run_scores(det23, test, waves, "ensemble")
    # ONNX's STFT differs from torch's in the last float32 bits (each member stays within ~2e-6 relative); the
    # ensemble's z-scores cross zero, so its tolerance is 1e-5 of the largest score, not of each score.
    np.testing.assert_allclose(_bundle_scores(bundle, test, waves), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("frames", [1, 2, 3, 7, 32, 313])
def test_band_stats_graph_equals_numpy(frames):
    rng = np.random.default_rng(frames)
    x = rng.normal(size=(3, 4, frames)).astype(np.float32)
    x[0, 0] = np.round(x[0, 0])  # ties
    x64 = x.astype(np.float64)
    delta = np.abs(np.diff(x64, axis=-1)).mean(-1) if frames > 1 else np.zeros(x.shape[:2])
    ref = np.concatenate([x64.mean(-1), x64.std(-1), *np.quantile(x64, [0.1, 0.5, 0.9], axis=-1), delta], axis=-1)
    got = band_stats_graph(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # The same numbers as the scorer's own (torch.quantile) features.
    np.testing.assert_allclose(got, band_stats(torch.from_numpy(x)).numpy(), rtol=1e-6, atol=1e-6)


def test_context_frames_graph_equals_the_loop():
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 9)))
    got = context_frames_graph(x, 5).numpy()
    assert got.shape == (2, 5, 15)
    for b in range(2):
        loop = np.array([np.concatenate([x[b, :, t + k].numpy() for k in range(5)]) for t in range(5)])
        np.testing.assert_array_equal(got[b], loop)
        np.testing.assert_array_equal(got[b], context_frames(x[b], 5))


@pytest.mark.parametrize(("n", "dim"), [(12, 40), (10, 768), (60, 20)])
def test_compressed_precision_gives_the_scorers_mahalanobis(n, dim):
    rng = np.random.default_rng(n)
    z = rng.normal(size=(n, dim)) * rng.uniform(0.1, 3.0, size=dim)
    mean, precision = fit_gaussian(z)
    base, vecs, weights = compress_precisions(precision[None])
    # A Ledoit-Wolf covariance of n < dim clips: identity part plus rank n - 1; else every eigenvector is kept.
    assert vecs.shape == (1, dim, n - 1 if n <= dim else dim) and (base[0] > 0) == (n <= dim)
    np.testing.assert_allclose(base[0] * np.eye(dim) + (vecs[0] * weights[0]) @ vecs[0].T, precision,
                               rtol=1e-9, atol=1e-9 * np.abs(precision).max())
    banks = Banks([np.arange(n)], [0], 1)
    graph = GaussianBanks(mean[None], precision[None], banks, "t")
    q = rng.normal(size=(5, dim)) * 2
    got = graph(torch.from_numpy(q), torch.zeros(5, dtype=torch.long)).numpy()
    np.testing.assert_allclose(got, mahalanobis(q, mean, precision), rtol=1e-9)
