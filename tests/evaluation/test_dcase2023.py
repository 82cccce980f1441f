"""A DCASE 2023-style set (sections, source/target domains, attributes) through pretrain -> finetune -> evaluate
and ``rcmae benchmark``; every scorer's CSVs re-scored the way the official 2023 evaluator scores them."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from evaluator_reference import _evaluator_2023

from rcmae.data.index import index_dataset
from rcmae.evaluation.baselines import run_baseline
from rcmae.evaluation.benchmark import run_benchmark
from rcmae.evaluation.evaluate import evaluate_run
from rcmae.training import stages as train

# A 1-block model on 1-second clips: seconds per stage.
SHORT = [
    "model.embed_dim=32", "model.depth=1", "model.heads=2", "model.decoder_embed_dim=32", "model.decoder_depth=1",
    "model.decoder_heads=2", "model.proj_dim=32", "model.mlp_ratio=2.0", "pretrain.batch_size=8",
    "finetune.batch_size=8", "score.recon_masks=2", "pretrain.crop_frames=null", "pretrain.crops_per_clip=1",
    "data.duration=1.0", "model.n_frames=32", "pretrain.specaugment.time_width=8",
]


@pytest.fixture(scope="module")
def run23(tiny_dcase2023, tmp_path_factory):
    run = tmp_path_factory.mktemp("run23") / "run"
    train.pretrain(tiny_dcase2023, run, epochs=1, overrides=SHORT, progress=False)
    train.finetune(run, epochs=1, progress=False)
    return run, evaluate_run(run, progress=False)


def _ground_truth(data: Path, gt_root: Path) -> None:
    """The evaluator's three ground-truth folders for a labelled dev set (dev names stand as the clip names)."""
    index = index_dataset(data)
    test = index[index["split"] == "test"]
    for (mtype, section), group in test.groupby(["machine_type", "section"]):
        names = [Path(p).name for p in group["path"]]
        cols = {"data": [int(lab == "anomaly") for lab in group["label"]],
                "domain": [int(d == "target") for d in group["domain"]],
                "attributes": [Path(n).stem for n in names]}
        for kind, values in cols.items():
            path = gt_root / f"ground_truth_{kind}" / f"ground_truth_{mtype}_section_{section}_test.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", newline="") as f:
                csv.writer(f, lineterminator="\n").writerows(sorted(zip(names, values, strict=True)))


def test_every_scorer_agrees_with_the_reimplemented_2023_evaluator(run23, tiny_dcase2023, tmp_path):
    run, results = run23
    gt_root = tmp_path / "evaluator"
    _ground_truth(tiny_dcase2023, gt_root)
    thresholds = json.loads((run / "thresholds.json").read_text())["thresholds"]
    assert {"maha", "knn", "idprob"} <= set(results)
    for scorer, res in results.items():
        folder = run / "eval" / scorer
        ref = _evaluator_2023(folder, gt_root)
        assert [(r["machine_type"], r["section"]) for r in res["per_section"]] == [("fan", "00"), ("gearbox", "00")]
        for ours, theirs in zip(res["per_section"], ref["per_section"], strict=True):
            for key, value in theirs.items():
                if isinstance(value, float):
                    assert ours[key] == pytest.approx(value, abs=1e-9), (scorer, key)
        for key in ("score", "auc_amean", "amean", "hmean_source", "hmean_target"):
            assert res["official"][key] == pytest.approx(ref[key], abs=1e-9), (scorer, key)
        # One threshold per section decides both domains: the decision file is score > that threshold.
        for mtype in ("fan", "gearbox"):
            with open(folder / f"anomaly_score_{mtype}_section_00_test.csv") as f:
                scores = dict(csv.reader(f))
            with open(folder / f"decision_result_{mtype}_section_00_test.csv") as f:
                decisions = dict(csv.reader(f))
            thr = thresholds[scorer][f"{mtype}/00"]
            assert len(scores) == 12 and all(int(decisions[n]) == int(float(s) > thr) for n, s in scores.items())
    # results.json (the default scorer) carries the same numbers, and the 2020 keys are still there.
    saved = json.loads((run / "eval" / "results.json").read_text())
    assert saved["official"] == results[saved["system"].split("-", 1)[1]]["official"]
    assert {"per_id", "per_type", "average", "per_section", "dcase2021"} <= set(saved)


def test_target_clips_are_training_data_and_the_index_counts_domains(run23, tiny_dcase2023):
    run, _ = run23
    emb = np.load(run / "embeddings" / "finetune.npz")
    train_paths = emb["path"][emb["split"] == "train"]
    assert sum("_target_train_" in p for p in train_paths) == 4  # 2 target clips x 2 types
    assert sum("_source_train_" in p for p in train_paths) == 20


def test_benchmark_reports_the_official_score_formula_recomputed_here(tiny_dcase2023, tmp_path):
    out = tmp_path / "bench"
    run_benchmark(tiny_dcase2023, out, ["rcmae-nodda"], preset="tiny",
                  overrides=[*SHORT, "pretrain.epochs=1", "finetune.epochs=1"], progress=False)
    report = json.loads((out / "benchmark.json").read_text())
    rows = {r["row"]: r for r in report["rows"]}
    maha = json.loads((out / "systems/rcmae-nodda/seed0/run/eval/results.maha.json").read_text())
    row = rows["rcmae-nodda:maha"]
    assert row["official"]["score"]["mean"] == pytest.approx(maha["official"]["score"])
    assert row["official"]["hmean_target"]["mean"] == pytest.approx(maha["official"]["hmean_target"])
    assert row["domain_per_type"]["fan"]["auc_source"]["mean"] == pytest.approx(
        maha["domain_per_type"]["fan"]["auc_source"])
    table = (out / "table.md").read_text()
    assert "DCASE 2021-2025 protocol" in table and "official score" in table
    line = next(ln for ln in table.splitlines() if ln.startswith("| rcmae-nodda:maha |") and "±" not in ln
                and ln.count("|") == 2 + 3 * 2 + 5)
    assert f"{maha['official']['score'] * 100:.2f}" in line


def test_baseline_results_carry_domains(tiny_dcase2023, tmp_path):
    res = run_baseline("knn", tiny_dcase2023, tmp_path / "knn", progress=False)
    assert [(r["machine_type"], r["n_source_normal"], r["n_target_normal"]) for r in res["per_section"]] == [
        ("fan", 3, 3), ("gearbox", 3, 3)]
    ref = _evaluator_auc_only(tmp_path / "knn", tiny_dcase2023)
    assert res["official"]["score"] == pytest.approx(ref, abs=1e-9)
    assert sorted(p.name for p in (tmp_path / "knn").glob("anomaly_score_*")) == [
        "anomaly_score_fan_section_00_test.csv", "anomaly_score_gearbox_section_00_test.csv"]


def _evaluator_auc_only(folder: Path, data: Path) -> float:
    """The official score from the score CSVs alone (no decisions): floored hmean of AUC(s), AUC(t), pAUC."""
    from scipy.stats import hmean
    from sklearn.metrics import roc_auc_score

    terms = {"s": [], "t": [], "p": []}
    for mtype in ("fan", "gearbox"):
        with open(folder / f"anomaly_score_{mtype}_section_00_test.csv") as f:
            rows = sorted(csv.reader(f))
        y = np.array(["_anomaly_" in n for n, _ in rows], dtype=int)
        s = np.array([float(v) for _, v in rows])
        dom = np.array(["_target_" in n for n, _ in rows], dtype=int)
        terms["s"].append(roc_auc_score(y[(dom == 0) | (y == 1)], s[(dom == 0) | (y == 1)]))
        terms["t"].append(roc_auc_score(y[(dom == 1) | (y == 1)], s[(dom == 1) | (y == 1)]))
        terms["p"].append(roc_auc_score(y, s, max_fpr=0.1))
    return float(hmean(np.maximum(terms["s"] + terms["t"] + terms["p"], np.finfo(float).eps)))


def test_unlabelled_eval_set_gets_submission_files_then_ground_truth_scores_it(run23, tiny_dcase2023, tmp_path):
    from evaluator_reference import _eval_style_copy

    run = tmp_path / "run"
    shutil.copytree(run23[0], run)
    data, gt_root = tmp_path / "eval", tmp_path / "evaluator"
    _eval_style_copy(tiny_dcase2023, data, gt_root, seed=9)
    # Without ground truth: bare names, nothing to measure, but every clip is scored and decided.
    results = evaluate_run(run, data=data, scorer="maha", progress=False)
    assert results["maha"]["average"]["auc"] is None and "official" not in results["maha"]
    folder = run / "eval" / "maha"
    for kind in ("anomaly_score", "decision_result"):
        with open(folder / f"{kind}_fan_section_00_test.csv") as f:
            names = [r[0] for r in csv.reader(f)]
        assert names == [f"section_00_{n:04d}.wav" for n in range(12)]
    # With the evaluator's ground-truth folders under the data folder, the same clips are measured, and the
    # evaluator's computation on these files agrees with results.json.
    shutil.copytree(gt_root, data / "evaluator")
    results = evaluate_run(run, data=data, scorer="maha", progress=False)
    ref = _evaluator_2023(folder, gt_root)
    assert results["maha"]["official"]["score"] == pytest.approx(ref["score"], abs=1e-9)
    for ours, theirs in zip(results["maha"]["per_section"], ref["per_section"], strict=True):
        assert ours["auc_target"] == pytest.approx(theirs["auc_target"], abs=1e-9)
        assert ours["f1_source"] == pytest.approx(theirs["f1_source"], abs=1e-9)
