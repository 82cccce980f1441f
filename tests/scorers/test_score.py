"""Scorers against brute-force references, thresholds against scipy/numpy, and one scoring path."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch

from rcmae import cli
from rcmae.data.audio import load_audio
from rcmae.data.datasets import make_generator
from rcmae.evaluation.evaluate import evaluate_run
from rcmae.scorers import (
    RECON_SEED,
    ScoringError,
    fit_gaussian,
    fit_threshold,
    joint_features,
    knn_distances,
    knn_euclidean,
    mahalanobis,
    topk_mean,
)
from rcmae.scorers.detector import Detector
from rcmae.training import stages as train

TINY = [
    "model.embed_dim=32", "model.depth=1", "model.heads=2", "model.decoder_embed_dim=32", "model.decoder_depth=1",
    "model.decoder_heads=2", "model.proj_dim=32", "model.mlp_ratio=2.0", "pretrain.batch_size=8",
    "finetune.batch_size=8", "score.recon_masks=3", "score.knn_k=2", "pretrain.crop_frames=null",
    "pretrain.crops_per_clip=1", "model.n_frames=320",
]


@pytest.fixture(scope="module")
def run(tiny_dcase, tmp_path_factory):
    out = tmp_path_factory.mktemp("score") / "run"
    train.pretrain(tiny_dcase, out, epochs=2, overrides=TINY, progress=False)
    train.finetune(out, epochs=2, progress=False)
    evaluate_run(out, progress=False)
    return out


@pytest.fixture(scope="module")
def det(run):
    return Detector.load(run)


def _clip(tiny_dcase, kind="anomaly", machine="fan", mid="02", n=1):
    return tiny_dcase / "dev_data" / machine / "test" / f"{kind}_id_{mid}_{n:08d}.wav"


def test_fit_threshold_gamma_and_percentile():
    rng = np.random.default_rng(0)
    scores = rng.gamma(shape=3.0, scale=0.5, size=4000)
    a, loc, scale = scipy.stats.gamma.fit(scores)
    assert fit_threshold(scores) == pytest.approx(scipy.stats.gamma.ppf(0.9, a, loc=loc, scale=scale))
    # ... and the fit recovers the generating distribution's 0.9 quantile.
    assert fit_threshold(scores) == pytest.approx(scipy.stats.gamma.ppf(0.9, 3.0, scale=0.5), rel=0.03)
    assert fit_threshold(scores, "percentile", 0.8) == pytest.approx(np.percentile(scores, 80))
    assert fit_threshold([0.2, 0.2, 0.2]) == 0.2
    with pytest.raises(ValueError, match="gamma or percentile"):
        fit_threshold(scores, "median")
    with pytest.raises(ValueError, match=r"q=1.5 must be in \(0, 1\)"):
        fit_threshold(scores, q=1.5)


def test_fit_threshold_falls_back_to_the_percentile_when_the_gamma_gives_no_finite_quantile(monkeypatch):
    scores = np.random.default_rng(1).gamma(shape=3.0, scale=0.5, size=200)
    monkeypatch.setattr(scipy.stats.gamma, "ppf", lambda *a, **k: np.inf)  # a degenerate fit
    assert fit_threshold(scores, q=0.8) == pytest.approx(np.quantile(scores, 0.8), rel=1e-12)
    assert fit_threshold(scores, q=0.95) == pytest.approx(np.quantile(scores, 0.95), rel=1e-12)


def test_knn_distances_match_a_python_loop():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(5, 7))
    refs = [rng.normal(size=(6, 7)) for _ in range(5)]
    for k in (1, 3):
        expected = []
        for q, ref in zip(z, refs, strict=True):
            d = sorted(1 - sum(a * b for a, b in zip(q, r, strict=True))
                       / (np.sqrt(sum(a * a for a in q)) * np.sqrt(sum(b * b for b in r))) for r in ref)
            expected.append(sum(d[:k]) / k)
        assert np.allclose(knn_distances(z, refs, k), expected)
    loo = knn_distances(refs[0][:3], [refs[0]] * 3, 1, exclude=[0, 1, 2])
    assert np.all(loo > 1e-6)  # its own row (distance 0) is left out


def test_idprob_is_minus_log_softmax_of_the_logits(det, tiny_dcase):
    path = _clip(tiny_dcase)
    wave = load_audio(path)
    model = det.models["finetune"]
    with torch.no_grad():
        logits = model.classify(model.embed(det.features(wave[None])))[0].double().numpy()
    true = det.classes.index(("fan", "02"))
    expected = -(logits[true] - np.log(np.exp(logits).sum()))
    row = det.score(path, scorer="idprob")
    assert row["score"] == pytest.approx(expected, rel=1e-5)
    assert row["probs"]["fan/02"] == pytest.approx(np.exp(-expected), rel=1e-5)
    assert det.score(wave, scorer="idprob", machine_type="fan", machine_id="02")["score"] == pytest.approx(
        row["score"], rel=1e-6)
    # Another machine's class gives another number: the true class comes from the file name.
    other = det.score(wave, scorer="idprob", machine_type="valve", machine_id="00")["score"]
    assert other == pytest.approx(-(logits[det.classes.index(("valve", "00"))] - np.log(np.exp(logits).sum())),
                                  rel=1e-5)


def test_knn_is_a_brute_force_cosine_distance(det, run, tiny_dcase):
    path = _clip(tiny_dcase, "normal", "valve", "00", 2)
    z = det.embed(det.features(load_audio(path)[None]), "finetune")[0].double().numpy()
    emb = np.load(run / "embeddings" / "finetune.npz")
    sel = (emb["split"] == "train") & (emb["machine_type"] == "valve") & (emb["machine_id"] == "00")
    dists = sorted(1 - float(z @ r) / (np.linalg.norm(z) * np.linalg.norm(r)) for r in emb["z"][sel].astype(float))
    assert sel.sum() == 6
    assert det.score(path, scorer="knn")["score"] == pytest.approx(np.mean(dists[:2]), rel=1e-5)
    # Thresholds are fitted on leave-one-out training scores (a clip is not its own neighbour).
    train_scores = pd.read_csv(run / "train_scores.csv", dtype={"machine_id": str})
    knn = train_scores[(train_scores["scorer"] == "knn") & (train_scores["machine_type"] == "valve")
                       & (train_scores["machine_id"] == "00")]
    zs, paths = emb["z"][sel].astype(float), emb["path"][sel]
    for p, s in zip(knn["path"], knn["score"], strict=True):
        i = list(paths).index(p)
        d = sorted(1 - zs[i] @ zs[j] / (np.linalg.norm(zs[i]) * np.linalg.norm(zs[j])) for j in range(6) if j != i)
        assert s == pytest.approx(np.mean(d[:2]), rel=1e-5)
    thr = json.loads((run / "thresholds.json").read_text())["thresholds"]["knn"]["valve/00"]
    assert thr == pytest.approx(fit_threshold(knn["score"].to_numpy()))


def test_recon_is_deterministic_and_batch_independent(det, tiny_dcase):
    paths = [_clip(tiny_dcase, "normal", "fan", "00", 0), _clip(tiny_dcase, "anomaly", "fan", "00", 3)]
    one = [det.score(p, scorer="recon")["score"] for p in paths]
    x = torch.cat([det.features(load_audio(p)[None]) for p in paths])
    batch = det.score_logmels(x, ["fan", "fan"], ["00", "00"], "recon")
    assert np.allclose(one, batch, rtol=1e-6)
    assert det.score(paths[0], scorer="recon")["score"] == one[0]
    # The score is the masked MSE averaged over the configured number of masks.
    model = det.models["pretrain"]
    gen = torch.Generator().manual_seed(123)
    errs = model.reconstruction_error(x[:1].expand(3, -1, -1), 0.75, gen, n_masks=1)
    assert errs.shape == (3,) and torch.all(errs > 0)


def test_cli_api_and_evaluate_give_the_same_number(det, run, tiny_dcase, capsys):
    path = _clip(tiny_dcase, "anomaly", "valve", "02", 1)
    scores = pd.read_csv(run / "eval" / "scores.csv").set_index("path")
    for scorer in ("idprob", "knn", "recon", "knn_joint", "maha", "recon_topk", "knn_norm", "stats_knn", "stats_maha",
                   "frame_pca", "frame_maha", "ensemble"):
        api = Detector.load(run).score(path, scorer=scorer)
        assert cli.main(["score", "--run", str(run), str(path), "--scorer", scorer, "--json"]) == 0
        cli_row = json.loads(capsys.readouterr().out)[0]
        evaluated = scores.loc[str(path), f"score_{scorer}"]
        csv = pd.read_csv(run / "eval" / scorer / "anomaly_score_valve_id_02.csv", header=None, index_col=0)
        assert cli_row["score"] == pytest.approx(api["score"], rel=1e-6)
        assert evaluated == pytest.approx(api["score"], rel=1e-5)
        assert csv.loc[path.name, 1] == pytest.approx(api["score"], rel=1e-5)
        assert api["threshold"] == det.threshold(scorer, "valve", "02")
        assert api["decision"] == ("anomaly" if api["score"] > api["threshold"] else "normal")
        assert scores.loc[str(path), f"decision_{scorer}"] == api["decision"]
    assert det.default_scorer == "ensemble"  # the tiny preset's (the paper preset keeps idprob)
    assert det.score(path)["scorer"] == "ensemble"
    before = json.loads((run / "eval" / "results.knn.json").read_text())
    assert cli.main(["evaluate", "--run", str(run), "--scorer", "knn"]) == 0
    assert "knn: AUC" in capsys.readouterr().out
    assert json.loads((run / "eval" / "results.knn.json").read_text()) == before


def test_bad_clips_and_machines(det, run, tiny_dcase, tmp_path, capsys):
    bad = tmp_path / "fan" / "test" / "normal_id_00_00000000.wav"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"garbage")
    rows = det.score_paths([_clip(tiny_dcase), bad])
    assert rows[0]["error"] is None and rows[1]["error"] and rows[1]["score"] is None
    assert cli.main(["score", "--run", str(run), str(bad)]) == 1
    assert "skipped" in capsys.readouterr().out
    with pytest.raises(ScoringError, match="pass machine_type and machine_id"):
        det.score(np.zeros(16000, dtype=np.float32) + 0.1)
    with pytest.raises(ScoringError, match=r"machine pump id 00 was not in this run's training data"):
        det.score(load_audio(_clip(tiny_dcase)), machine_type="pump", machine_id="00")
    with pytest.raises(ScoringError, match="unknown scorer 'foo'"):
        det.score(_clip(tiny_dcase), scorer="foo")
    nameless = tmp_path / "clip.wav"
    nameless.write_bytes(_clip(tiny_dcase).read_bytes())
    assert "say which machine it records" in det.score_paths([nameless])[0]["error"]
    assert cli.main(["score", "--run", str(run), str(nameless)]) == 1
    assert "with --machine-type and --machine-id" in capsys.readouterr().out
    assert det.score_paths([nameless], machine_type="fan", machine_id="02")[0]["score"] == pytest.approx(
        det.score(_clip(tiny_dcase))["score"], rel=1e-6)


def test_crop_training_scores_by_averaging_windows(tiny_dcase, tmp_path):
    out = train.pretrain(tiny_dcase, tmp_path / "crop", epochs=1, progress=False,
                         overrides=TINY + ["pretrain.crop_frames=96", "model.n_frames=96", "pretrain.crops_per_clip=2",
                                           "finetune.epochs=1"])
    train.finetune(out, progress=False)
    det = Detector.load(out)
    x = det.features(load_audio(_clip(tiny_dcase))[None])
    model = det.models["finetune"]
    starts = [0, 48, 96, 144, 192, 217]  # half-overlapping 96-frame windows over 313 frames, the last flush
    with torch.no_grad():
        z = torch.stack([model.embed(x[..., s : s + 96]) for s in starts]).mean(0)
    assert torch.allclose(det.embed(x, "finetune"), z, atol=1e-6)
    assert json.loads((out / "progress.json").read_text())["step"] == 1 * 3
    m = pd.read_csv(out / "metrics.csv")
    assert (m[(m["stage"] == "pretrain") & (m["kind"] == "step")]["step"]).max() == 6  # 2 crops per clip


# ------------------------------------------------------------------------------ small-data scorers (issue 3)
def test_knn_euclidean_matches_sklearn():
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(2)
    q = rng.normal(size=(5, 7))
    refs = [rng.normal(size=(8, 7)) for _ in range(5)]
    for k in (1, 3):
        expected = [NearestNeighbors(n_neighbors=k).fit(r).kneighbors(v[None])[0].mean() for v, r in zip(q, refs,
                                                                                                        strict=True)]
        assert np.allclose(knn_euclidean(q, refs, k), expected)
    # Leave-one-out: the nearest other row, i.e. sklearn's second neighbour of a training row.
    loo = knn_euclidean(refs[0][:3], [refs[0]] * 3, 1, exclude=[0, 1, 2])
    assert np.allclose(loo, NearestNeighbors(n_neighbors=2).fit(refs[0]).kneighbors(refs[0][:3])[0][:, 1])
    with pytest.raises(ScoringError, match="single training clip"):
        knn_euclidean(refs[0][:1], [refs[0][:1]], 1, exclude=[0])


def test_joint_features_mahalanobis_and_topk_match_references():
    import scipy.spatial.distance
    from sklearn.covariance import ledoit_wolf

    # Hand-computed: z -> z/|z| = (0.6, 0.8); stats block 2 * ((1, 3) - (0, 1)) / (1, 2) / sqrt(2) = (sqrt2, sqrt2).
    out = joint_features(np.array([[3.0, 4.0]]), np.array([[1.0, 3.0]]), np.array([0.0, 1.0]), np.array([1.0, 2.0]),
                         2.0)
    assert np.allclose(out, [[0.6, 0.8, np.sqrt(2), np.sqrt(2)]])
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(12, 20)) * rng.uniform(0.5, 3.0, size=20)
    q = rng.normal(size=(4, 20))
    # Ledoit & Wolf (2004) shrinkage written out: S = X'X / n (centred), target mu * I.
    n, p = ref.shape
    xc = ref - ref.mean(0)
    s = xc.T @ xc / n
    mu = np.trace(s) / p
    delta = ((s - mu * np.eye(p)) ** 2).sum() / p
    beta = min(sum(((np.outer(v, v) - s) ** 2).sum() for v in xc) / (n * n * p), delta)
    cov = (1 - beta / delta) * s + beta / delta * mu * np.eye(p)
    assert np.allclose(cov, ledoit_wolf(ref)[0])
    vi = np.linalg.inv(cov)
    expected = [scipy.spatial.distance.mahalanobis(v, ref.mean(0), vi) for v in q]
    assert np.allclose(mahalanobis(q, *fit_gaussian(ref)), expected, rtol=1e-6)
    with pytest.raises(ScoringError, match="at least 2"):
        fit_gaussian(ref[:1])
    errors = rng.random(37)
    for frac in (0.01, 0.1, 0.5, 1.0):
        k = max(1, int(np.ceil(frac * 37)))
        assert topk_mean(errors, frac) == pytest.approx(sum(sorted(errors, reverse=True)[:k]) / k)


def _train_rows(run, mtype, mid):
    emb = np.load(run / "embeddings" / "finetune.npz")
    cs = np.load(run / "references" / "clipstats.npz")
    train_rows = emb["split"] == "train"
    assert list(emb["path"][train_rows]) == list(cs["path"])  # one row order for both
    z, stats = emb["z"][train_rows].astype(float), cs["z"].astype(float)
    sel = (cs["machine_type"] == mtype) & (cs["machine_id"] == mid)
    return z, stats, sel, cs["path"]


def _joint_by_hand(z, stats, mu, sd, w):
    zn = z / np.linalg.norm(z, axis=-1, keepdims=True)
    return np.concatenate([zn, w * (stats - mu) / sd / np.sqrt(stats.shape[-1])], axis=-1)


def test_knn_joint_and_maha_are_brute_force(det, run, tiny_dcase):
    from sklearn.covariance import ledoit_wolf

    path = _clip(tiny_dcase, "anomaly", "valve", "00", 2)
    x = det.features(load_audio(path)[None])
    zq = det.embed(x, "finetune")[0].double().numpy()
    xs = x[0].double().numpy()
    sq = np.concatenate([xs.mean(axis=1), xs.std(axis=1)])  # per-band mean and population std over time
    z, stats, sel, paths = _train_rows(run, "valve", "00")
    mu, sd = stats.mean(0), stats.std(0)
    # knn_joint: Euclidean, mean of the knn_k = 2 nearest joint vectors of the machine ID.
    q, ref = _joint_by_hand(zq, sq, mu, sd, 1.0), _joint_by_hand(z[sel], stats[sel], mu, sd, 1.0)
    d = sorted(float(np.sqrt(sum((a - b) ** 2 for a, b in zip(q, r, strict=True)))) for r in ref)
    assert det.score(path, scorer="knn_joint")["score"] == pytest.approx(np.mean(d[:2]), rel=1e-5)
    # maha: Ledoit-Wolf Gaussian of the machine ID in the joint space weighted by maha_weight.
    w = det.cfg.score.maha_weight
    q, ref = _joint_by_hand(zq, sq, mu, sd, w), _joint_by_hand(z[sel], stats[sel], mu, sd, w)
    cov, _ = ledoit_wolf(ref)
    diff = q - ref.mean(0)
    assert det.score(path, scorer="maha")["score"] == pytest.approx(np.sqrt(diff @ np.linalg.solve(cov, diff)),
                                                                    rel=1e-4)
    # Training scores are leave-one-out: the Gaussian of the other five clips.
    train_scores = pd.read_csv(run / "train_scores.csv", dtype={"machine_id": str})
    row = train_scores[(train_scores["scorer"] == "maha") & (train_scores["path"] == paths[sel][0])].iloc[0]
    cov, _ = ledoit_wolf(ref[1:])
    diff = ref[0] - ref[1:].mean(0)
    assert row["score"] == pytest.approx(np.sqrt(diff @ np.linalg.solve(cov, diff)), rel=1e-4)


def test_recon_topk_is_the_top_fraction_of_masked_patch_errors(det, run, tiny_dcase):
    path = _clip(tiny_dcase, "anomaly", "fan", "00", 3)
    x = det.features(load_audio(path)[None])
    model, n = det.models["pretrain"], det.cfg.score.recon_masks
    gen = make_generator(RECON_SEED)  # the scorer's fixed mask stream
    with torch.no_grad():
        latent, mask, ids_restore = model.forward_encoder(x.expand(n, -1, -1), det.cfg.score.recon_mask_ratio, gen)
        pred, target = model.forward_decoder(latent, ids_restore), model.target(x)[0]
    errors = [float(((pred[b, p] - target[p]) ** 2).mean()) for b in range(n) for p in range(mask.shape[1])
              if mask[b, p] > 0]
    k = int(np.ceil(det.cfg.score.recon_topk * len(errors)))
    assert det.score(path, scorer="recon_topk")["score"] == pytest.approx(
        sum(sorted(errors, reverse=True)[:k]) / k, rel=1e-5)
    # With every masked patch kept it is the recon score (same masks, same patches).
    whole = Detector.load(run)
    whole.cfg.score.recon_topk = 1.0
    assert whole.score(path, scorer="recon_topk")["score"] == pytest.approx(np.mean(errors), rel=1e-5)
    assert whole.score(path, scorer="recon_topk")["score"] == pytest.approx(det.score(path, scorer="recon")["score"],
                                                                            rel=1e-5)


def test_ensemble_standardises_each_scorer_with_its_training_scores(det, run, tiny_dcase):
    path = _clip(tiny_dcase, "normal", "valve", "02", 1)
    train_scores = pd.read_csv(run / "train_scores.csv", dtype={"machine_id": str})
    mine = train_scores[(train_scores["machine_type"] == "valve") & (train_scores["machine_id"] == "02")]
    parts, train_parts = [], []
    for name in det.cfg.score.ensemble:
        ts = mine[mine["scorer"] == name].set_index("path")["score"]
        mean, std = ts.mean(), ts.std(ddof=0)
        parts.append((det.score(path, scorer=name)["score"] - mean) / std)
        train_parts.append((ts - mean) / std)
    # A mean of z-scores can sit near zero: compared on the members' scale (docs/DESIGN.md, "Tolerances").
    assert det.score(path, scorer="ensemble")["score"] == pytest.approx(np.mean(parts),
                                                                        abs=1e-6 * np.max(np.abs(parts)))
    # The ensemble's own training scores combine the (leave-one-out) training scores of its parts.
    ens = mine[mine["scorer"] == "ensemble"].set_index("path")["score"]
    assert np.allclose(ens.sort_index(), sum(train_parts).sort_index() / len(train_parts))


def test_an_ensemble_without_member_moments_is_unavailable_and_the_default_falls_back(tiny_dcase, tmp_path, capsys):
    # Two training clips per ID: leave-one-out leaves one clip, too few for maha's covariance, so maha has no
    # training-score moments and the ensemble (knn + maha, standardised by those moments) cannot score. It is
    # unavailable from the start, with the reason, and the run's default falls back to knn, said in the notes.

    data = tmp_path / "few"
    for wav in sorted(tiny_dcase.rglob("*.wav")):
        rel = wav.relative_to(tiny_dcase)
        if "train" in rel.parts and int(wav.stem[-8:]) >= 2:
            continue
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(wav, data / rel)
    out = tmp_path / "run"
    train.pretrain(data, out, epochs=1, overrides=[*TINY, "score.default_scorer=ensemble",
                                                   "score.ensemble=[knn,maha]"], progress=False)
    results = evaluate_run(out, progress=False)
    det = Detector.load(out)
    assert "ensemble" not in det.scorers and det.default_scorer == "knn"
    assert "no held-out normal-score moments of maha" in det.notes[0]
    assert "ensemble" not in results and {"knn", "recon", "maha"} <= set(results)
    evaluated = json.loads((out / "run.json").read_text())["evaluated"]
    assert evaluated["default_scorer"] == "knn" and evaluated["scorers"] == list(results)
    assert json.loads((out / "eval" / "results.json").read_text()) == results["knn"]
    assert not (out / "eval" / "results.ensemble.json").exists()
