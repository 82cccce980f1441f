"""The scorers package: its interface against independent references, and the import arrows of the house."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from rcmae.run.config import ScoreConfig
from rcmae.scorers import (
    Clips,
    EnsembleScorer,
    FrameGaussian,
    FrameScorer,
    KnnScorer,
    NormalSet,
    NormKnnScorer,
    ScoringError,
    StatsMahaScorer,
    band_stats,
    context_frames,
    fit_threshold,
    fit_unit_thresholds,
    zscore,
)

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_training_never_imports_scoring():
    # The run folder is the only contract between training and scoring (docs/DESIGN, ARCHITECTURE).
    for path in (ROOT / "rcmae" / "training").glob("*.py"):
        imported = _imports(path)
        assert not {m for m in imported if m.startswith("rcmae.scorers")}, path
    # And at run time, through any module training imports.
    code = ("import sys, rcmae.training.stages, rcmae.training.margin; "
            "bad = [m for m in sys.modules if m.startswith('rcmae.scorers')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_scorers_import_numpy_and_torch_only():
    code = ("import sys, rcmae.scorers, rcmae.scorers.detector; print(sorted({m for m in sys.modules} & "
            "{'lightning', 'pytorch_lightning', 'streamlit', 'plotly', 'rcmae.training'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
    for path in (ROOT / "rcmae" / "scorers").glob("*.py"):
        assert not {m for m in _imports(path) if m.startswith(("rcmae.training", "lightning"))}, path


def _unit_tables(rng, units, n, d):
    z = rng.normal(size=(len(units) * n, d)).astype(np.float32)
    types = np.array([u[0] for u in units for _ in range(n)])
    ids = np.array([u[1] for u in units for _ in range(n)])
    paths = np.array([f"{t}/{i}/{k}.wav" for t, i in units for k in range(n)])
    return {"z": z, "machine_type": types, "machine_id": ids, "path": paths}


def test_knn_scorer_matches_sklearn_nearest_neighbors(tmp_path):
    rng = np.random.default_rng(0)
    units = [("fan", "00"), ("fan", "02"), ("pump", "00")]
    table = _unit_tables(rng, units, 7, 5)
    cfg = ScoreConfig(knn_k=3, knn_space="pretrain")
    knn = KnnScorer(cfg, tmp_path, spaces=["pretrain"])
    knn.fit(NormalSet({"pretrain": table}))
    q = rng.normal(size=(4, 5)).astype(np.float32)
    qt, qi = ["fan", "pump", "fan", "pump"], ["02", "00", "00", "00"]
    clips = Clips(torch.zeros(4, 2, 3), qt, qi, None, lambda name: q)
    got = knn.score(clips)
    for n, (t, i) in enumerate(zip(qt, qi, strict=True)):
        sel = (table["machine_type"] == t) & (table["machine_id"] == i)
        nn = NearestNeighbors(n_neighbors=3, metric="cosine").fit(table["z"][sel].astype(np.float64))
        dist, _ = nn.kneighbors(q[n : n + 1].astype(np.float64))
        assert got[n] == pytest.approx(dist.mean(), rel=1e-6)
    # The training clips themselves: each is left out of its own references (held-out normal scores).
    train = Clips(torch.zeros(21, 2, 3), table["machine_type"], table["machine_id"], table["path"],
                  lambda name: table["z"])
    held_out = knn.score(train)
    for n in range(21):
        sel = (table["machine_type"] == table["machine_type"][n]) & (table["machine_id"] == table["machine_id"][n])
        sel[n] = False
        nn = NearestNeighbors(n_neighbors=3, metric="cosine").fit(table["z"][sel].astype(np.float64))
        assert held_out[n] == pytest.approx(nn.kneighbors(table["z"][n : n + 1].astype(np.float64))[0].mean(),
                                            rel=1e-6)
    with pytest.raises(ScoringError, match="machine valve id 00 was not in this run's training data"):
        knn.score(Clips(torch.zeros(1, 2, 3), ["valve"], ["00"], None, lambda name: q[:1]))


def test_unit_thresholds_and_moments_are_per_unit_loops():
    rng = np.random.default_rng(1)
    scores = rng.gamma(2.0, 1.0, size=30)
    types = ["a"] * 10 + ["b"] * 20
    ids = ["00"] * 10 + ["00"] * 12 + ["01"] * 8
    thr, mom = fit_unit_thresholds(scores, types, ids, "percentile", 0.8)
    assert sorted(thr) == ["a/00", "b/00", "b/01"]
    for key, sl in {"a/00": slice(0, 10), "b/00": slice(10, 22), "b/01": slice(22, 30)}.items():
        assert thr[key] == pytest.approx(np.quantile(scores[sl], 0.8))
        assert mom[key] == pytest.approx([scores[sl].mean(), scores[sl].std()])
    gthr, _ = fit_unit_thresholds(scores, types, ids)
    assert gthr["b/00"] == pytest.approx(fit_threshold(scores[10:22]))


def test_ensemble_is_the_mean_of_per_unit_zscores(tmp_path):
    members = {"m1": np.array([1.0, 2.0, 3.0]), "m2": np.array([10.0, 0.0, -5.0])}
    moments = {"m1": {"t/0": [1.0, 2.0], "t/1": [0.0, 1.0]}, "m2": {"t/0": [0.0, 5.0], "t/1": [-5.0, 0.5]}}
    ens = EnsembleScorer(ScoreConfig(), tmp_path, lambda: ["m1", "m2"], lambda name, clips: members[name], moments,
                         lambda name: "")
    clips = Clips(torch.zeros(3, 1, 1), ["t", "t", "t"], ["0", "1", "0"], None, lambda name: None)
    # By hand: clip 0 (t/0): (1-1)/2=0, (10-0)/5=2 -> 1; clip 1 (t/1): 2, 10 -> 6; clip 2 (t/0): 1, -1 -> 0.
    assert ens.score(clips) == pytest.approx([1.0, 6.0, 0.0])
    with pytest.raises(ScoringError, match="no training-score moments of m1"):
        zscore(np.zeros(1), ["t"], ["9"], moments["m1"], "m1")


def test_band_stats_and_context_frames_match_numpy_loops():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 4, 9)).astype(np.float32)
    got = band_stats(torch.from_numpy(x)).numpy()
    for b in range(2):
        want = []
        for stat in (np.mean, np.std, lambda v: np.quantile(v, 0.1), np.median, lambda v: np.quantile(v, 0.9),
                     lambda v: np.mean(np.abs(np.diff(v)))):
            want += [stat(x[b, f].astype(np.float64)) for f in range(4)]
        assert np.allclose(got[b], want, atol=1e-5)
    frames = context_frames(x[0], n=3)
    assert frames.shape == (7, 12)
    for t in range(7):
        assert np.array_equal(frames[t], np.concatenate([x[0][:, t + j] for j in range(3)]))


def test_frame_gaussian_matches_a_direct_covariance_and_sklearn_pca():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(3)
    frames = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    query = rng.normal(size=(5, 6)) * 2
    g = FrameGaussian(ridge=0.0).fit(frames)
    cov = np.cov(frames.T, bias=True)
    d = query - frames.mean(0)
    assert g.maha(query) == pytest.approx(np.mean([v @ np.linalg.solve(cov, v) for v in d]), rel=1e-8)
    pca = PCA(n_components=2).fit(frames)
    rec = pca.inverse_transform(pca.transform(query))
    assert g.pca_residual(query, 2) == pytest.approx(np.mean(((query - rec) ** 2).sum(1)), rel=1e-8)
    # Summed per-part sufficient statistics give the same model as the frames at once.
    parts = [FrameGaussian.sufficient(frames[:150]), FrameGaussian.sufficient(frames[150:])]
    h = FrameGaussian(ridge=0.0).fit_sufficient(*(sum(p[k] for p in parts) for k in range(3)))
    assert h.maha(query) == pytest.approx(g.maha(query), rel=1e-8)


@pytest.mark.parametrize("frames", [1, 2, 3, 10, 313])
def test_band_quantiles_are_torch_quantile_bit_for_bit(frames):
    from rcmae.scorers.frames import BAND_QUANTILES, band_quantiles

    x = torch.randn(5, 16, frames, generator=torch.Generator().manual_seed(frames)) * 3
    x[1, 2, frames // 2] = float("nan")  # a row with a NaN is NaN, as torch.quantile's
    want = torch.quantile(x, torch.tensor(BAND_QUANTILES), dim=-1)
    got = band_quantiles(x)
    assert torch.equal(torch.isnan(got), torch.isnan(want)) and int(torch.isnan(got).sum()) == 3
    assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(want))


@pytest.mark.numeric
@pytest.mark.parametrize("domains", [False, True])
def test_frame_scores_from_the_logmel_equal_the_context_vector_form(domains):
    """``pca_residuals`` / ``mahas`` of a batch (no context matrix built) equal ``pca_residual`` / ``maha`` of each
    clip's ``context_frames`` (float64 both ways: only the summation order differs)."""
    rng = np.random.default_rng(11)
    f, t = 16, 60
    train = [rng.normal(size=(f, t)) + rng.normal(size=(f, 1)) for _ in range(12)]
    g = FrameGaussian().fit(np.concatenate([context_frames(x, 5) for x in train]))
    if domains:  # two domain means: the minimum over them
        g.domain_means = np.stack([g.mean, g.mean + rng.normal(size=g.mean.shape)])
    xs = rng.normal(size=(4, f, t)) * 1.5 + 0.3
    want_pca = [g.pca_residual(context_frames(x, 5), 7) for x in xs]
    np.testing.assert_allclose(g.pca_residuals(xs, 7, 5), want_pca, rtol=1e-10)
    np.testing.assert_allclose(g.mahas(xs, 5), [g.maha(context_frames(x, 5)) for x in xs], rtol=1e-10)
    with pytest.raises(ValueError, match="shorter than the context of 5 frames"):
        g.pca_residuals(np.zeros((1, f, 4)), 7, 5)


def _stat_table(rng, units, n, d):
    table = _unit_tables(rng, units, n, d)
    table["z"] = table["z"] * rng.uniform(0.5, 5.0, size=d).astype(np.float32) + 3.0  # unequal scales
    return table


def test_normalised_knn_is_zscored_by_held_out_normal_scores(tmp_path):
    rng = np.random.default_rng(4)
    units = [("fan", "00"), ("pump", "02")]
    table = _stat_table(rng, units, 8, 6)
    cfg = ScoreConfig(knn_k=2)
    sc = NormKnnScorer(cfg, tmp_path, lambda: "bandstats", "euclidean", "stats_knn")
    sc.fit(NormalSet({"bandstats": table}))
    z = table["z"].astype(np.float64)
    zs = (z - z.mean(0)) / z.std(0)  # standardised with every unit's normal clips
    q = rng.normal(size=(3, 6)) * 3 + 3
    qt, qi = ["fan", "pump", "fan"], ["00", "02", "00"]
    got = sc.score(Clips(torch.zeros(3, 1, 1), qt, qi, None, lambda name: q))
    for n, (t, i) in enumerate(zip(qt, qi, strict=True)):
        rows = np.flatnonzero((table["machine_type"] == t) & (table["machine_id"] == i))
        held = []
        for r in rows:  # leave-one-out held-out scores of the unit, by sklearn
            others = [o for o in rows if o != r]
            nn = NearestNeighbors(n_neighbors=2).fit(zs[others])
            held.append(nn.kneighbors(zs[r : r + 1])[0].mean())
        raw = NearestNeighbors(n_neighbors=2).fit(zs[rows]).kneighbors(((q[n] - z.mean(0)) / z.std(0))[None])[0].mean()
        assert got[n] == pytest.approx((raw - np.mean(held)) / np.std(held), rel=1e-6)
    # The training clips' own (held-out) scores are then exactly z-scores: mean 0, std 1 per unit.
    train = sc.score(Clips(torch.zeros(16, 1, 1), table["machine_type"], table["machine_id"], table["path"],
                           lambda name: table["z"]))
    for u in range(2):
        assert train[u * 8 : (u + 1) * 8].mean() == pytest.approx(0.0, abs=1e-9)
        assert train[u * 8 : (u + 1) * 8].std() == pytest.approx(1.0, rel=1e-9)


def test_stats_maha_is_a_ledoit_wolf_mahalanobis_on_standardised_statistics(tmp_path):
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(5)
    table = _stat_table(rng, [("valve", "00"), ("valve", "02")], 10, 5)
    sc = StatsMahaScorer(ScoreConfig(), tmp_path)
    sc.fit(NormalSet({"bandstats": table}))
    z = table["z"].astype(np.float64)
    mean, std = z.mean(0), z.std(0)
    q = rng.normal(size=(1, 5)) * 4 + 3
    ref = (z[10:] - mean) / std
    lw = LedoitWolf().fit(ref)
    want = np.sqrt(lw.mahalanobis((q - mean) / std))[0]
    got = sc.score(Clips(torch.zeros(1, 1, 1), ["valve"], ["02"], None, lambda name: q))[0]
    assert got == pytest.approx(want, rel=1e-6)


def test_stats_maha_without_scaling_is_a_ledoit_wolf_mahalanobis_on_the_statistics_as_they_are(tmp_path):
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(7)
    table = _stat_table(rng, [("valve", "00"), ("valve", "02")], 10, 5)
    scaled = StatsMahaScorer(ScoreConfig(), tmp_path)
    plain = StatsMahaScorer(ScoreConfig(stats_scale="none"), tmp_path)
    for sc in (scaled, plain):
        sc.fit(NormalSet({"bandstats": table}))
    q = rng.normal(size=(1, 5)) * 4 + 3
    z = table["z"].astype(np.float64)
    want = np.sqrt(LedoitWolf().fit(z[10:]).mahalanobis(q))[0]
    clips = Clips(torch.zeros(1, 1, 1), ["valve"], ["02"], None, lambda name: q)
    assert plain.score(clips)[0] == pytest.approx(want, rel=1e-6)
    # Unequal scales (0.5 to 5) make the two shrinkage targets differ: the scaled scorer gives another distance.
    assert abs(scaled.score(clips)[0] - want) > 1e-3 * want
    from rcmae.run.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="score.stats_scale: expected one of 'dimension', 'none'"):
        load_config("tiny", ["score.stats_scale=unit"])


def test_frame_scorer_held_out_folds_and_saved_models(tmp_path):
    from rcmae.scorers.frames import fold_of, load_frame_models

    rng = np.random.default_rng(6)
    x = torch.from_numpy(rng.normal(size=(12, 3, 10)).astype(np.float32))
    types, ids = ["fan"] * 12, ["00"] * 6 + ["02"] * 6
    paths = [f"c{i}.wav" for i in range(12)]
    cfg = ScoreConfig(frame_components=2)
    sc = FrameScorer(cfg, tmp_path, "pca")
    sc.fit(NormalSet(logmels=(x, types, ids, paths)))
    # A training clip is scored by the Gaussian of the other folds of its unit, fitted here from raw frames.
    fold = fold_of(6)
    held = sc.score(Clips(x, types, ids, paths, lambda name: None))
    for i in range(6):
        others = [j for j in range(6) if fold[j] != fold[i]]
        g = FrameGaussian().fit(np.concatenate([context_frames(x[j].numpy()) for j in others]))
        assert held[i] == pytest.approx(g.pca_residual(context_frames(x[i].numpy()), 2), rel=1e-6)
    # Test clips use the whole unit's model, which is saved and read back (float32) for later detectors.
    full = sc.score(Clips(x[:2], ["fan", "fan"], ["02", "02"], None, lambda name: None))
    g = FrameGaussian().fit(np.concatenate([context_frames(x[j].numpy()) for j in range(6, 12)]))
    assert full[1] == pytest.approx(g.pca_residual(context_frames(x[1].numpy()), 2), rel=1e-6)
    assert set(load_frame_models(tmp_path / "references" / "frames.npz")) == {"fan/00", "fan/02"}
    again = FrameScorer(cfg, tmp_path, "pca")
    again.fit(NormalSet())
    assert np.allclose(again.score(Clips(x[:2], ["fan", "fan"], ["02", "02"], None, lambda name: None)), full,
                       rtol=1e-4)


def test_class_logp_defaults_to_the_identity_transform_and_true_classes_checks_lengths():
    from rcmae.scorers.idprob import class_logp, true_classes

    logits = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.0, 0.0, 3.0, 1.0]])  # 2 classes x 2 transforms
    logz = torch.logsumexp(logits.double(), -1, keepdim=True)
    # By hand: log p(class c, transform 0) is column 2c of the log-softmax.
    assert torch.allclose(class_logp(logits, 2), (logits.double() - logz)[:, [0, 2]], atol=1e-12)
    assert torch.allclose(class_logp(logits, 2), class_logp(logits, 2, "identity"), atol=0)
    classes = [("fan", "00"), ("fan", "01")]
    assert true_classes(classes, None, ["fan", "fan"], ["01", "00"]) == [[1], [0]]
    with pytest.raises(ValueError):  # a clip list whose parts disagree in length is a caller's bug, not a score
        true_classes(classes, None, ["fan", "fan"], ["01"], ["", ""])
