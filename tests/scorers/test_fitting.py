"""Fitting scorers once and fast: the Woodbury Ledoit-Wolf Gaussian against sklearn, held-out stats_maha scores
against a leave-one-out loop over sklearn, per-scorer stamps (nothing refitted that did not change), and the
training-free run (`rcmae fit`) against the same scorers of a trained run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import SHORT_OVERRIDES
from sklearn.covariance import LedoitWolf

from rcmae.evaluation.evaluate import evaluate_run
from rcmae.scorers.detector import Detector
from rcmae.scorers.fitting import TRAINING_FREE
from rcmae.scorers.maha import ShrunkGaussian, domain_shrunk_gaussians, unit_mahalanobis
from rcmae.scorers.training_free import fit_training_free

pytestmark = pytest.mark.numeric


def _sklearn_distances(z: np.ndarray, q: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    est = LedoitWolf().fit(z)
    d = q - (est.location_ if mean is None else mean)
    return np.sqrt(np.einsum("ij,jk,ik->i", d, np.linalg.inv(est.covariance_), d))


@pytest.mark.parametrize("n,dim", [(5, 40), (30, 768), (12, 12), (60, 20), (4, 7)])
def test_shrunk_gaussian_equals_sklearn_ledoit_wolf(n, dim):
    rng = np.random.default_rng(n * 1000 + dim)
    z = rng.normal(size=(n, dim)) * rng.uniform(0.1, 3.0, size=dim) + rng.normal(size=dim)
    q = rng.normal(size=(9, dim)) * 2.0
    ref = _sklearn_distances(z, q)
    got = ShrunkGaussian(z).distances(q)
    assert np.max(np.abs(got - ref)) <= 1e-9 * np.max(ref)


def test_domain_gaussians_share_the_within_domain_covariance():
    rng = np.random.default_rng(3)
    z = np.concatenate([rng.normal(size=(20, 50)), rng.normal(size=(4, 50)) + 3.0])
    banks = [np.arange(20), np.arange(20, 24)]
    within = np.concatenate([z[b] - z[b].mean(0) for b in banks])
    q = rng.normal(size=(6, 50)) + 1.0
    for (mean, g), b in zip(domain_shrunk_gaussians(z, banks), banks, strict=True):
        ref = _sklearn_distances(within, q, mean=z[b].mean(0))
        assert np.max(np.abs(g.distances(q, mean) - ref)) <= 1e-9 * np.max(ref)


@pytest.mark.parametrize("by_domain", [False, True])
def test_unit_mahalanobis_leaves_each_clip_out_of_its_own_gaussian(by_domain):
    # One unit of 12 clips (DCASE 2020 names: one domain) and one of 9; each clip's held-out distance against a
    # loop over sklearn's Ledoit-Wolf fitted on the unit's other clips. In-sample models would differ.
    rng = np.random.default_rng(11)
    z = np.concatenate([rng.normal(size=(12, 30)), rng.normal(size=(9, 30)) * 2.0 + 1.0])
    table = {"path": np.array([f"normal_id_0{u}_{k:08d}.wav" for u, n in ((0, 12), (2, 9)) for k in range(n)])}
    units = [np.arange(12), np.arange(12, 21)]
    rows = [units[0]] * 12 + [units[1]] * 9
    exclude = [k for k in range(12)] + [k for k in range(9)]
    got = unit_mahalanobis(z, z, table, rows, exclude, by_domain, {}, ("t",))
    ref = [_sklearn_distances(np.delete(z[r], e, axis=0), z[i : i + 1])[0]
           for i, (r, e) in enumerate(zip(rows, exclude, strict=True))]
    assert np.max(np.abs(got - ref)) <= 1e-9 * np.max(ref)


def test_identical_training_clips_are_refused_with_one_line():
    from rcmae.scorers.base import ScoringError

    for z in (np.ones((3, 8)), np.ones((10, 4))):  # the shrunk (n < D) and the dense (n >= D) paths
        with pytest.raises(ScoringError, match="are all identical, so no covariance can be fitted"):
            ShrunkGaussian(z)


@pytest.fixture(scope="module")
def free_run(short_run, tmp_path_factory):
    data, _ = short_run
    return fit_training_free(data, tmp_path_factory.mktemp("free") / "run", overrides=SHORT_OVERRIDES,
                             progress=False)


def test_held_out_stats_maha_scores_equal_a_leave_one_out_loop(free_run):
    # Each training clip's threshold score comes from a Gaussian of the *other* clips of its unit (held out).
    with np.load(free_run / "references" / "bandstats.npz") as npz:
        z = npz["z"].astype(np.float64)
        paths, types, ids = npz["path"].astype(str), npz["machine_type"].astype(str), npz["machine_id"].astype(str)
    z = (z - z.mean(0)) / np.maximum(z.std(0), 1e-6)  # StatsMahaScorer's standardisation over all clips
    train = pd.read_csv(free_run / "train_scores.csv", dtype={"machine_id": str})
    got = train[train["scorer"] == "stats_maha"].set_index("path")["score"]
    expected = {}
    for unit in sorted(set(zip(types, ids, strict=True))):
        rows = np.flatnonzero((types == unit[0]) & (ids == unit[1]))
        for r in rows:
            others = rows[rows != r]
            expected[paths[r]] = _sklearn_distances(z[others], z[r : r + 1])[0]
    ref = pd.Series(expected)
    assert len(got) == len(ref) == len(z)
    assert np.max(np.abs(got[ref.index].to_numpy() - ref.to_numpy())) <= 1e-4 * ref.abs().max()
    # In-sample scores (each clip inside its own Gaussian) are smaller: the test would catch that mistake.
    in_sample = np.array([_sklearn_distances(z[(types == types[r]) & (ids == ids[r])], z[r : r + 1])[0]
                          for r in range(len(z))])
    assert np.all(in_sample < ref[paths].to_numpy())


def test_training_free_run_scores_like_the_same_scorers_of_a_trained_run(short_run, free_run, tmp_path):
    _, trained = short_run
    run = tmp_path / "trained"
    shutil.copytree(trained, run)
    det = Detector.load(free_run)
    assert det.models == {} and det.default_scorer == "ensemble"
    assert set(det.scorers) == {*TRAINING_FREE, "ensemble"}
    assert json.loads((free_run / "run.json").read_text())["training_free"] is True
    for scorer in ("stats_maha", "frame_pca", "ensemble"):
        a = evaluate_run(free_run, scorer=scorer, progress=False)[scorer]
        b = evaluate_run(run, scorer=scorer, progress=False)[scorer]
        assert a["average"]["auc"] == pytest.approx(b["average"]["auc"], abs=1e-12)
        sa = pd.read_csv(free_run / "eval" / "scores.csv").set_index("path")[f"score_{scorer}"]
        sb = pd.read_csv(run / "eval" / "scores.csv").set_index("path")[f"score_{scorer}"]
        assert np.max(np.abs(sa - sb[sa.index])) <= 1e-6 * sb.abs().max()
    with pytest.raises(Exception, match="training-free run"):
        det._scorer("knn")


def test_a_current_scorer_is_not_refitted_and_a_changed_setting_refits(free_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(free_run, run)
    before = json.loads((run / "thresholds.json").read_text())
    mtime = (run / "thresholds.json").stat().st_mtime_ns
    Detector.load(run).ensure_fitted(TRAINING_FREE)
    assert (run / "thresholds.json").stat().st_mtime_ns == mtime  # nothing was stale: nothing written
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["score"]["threshold_q"] = 0.5
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    det = Detector.load(run)  # the score settings changed: the default (ensemble and members) is refitted
    after = json.loads((run / "thresholds.json").read_text())
    assert after["q"] == 0.5 and after["fitted"]["stats_maha"] != before["fitted"]["stats_maha"]
    unit = "fan/00"
    assert after["thresholds"]["stats_maha"][unit] < before["thresholds"]["stats_maha"][unit]
    assert det.threshold("stats_maha", "fan", "00") == after["thresholds"]["stats_maha"][unit]
    # Scorers outside the default keep their old fit until they are used.
    assert after["fitted"]["frame_maha"] == before["fitted"]["frame_maha"]


def test_finetuning_refits_network_scorers_only(short_run, tmp_path):
    from rcmae.training import stages

    data, _ = short_run
    run = tmp_path / "run"
    stages.pretrain(data, run, epochs=1, overrides=[*SHORT_OVERRIDES, "score.knn_space=finetune"], progress=False)
    det = Detector.load(run)  # fits the default: the training-free ensemble
    det.ensure_fitted(["knn"])  # knn on the pretrained encoder (no fine-tuned one yet)
    first = json.loads((run / "thresholds.json").read_text())
    rows = pd.read_csv(run / "train_scores.csv", dtype={"machine_id": str})
    stages.finetune(run, epochs=1, progress=False)
    det = Detector.load(run)  # the default is training-free: still current, nothing refitted
    assert json.loads((run / "thresholds.json").read_text())["fitted"] == first["fitted"]
    det.ensure_fitted(["knn"])  # knn's network changed: refitted, the training-free scorers kept
    second = json.loads((run / "thresholds.json").read_text())
    assert second["fitted"]["knn"] != first["fitted"]["knn"]
    for name in ("stats_maha", "frame_pca", "ensemble"):
        assert second["fitted"][name] == first["fitted"][name]
        assert second["thresholds"][name] == first["thresholds"][name]
    kept = pd.read_csv(run / "train_scores.csv", dtype={"machine_id": str})
    old = rows[rows["scorer"] == "stats_maha"].reset_index(drop=True)
    assert kept[kept["scorer"] == "stats_maha"].reset_index(drop=True).equals(old)


def test_a_training_free_run_exports_and_its_bundle_scores_like_the_detector(short_run, free_run, tmp_path):
    from conftest import assert_close_on_scale

    from rcmae.data.audio import load_audio
    from rcmae.deploy.bundle import Bundle
    from rcmae.deploy.export import export_run

    data, _ = short_run
    bundle = Bundle(export_run(free_run, tmp_path / "bundle", examples=1), trust=True)
    det = Detector.load(free_run)
    assert bundle.scorer == det.default_scorer == "ensemble"
    clips = sorted((data / "dev_data" / "fan" / "test").glob("*.wav"))
    refs = [det.score(c) for c in clips]
    got = [bundle.score(load_audio(c, duration=1.0), r["machine_type"], r["machine_id"]) for c, r in zip(clips, refs,
                                                                                                          strict=True)]
    assert_close_on_scale([g["score"] for g in got], [r["score"] for r in refs])
    # Its embedding is the clip's band statistics: an example clip is its own nearest example.
    ex = bundle.examples[0]
    out = bundle.score(load_audio(bundle.path / ex["file"], duration=1.0), ex["machine_type"], ex["machine_id"])
    near = bundle.nearest_examples(out["embedding"], ex["machine_type"], ex["machine_id"], k=1)[0]
    assert near["file"] == ex["file"] and near["distance"] < 1e-6


def test_fit_again_into_its_own_run_keeps_the_fit_and_refuses_trained_folders(short_run, free_run, tmp_path, capsys):
    from rcmae.run.folder import RunFolderError, current_git_commit

    data, trained = short_run
    run = tmp_path / "free"
    shutil.copytree(free_run, run)
    before = json.loads((run / "thresholds.json").read_text())
    capsys.readouterr()
    # `rcmae fit` again on its own run folder: allowed (same data: nothing is stale, the fit is kept).
    assert fit_training_free(data, run, overrides=SHORT_OVERRIDES, progress=False) == run
    out, err = capsys.readouterr()
    assert out == ""  # messages go to stderr: stdout stays free for a command's own output
    n_train = json.loads((run / "run.json").read_text())["n_train"]
    assert f"{n_train} training clips" in err
    info = json.loads((run / "run.json").read_text())
    assert info["training_free"] is True and info["git_commit"] == current_git_commit()
    assert json.loads((run / "thresholds.json").read_text())["fitted"] == before["fitted"]
    # A trained run, or a folder holding a trained run's checkpoints, is refused with one line; nothing written.
    with pytest.raises(RunFolderError, match="already holds a trained run"):
        fit_training_free(data, trained, overrides=SHORT_OVERRIDES, progress=False)
    ckpts = tmp_path / "ckpts"
    (ckpts / "checkpoints").mkdir(parents=True)
    (ckpts / "checkpoints" / "pretrain.ckpt").write_bytes(b"")
    with pytest.raises(RunFolderError, match="holds checkpoints of a trained run"):
        fit_training_free(data, ckpts, overrides=SHORT_OVERRIDES, progress=False)
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoints"]


def test_fitting_reports_scorer_k_of_n_from_zero_to_done(free_run, tmp_path, monkeypatch):
    from rcmae.scorers import fitting

    run = tmp_path / "run"
    shutil.copytree(free_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["score"]["threshold_q"] = 0.8  # the default's three fits are stale
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    calls = []
    real = fitting.update_progress
    monkeypatch.setattr(fitting, "update_progress", lambda r, **kw: (calls.append(kw), real(r, **kw)))
    Detector.load(run)
    steps = [(c["state"], c["fit_step"], c["fit_steps"], c["scorer"]) for c in calls]
    todo = [s for s in Detector.load(run, fit=False).scorers if s in ("stats_maha", "frame_pca", "ensemble")]
    n = len(todo)
    assert n == 3
    assert steps == [("fitting", 0, n, "loading the training clips"),
                     *[("fitting", k, n, s) for k, s in enumerate(todo)], ("done", n, n, "")]
    progress = json.loads((run / "progress.json").read_text())
    assert (progress["fit_step"], progress["fit_steps"], progress["state"]) == (n, n, "done")


def test_space_stamp_is_the_stage_that_trained_the_space():
    from rcmae.scorers.fitting import space_stamp

    info = {"stages": {"pretrain": {"finished": "t1"}, "finetune": {"skipped": "t2"}}}
    assert (space_stamp(info, "pretrain"), space_stamp(info, "finetune")) == ("t1", "t2")
    assert space_stamp({"family": "margin", "stages": {"pretrain": {"finished": "t3"}}}, "finetune") == "t3"
    assert space_stamp({}, "pretrain") is None  # a run.json without stages (training-free, or written before them)
    assert space_stamp({"stages": {}}, "finetune") is None
