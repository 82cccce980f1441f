"""Domain-shift scoring (rcmae/scorers/domains.py): per-domain reference sets, minimum over them, checked against
sklearn's nearest neighbours and Ledoit-Wolf Gaussians built independently."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.covariance import LedoitWolf
from sklearn.neighbors import NearestNeighbors

from rcmae.config import ScoreConfig
from rcmae.scorers import Clips, JointKnnScorer, KnnScorer, MahaScorer, NormalSet, joint_features
from rcmae.scorers.domains import domain_banks, path_domains

N_SOURCE, N_TARGET, D = 12, 4, 6


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
