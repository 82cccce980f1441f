"""Domain-shift scoring (rcmae/scorers/domains.py): per-domain reference sets, minimum over them, checked against
sklearn's nearest neighbours and Ledoit-Wolf Gaussians built independently."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.covariance import LedoitWolf
from sklearn.neighbors import NearestNeighbors

from rcmae.run.config import ScoreConfig
from rcmae.scorers import Clips, JointKnnScorer, KnnScorer, MahaScorer, NormalSet, joint_features
from rcmae.scorers.domains import domain_banks, path_domains

N_SOURCE, N_TARGET, D = 12, 4, 6

pytestmark = pytest.mark.numeric


def _tables(rng: np.random.Generator) -> dict:
    """One unit (fan/00): 12 source clips around 0, 4 target clips around +3 (a shifted operating condition)."""
    paths = [f"/d/fan/train/section_00_source_train_normal_{k:04d}_spd_1.wav" for k in range(N_SOURCE)]
    paths += [f"/d/fan/train/section_00_target_train_normal_{k:04d}_spd_3.wav" for k in range(N_TARGET)]
    shift = np.r_[np.zeros(N_SOURCE), np.full(N_TARGET, 3.0)][:, None]
    z = rng.normal(size=(len(paths), D)) + shift
    stats = rng.normal(size=(len(paths), 4)) + shift[:, :1]
    unit = {"machine_type": np.array(["fan"] * len(paths)), "machine_id": np.array(["00"] * len(paths)),
            "path": np.array(paths)}
    return {"pretrain": {"z": z.astype(np.float32), **unit}, "clipstats": {"z": stats.astype(np.float32), **unit}}


def test_path_domains_and_banks():
    assert list(path_domains(["a/section_01_target_train_normal_0000.wav", "section_00_source_test_anomaly_0001_x.wav",
                              "normal_id_00_00000000.wav"])) == ["target", "source", ""]
    table = {"path": np.array(["section_00_source_train_normal_0000.wav", "section_00_target_train_normal_0000.wav",
                               "section_00_source_train_normal_0001.wav", "x/section_00_target_train_normal_1.wav"])}
    banks = domain_banks(table, np.array([0, 1, 2, 3]))
    assert [b.tolist() for b in banks] == [[0, 2], [1, 3]]
    assert [b.tolist() for b in domain_banks(table, np.array([0, 1, 2, 3]), exclude=1)] == [[0, 2], [3]]
    # One target clip left out: one bank (the unit's other clips); 2020 names: one bank.
    assert [b.tolist() for b in domain_banks(table, np.array([0, 1, 2]), exclude=1)] == [[0, 2]]
    assert [b.tolist() for b in domain_banks({"path": np.array(["normal_id_00_0.wav"] * 3)}, np.arange(3))] == [
        [0, 1, 2]]


def _nn(ref: np.ndarray, q: np.ndarray, k: int, metric: str) -> float:
    nn = NearestNeighbors(n_neighbors=min(k, len(ref)), metric=metric).fit(ref.astype(np.float64))
    return float(nn.kneighbors(q[None].astype(np.float64))[0].mean())


@pytest.mark.parametrize("k", [1, 3])
def test_knn_is_the_minimum_over_domain_banks(tmp_path, k):
    rng = np.random.default_rng(k)
    tables = _tables(rng)
    z = tables["pretrain"]["z"]
    src, tgt = np.arange(N_SOURCE), np.arange(N_SOURCE, N_SOURCE + N_TARGET)
    knn = KnnScorer(ScoreConfig(knn_k=k, knn_space="pretrain"), tmp_path, spaces=["pretrain"])
    knn.fit(NormalSet(tables))
    q = (rng.normal(size=(5, D)) + np.array([0, 3, 0, 3, 1.5])[:, None]).astype(np.float32)
    got = knn.score(Clips(torch.zeros(5, 1, 1), ["fan"] * 5, ["00"] * 5, None, lambda name: q))
    for n in range(5):
        assert got[n] == pytest.approx(min(_nn(z[src], q[n], k, "cosine"), _nn(z[tgt], q[n], k, "cosine")), abs=1e-6)
    # Held-out training scores: each clip leaves its own domain bank.
    train = Clips(torch.zeros(len(z), 1, 1), tables["pretrain"]["machine_type"], tables["pretrain"]["machine_id"],
                  tables["pretrain"]["path"], lambda name: z)
    held = knn.score(train)
    for n in range(len(z)):
        s_rows, t_rows = src[src != n], tgt[tgt != n]
        assert held[n] == pytest.approx(min(_nn(z[s_rows], z[n], k, "cosine"), _nn(z[t_rows], z[n], k, "cosine")),
                                        abs=1e-6)
    # score.domain_banks=false pools the domains (the plain per-unit kNN).
    pooled = KnnScorer(ScoreConfig(knn_k=k, knn_space="pretrain", domain_banks=False), tmp_path, spaces=["pretrain"])
    pooled.fit(NormalSet(tables))
    got = pooled.score(Clips(torch.zeros(5, 1, 1), ["fan"] * 5, ["00"] * 5, None, lambda name: q))
    assert got == pytest.approx([_nn(z, q[n], k, "cosine") for n in range(5)], abs=1e-6)


def _joint(tables: dict, q: np.ndarray, qs: np.ndarray, weight: float) -> tuple[np.ndarray, np.ndarray]:
    cs = tables["clipstats"]["z"].astype(np.float64)
    mu, sd = cs.mean(0), cs.std(0)
    return (joint_features(q, qs, mu, sd, weight), joint_features(tables["pretrain"]["z"], cs, mu, sd, weight))


def test_knn_joint_and_maha_are_minimum_over_domains(tmp_path):
    rng = np.random.default_rng(7)
    tables = _tables(rng)
    q = (rng.normal(size=(4, D)) + np.array([0, 3, 3, 0])[:, None]).astype(np.float32)
    qs = (rng.normal(size=(4, 4)) + np.array([0, 3, 3, 0])[:, None]).astype(np.float32)
    feats = {"pretrain": q, "clipstats": qs}
    clips = Clips(torch.zeros(4, 1, 1), ["fan"] * 4, ["00"] * 4, None, lambda name: feats[name])
    src, tgt = np.arange(N_SOURCE), np.arange(N_SOURCE, N_SOURCE + N_TARGET)

    cfg = ScoreConfig(knn_k=2, knn_space="pretrain", joint_weight=1.0, maha_weight=4.0)
    joint = JointKnnScorer(cfg, tmp_path, spaces=["pretrain"])
    joint.fit(NormalSet(tables))
    qj, ref = _joint(tables, q, qs, 1.0)
    expected = [min(_nn(ref[src], qj[n], 2, "euclidean"), _nn(ref[tgt], qj[n], 2, "euclidean")) for n in range(4)]
    assert joint.score(clips) == pytest.approx(expected, rel=1e-6)

    maha = MahaScorer(cfg, tmp_path, spaces=["pretrain"])
    maha.fit(NormalSet(tables))
    qm, ref = _joint(tables, q, qs, 4.0)

    def dist(rows: np.ndarray, v: np.ndarray, cov_rows: list[np.ndarray] | None = None) -> float:
        # Mean of ``rows``; covariance: sklearn's Ledoit-Wolf of the deviations of each ``cov_rows`` group
        # from its own mean (default: ``rows`` themselves).
        groups = cov_rows or [rows]
        lw = LedoitWolf().fit(np.concatenate([ref[g] - ref[g].mean(0) for g in groups]))
        d = v - ref[rows].mean(0)
        return float(np.sqrt(d @ np.linalg.inv(lw.covariance_) @ d))

    got = maha.score(clips)
    assert got == pytest.approx([min(dist(src, qm[n], [src, tgt]), dist(tgt, qm[n], [src, tgt]))
                                 for n in range(4)], rel=1e-5)
    pooled = MahaScorer(ScoreConfig(knn_space="pretrain", maha_weight=4.0, domain_banks=False), tmp_path,
                        spaces=["pretrain"])
    pooled.fit(NormalSet(tables))
    all_rows = np.arange(N_SOURCE + N_TARGET)
    assert pooled.score(clips) == pytest.approx([dist(all_rows, qm[n]) for n in range(4)], rel=1e-5)


def test_stats_maha_is_the_minimum_over_domains(tmp_path):
    from rcmae.scorers import StatsMahaScorer

    rng = np.random.default_rng(11)
    tables = _tables(rng)
    band = {**tables["clipstats"], "z": (rng.normal(size=(N_SOURCE + N_TARGET, 5))
                                          + np.r_[np.zeros(N_SOURCE), np.full(N_TARGET, 4.0)][:, None])}
    q = rng.normal(size=(3, 5)) + np.array([0.0, 4.0, 2.0])[:, None]
    clips = Clips(torch.zeros(3, 1, 1), ["fan"] * 3, ["00"] * 3, None, lambda name: q)
    z = band["z"].astype(np.float64)
    mean, std = z.mean(0), z.std(0)
    ref, qs = (z - mean) / std, (q - mean) / std
    src, tgt = np.arange(N_SOURCE), np.arange(N_SOURCE, N_SOURCE + N_TARGET)
    # Independent reference: per-domain means, sklearn's Ledoit-Wolf of the within-domain deviations.
    lw = LedoitWolf().fit(np.concatenate([ref[g] - ref[g].mean(0) for g in (src, tgt)]))
    prec = np.linalg.inv(lw.covariance_)

    def dist(rows, v):
        d = v - ref[rows].mean(0)
        return float(np.sqrt(d @ prec @ d))

    sc = StatsMahaScorer(ScoreConfig(), tmp_path)
    sc.fit(NormalSet({"bandstats": band}))
    assert sc.score(clips) == pytest.approx([min(dist(src, v), dist(tgt, v)) for v in qs], rel=1e-6)
    pooled = StatsMahaScorer(ScoreConfig(domain_banks=False), tmp_path)
    pooled.fit(NormalSet({"bandstats": band}))
    lw_all = LedoitWolf().fit(ref)
    assert pooled.score(clips) == pytest.approx(np.sqrt(lw_all.mahalanobis(qs)), rel=1e-6)


@pytest.mark.parametrize("kind", ["pca", "maha"])
def test_frame_scorers_are_the_minimum_over_domain_means(tmp_path, kind):
    from rcmae.scorers import FrameGaussian, FrameScorer, context_frames
    from rcmae.scorers.frames import load_frame_models

    rng = np.random.default_rng(12)
    n_src, n_tgt, f, t = 6, 3, 3, 9
    shift = np.r_[np.zeros(n_src), np.full(n_tgt, 2.5)][:, None, None]
    x = torch.from_numpy((rng.normal(size=(n_src + n_tgt, f, t)) + shift).astype(np.float32))
    paths = [f"/d/fan/train/section_00_source_train_normal_{k:04d}.wav" for k in range(n_src)]
    paths += [f"/d/fan/train/section_00_target_train_normal_{k:04d}.wav" for k in range(n_tgt)]
    cfg = ScoreConfig(frame_components=2)
    sc = FrameScorer(cfg, tmp_path, kind)
    sc.fit(NormalSet(logmels=(x, ["fan"] * len(paths), ["00"] * len(paths), paths)))

    # Independent reference with numpy: per-domain frame means, the covariance of the frames around their own
    # domain's mean (population) plus the relative ridge, its eigenvectors; the score is the min over domains.
    frames = [context_frames(x[i].numpy()) for i in range(len(paths))]
    src, tgt = np.concatenate(frames[:n_src]), np.concatenate(frames[n_src:])
    within = np.concatenate([src - src.mean(0), tgt - tgt.mean(0)])
    cov = within.T @ within / len(within)
    val, vec = np.linalg.eigh(cov)
    val, vec = val[::-1], vec[:, ::-1]
    val = val + 1e-3 * val.mean()

    def one(fr, m):
        d = fr - m
        if kind == "maha":
            return float((((d @ vec) ** 2) / val).sum(1).mean())
        p = d @ vec[:, :2]
        return float(((d**2).sum(1) - (p**2).sum(1)).mean())

    q = torch.from_numpy((rng.normal(size=(2, f, t)) + np.array([0.0, 2.5])[:, None, None]).astype(np.float32))
    got = sc.score(Clips(q, ["fan"] * 2, ["00"] * 2, None, lambda name: None))
    want = [min(one(context_frames(q[n].numpy()), src.mean(0)), one(context_frames(q[n].numpy()), tgt.mean(0)))
            for n in range(2)]
    assert got == pytest.approx(want, rel=1e-6)
    # Saved with both means and read back (float32) to the same scores.
    saved = load_frame_models(tmp_path / "references" / "frames.npz")["fan/00"]
    assert saved.domain_means.shape == (2, 3 * 5)
    again = FrameScorer(cfg, tmp_path, kind)
    again.fit(NormalSet())
    assert again.score(Clips(q, ["fan"] * 2, ["00"] * 2, None, lambda name: None)) == pytest.approx(want, rel=1e-4)
    # score.domain_banks=false: one Gaussian of the pooled frames (the 2020 behaviour).
    pooled = FrameScorer(ScoreConfig(frame_components=2, domain_banks=False), tmp_path / "p", kind)
    pooled.fit(NormalSet(logmels=(x, ["fan"] * len(paths), ["00"] * len(paths), paths)))
    g = FrameGaussian().fit(np.concatenate(frames))
    want_pooled = [g.pca_residual(context_frames(q[n].numpy()), 2) if kind == "pca"
                   else g.maha(context_frames(q[n].numpy())) for n in range(2)]
    assert pooled.score(Clips(q, ["fan"] * 2, ["00"] * 2, None, lambda name: None)) == pytest.approx(want_pooled,
                                                                                                    rel=1e-6)
