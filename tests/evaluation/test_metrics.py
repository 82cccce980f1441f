"""rcmae.evaluation.metrics against sklearn, brute-force pair counts and hand-computed tables."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pandas as pd
import pytest
from evaluator_reference import _eval_style_copy, _evaluator_2023
from scipy.stats import hmean
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

from rcmae.evaluation.metrics import auc_pauc, decision_metrics, evaluate_scores, load_results, write_results

pytestmark = pytest.mark.numeric


def _pair_count_auc(y, s):
    """P(score_anomaly > score_normal) + 0.5 P(tie), by looping over every pair."""
    pos = [v for v, t in zip(s, y, strict=False) if t == 1]
    neg = [v for v, t in zip(s, y, strict=False) if t == 0]
    total = 0.0
    for p in pos:
        for n in neg:
            total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(pos) * len(neg))


def _raw_partial_area(y, s, max_fpr):
    """Area under the step-free ROC up to max_fpr, built point by point with a loop over thresholds."""
    thresholds = sorted(set(s), reverse=True)
    P, N = sum(y), len(y) - sum(y)
    pts = [(0.0, 0.0)]
    for th in thresholds:
        tp = sum(1 for v, t in zip(s, y, strict=False) if v >= th and t == 1)
        fp = sum(1 for v, t in zip(s, y, strict=False) if v >= th and t == 0)
        pts.append((fp / N, tp / P))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if x0 >= max_fpr:
            break
        if x1 > max_fpr:  # cut the segment at max_fpr
            y1 = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            x1 = max_fpr
        area += (x1 - x0) * (y0 + y1) / 2
    return area


@pytest.mark.parametrize("seed", range(5))
def test_auc_pauc_against_sklearn_and_pair_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 60
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    s = np.round(rng.normal(size=n) + 0.8 * y, 1)  # rounding makes ties
    assert len(set(s)) < n
    auc, pauc = auc_pauc(y, s)
    assert auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auc == pytest.approx(_pair_count_auc(y, s), abs=1e-12)
    assert pauc == pytest.approx(roc_auc_score(y, s, max_fpr=0.1), abs=1e-12)

    _, raw = auc_pauc(y, s, standardized=False)
    area = _raw_partial_area(list(y), list(s), 0.1)
    assert raw == pytest.approx(area / 0.1, abs=1e-12)
    p = 0.1  # McClish: standardized = 0.5 * (1 + (A - p^2/2) / (p - p^2/2))
    assert pauc == pytest.approx(0.5 * (1 + (area - p * p / 2) / (p - p * p / 2)), abs=1e-12)


def test_hand_computed_cases():
    # Perfect separation: AUC 1, pAUC 1 in both conventions; inverted: 0 and the standardized floor.
    y = [0, 0, 1, 1]
    assert auc_pauc(y, [0.1, 0.2, 0.8, 0.9]) == (1.0, 1.0)
    assert auc_pauc(y, [0.1, 0.2, 0.8, 0.9], standardized=False) == (1.0, 1.0)
    auc, pauc = auc_pauc(y, [0.9, 0.8, 0.2, 0.1])
    assert auc == 0.0 and pauc == pytest.approx(0.5 * (1 + (0 - 0.005) / (0.1 - 0.005)))
    # All tied: the ROC is the diagonal; raw pAUC = (0.1^2 / 2) / 0.1 = 0.05, standardized = 0.5.
    auc, pauc = auc_pauc(y, [1, 1, 1, 1])
    assert auc == 0.5 and pauc == pytest.approx(0.5)
    assert auc_pauc(y, [1, 1, 1, 1], standardized=False)[1] == pytest.approx(0.05)


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match="both normal"):
        auc_pauc([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        auc_pauc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="same length"):
        auc_pauc([0, 1, 1], [0.1, 0.2])


def _table():
    rows = []
    # fan id 00: normal 1,2 anomaly 3,4 -> AUC 1; fan id 02: normal 1,4 anomaly 2,3 -> AUC 0.5
    for mid, normal, anomaly in (("00", [1, 2], [3, 4]), ("02", [1, 4], [2, 3])):
        for i, v in enumerate(normal):
            rows.append(("fan", mid, "normal", f"/d/fan/test/normal_id_{mid}_{i:08d}.wav", v))
        for i, v in enumerate(anomaly):
            rows.append(("fan", mid, "anomaly", f"/d/fan/test/anomaly_id_{mid}_{i:08d}.wav", v))
    # valve id 00: normal 1,3 anomaly 2,4 -> pairs (2>1),(2<3),(4>1),(4>3) = 3/4
    for i, v in enumerate([1, 3]):
        rows.append(("valve", "00", "normal", f"/d/valve/test/normal_id_00_{i:08d}.wav", v))
    for i, v in enumerate([2, 4]):
        rows.append(("valve", "00", "anomaly", f"/d/valve/test/anomaly_id_00_{i:08d}.wav", v))
    rows.append(("valve", "00", "unknown", "/d/valve/test/id_00_00000000.wav", 9.0))
    return pd.DataFrame(rows, columns=["machine_type", "machine_id", "label", "path", "score"])


def test_evaluate_scores_hand_computed_table():
    table = _table()
    res = evaluate_scores(table, system="demo", data="/d")
    by_id = {(r["machine_type"], r["machine_id"]): r for r in res["per_id"]}
    assert by_id[("fan", "00")]["auc"] == 1.0
    assert by_id[("fan", "02")]["auc"] == 0.5
    assert by_id[("valve", "00")]["auc"] == 0.75
    assert by_id[("valve", "00")]["n_normal"] == 2 and by_id[("valve", "00")]["n_anomaly"] == 2  # unknown ignored
    for r in res["per_id"]:
        g = table[(table.machine_type == r["machine_type"]) & (table.machine_id == r["machine_id"])
                  & (table.label != "unknown")]
        y = (g.label == "anomaly").astype(int)
        assert r["pauc"] == pytest.approx(roc_auc_score(y, g.score, max_fpr=0.1))
    fan = res["per_type"]["fan"]
    assert fan["auc"] == pytest.approx(0.75)
    assert fan["auc_hmean"] == pytest.approx(hmean([1.0, 0.5]))
    assert fan["pauc_hmean"] == pytest.approx(hmean([by_id[("fan", "00")]["pauc"], by_id[("fan", "02")]["pauc"]]))
    assert res["average"]["auc"] == pytest.approx((0.75 + 0.75) / 2)
    assert res["average"]["pauc"] == pytest.approx(np.mean([res["per_type"][t]["pauc"] for t in ("fan", "valve")]))


def test_write_results_challenge_files(tmp_path):
    table = _table()
    res = evaluate_scores(table, system="demo", data="/d")
    write_results(res, table, tmp_path)
    assert load_results(tmp_path) == json.loads((tmp_path / "results.json").read_text()) == res

    with open(tmp_path / "anomaly_score_fan_id_02.csv", newline="") as f:
        rows = list(csv.reader(f))
    # normals first, then anomalies, each sorted; file names only; no header
    assert rows == [["normal_id_02_00000000.wav", "1.0"], ["normal_id_02_00000001.wav", "4.0"],
                    ["anomaly_id_02_00000000.wav", "2.0"], ["anomaly_id_02_00000001.wav", "3.0"]]
    valve = (tmp_path / "anomaly_score_valve_id_00.csv").read_text().splitlines()
    assert valve[-1] == "id_00_00000000.wav,9.0"  # unlabelled clips are still scored

    lines = (tmp_path / "result.csv").read_text().split("\n")
    fan_pauc = [r["pauc"] for r in res["per_id"] if r["machine_type"] == "fan"]
    assert lines[:6] == ["fan", "id,AUC,pAUC", f"00,1.0,{fan_pauc[0]!r}", f"02,0.5,{fan_pauc[1]!r}",
                         f"Average,0.75,{res['per_type']['fan']['pauc']!r}", ""]
    assert lines[6:8] == ["valve", "id,AUC,pAUC"]
    assert (tmp_path / "result.csv").read_text().endswith("\n\n")


def test_single_class_id_is_reported_not_fatal():
    table = _table()
    table = table[~((table.machine_type == "valve") & (table.label == "anomaly"))]
    res = evaluate_scores(table, system="demo", data="/d")
    assert "valve" not in res["per_type"]
    assert res["skipped_ids"] == [{"machine_type": "valve", "machine_id": "00",
                                   "reason": "needs normal and anomalous clips"}]


def test_load_results_rejects_other_json(tmp_path):
    (tmp_path / "results.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="not an rcmae results file"):
        load_results(tmp_path)


# ---------------------------------------------------------------- DCASE 2021-2025 (domains, official score)
def test_reimplemented_2023_evaluator_reads_our_csvs_and_agrees(tiny_dcase2023, tmp_path):
    from rcmae.data.index import index_dataset

    gt_root = tmp_path / "evaluator"
    _eval_style_copy(tiny_dcase2023, tmp_path / "eval", gt_root, seed=4)
    index = index_dataset(tmp_path / "eval", ground_truth=gt_root)
    test = index[index["split"] == "test"].reset_index(drop=True)
    assert set(test["label"]) == {"normal", "anomaly"} and set(test["domain"]) == {"source", "target"}
    rng = np.random.default_rng(5)
    y = (test["label"] == "anomaly").to_numpy()
    # Scores that separate source better than target, with some overlap; decisions from one threshold.
    scores = rng.normal(size=len(test)) + 1.5 * y - 0.8 * y * (test["domain"] == "target").to_numpy()
    table = test.assign(score=scores, decision=np.where(scores > 0.7, "anomaly", "normal"))
    res = evaluate_scores(table, system="t", data="d")
    team = tmp_path / "teams" / "rcmae"
    write_results(res, table, team)
    names = sorted(p.name for p in team.glob("*_test.csv"))
    assert names == [f"{k}_{t}_section_00_test.csv" for k in ("anomaly_score", "decision_result")
                     for t in ("fan", "gearbox")]
    ref = _evaluator_2023(team, gt_root)
    saved = json.loads((team / "results.json").read_text())
    assert len(saved["per_section"]) == len(ref["per_section"]) == 2
    for ours, theirs in zip(saved["per_section"], ref["per_section"], strict=True):
        for key, value in theirs.items():
            assert ours[key] == pytest.approx(value, abs=1e-9) if isinstance(value, float) else ours[key] == value
    for key in ("score", "auc_amean", "amean", "hmean_source", "hmean_target"):
        assert saved["official"][key] == pytest.approx(ref[key], abs=1e-9), key
    # The 2020 keys are still there: per_id holds one row per section, its AUC is the all-clips AUC.
    assert [r["auc"] for r in saved["per_id"]] == pytest.approx([r["auc_all"] for r in ref["per_section"]])


def _domain_table():
    """One section, hand-made: source normals 1, 2; target normals 3, 6; source anomaly 4; target anomaly 5."""
    rows = [("fan", "00", "source", "normal", 1.0, 0), ("fan", "00", "source", "normal", 2.0, 0),
            ("fan", "00", "target", "normal", 3.0, 0), ("fan", "00", "target", "normal", 6.0, 1),
            ("fan", "00", "source", "anomaly", 4.0, 1), ("fan", "00", "target", "anomaly", 5.0, 0)]
    return pd.DataFrame([(t, s, s, d, lab, f"/x/{t}/test/section_{s}_{d}_test_{lab}_{i:04d}.wav", v, dec)
                         for i, (t, s, d, lab, v, dec) in enumerate(rows)],
                        columns=["machine_type", "machine_id", "section", "domain", "label", "path", "score",
                                 "decision"])


def test_domain_metrics_hand_computed():
    res = evaluate_scores(_domain_table(), system="t", data="d")
    (row,) = res["per_section"]
    # AUC(source): normals {1, 2} vs all anomalies {4, 5}: every pair ordered -> 1.
    # AUC(target): normals {3, 6} vs {4, 5}: (4>3), (5>3), (4<6), (5<6) -> 1/2.
    assert row["auc_source"] == 1.0 and row["auc_target"] == 0.5
    assert row["pauc"] == pytest.approx(roc_auc_score([0, 0, 0, 0, 1, 1], [1, 2, 3, 6, 4, 5], max_fpr=0.1))
    # Decisions: source tp 1, fp 0, fn 0 -> P = R = F1 = 1; target tp 0, fp 1, fn 1 -> 0 everywhere.
    assert (row["precision_source"], row["recall_source"], row["f1_source"]) == (1.0, 1.0, 1.0)
    assert (row["precision_target"], row["recall_target"], row["f1_target"]) == (0.0, 0.0, 0.0)
    assert (row["n_source_normal"], row["n_target_normal"], row["n_anomaly"]) == (2, 2, 2)
    official = res["official"]
    assert official["score"] == pytest.approx(3 / (1 / 1.0 + 1 / 0.5 + 1 / row["pauc"]))
    assert official["hmean_source"] == 1.0 and official["hmean_target"] == 0.5
    assert official["auc_amean"] == 0.75
    # 2021: each domain its own test set: source {1, 2} vs {4} -> 1; target {3, 6} vs {5} -> 1/2.
    d21 = {r["domain"]: r for r in res["dcase2021"]["per_section_domain"]}
    assert d21["source"]["auc"] == 1.0 and d21["target"]["auc"] == 0.5
    assert d21["target"]["pauc"] == pytest.approx(roc_auc_score([0, 0, 1], [3, 6, 5], max_fpr=0.1))
    vals = [1.0, 0.5, d21["source"]["pauc"], d21["target"]["pauc"]]
    assert res["dcase2021"]["score"] == pytest.approx(hmean(vals))
    # A zero enters the harmonic means as float epsilon (the evaluators' floor), not as an error.
    assert res["official"]["over_all"]["hmean"]["precision"] == pytest.approx(
        2 / (1 / 1.0 + 1 / sys.float_info.epsilon))


def test_decision_metrics_against_sklearn():
    rng = np.random.default_rng(2)
    for _ in range(5):
        y = rng.integers(0, 2, 40)
        d = rng.integers(0, 2, 40)
        p, r, f = precision_recall_fscore_support(y, d, average="binary", zero_division=0)[:3]
        assert decision_metrics(y, d) == pytest.approx((p, r, f), abs=1e-12)


def test_section_without_target_normals_is_listed_not_scored():
    table = _domain_table()
    table = table[~((table["domain"] == "target") & (table["label"] == "normal"))]
    res = evaluate_scores(table, system="t", data="d")
    assert res["per_section"][0]["auc_target"] is None and res["official"]["score"] is None
    assert res["skipped_sections"] == [{"machine_type": "fan", "section": "00", "reason": "no target normal clips"}]


def test_2020_results_have_no_domain_keys():
    assert not {"per_section", "official", "dcase2021"} & set(evaluate_scores(_table(), system="t", data="d"))
