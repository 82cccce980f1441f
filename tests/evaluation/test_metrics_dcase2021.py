"""DCASE 2021 submission files: per section *and domain* (``..._section_XX_source_test.csv``), the names the
2021 evaluator (y-kawagu/dcase2021_task2_evaluator) opens; checked against a loop over the index and against that
evaluator's computation re-implemented from its published definition."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from scipy.stats import hmean
from sklearn.metrics import confusion_matrix, roc_auc_score

from rcmae.data.index import index_dataset
from rcmae.evaluation.metrics import evaluate_scores, is_dcase2021_clip, write_results


def _write_2021(root: Path) -> Path:
    """``dev_data/<type>/{train,source_test,target_test}`` with DCASE 2021 names: 2 types x sections 00, 01."""
    rng = np.random.default_rng(1)
    for mtype in ("fan", "gearbox"):
        for section in ("00", "01"):
            files = [("train", f"section_{section}_source_train_normal_{n:04d}_strength_1_ambient.wav")
                     for n in range(3)]
            files += [("train", f"section_{section}_target_train_normal_0000_strength_2_ambient.wav")]
            for domain in ("source", "target"):
                files += [(f"{domain}_test", f"section_{section}_{domain}_test_{label}_{n:04d}.wav")
                          for label in ("normal", "anomaly") for n in range(3 if domain == "source" else 2)]
            for folder, name in files:
                out = root / "dev_data" / mtype / folder
                out.mkdir(parents=True, exist_ok=True)
                f0 = 90.0 * (1.3 if "anomaly" in name else 1.0) * (1.2 if "target" in name else 1.0)
                wave = 0.1 * np.sin(2 * np.pi * f0 * np.arange(16000) / 16000) + 0.01 * rng.normal(size=16000)
                sf.write(out / name, wave.astype(np.float32), 16000, subtype="PCM_16")
    return root


def _read(path: Path) -> list[list[str]]:
    with open(path) as f:
        return list(csv.reader(f))


def _evaluator_2021(team: Path, gt: Path) -> dict:
    """y-kawagu/dcase2021_task2_evaluator's computation from its published definition: per type, domain and
    section, the team's ``..._<domain>_test.csv`` rows and the ground truth, both sorted by name; AUC and pAUC
    with sklearn on that domain's clips; precision/recall/F1 from the decisions; official score = harmonic mean
    of every AUC and pAUC (floored at float epsilon)."""
    eps = sys.float_info.epsilon
    files = sorted(gt.glob("ground_truth_*.csv"))
    machines = sorted({f.name.split("_")[2] for f in files})
    sections = sorted({"_".join(f.name.split("_")[3:5]) for f in files})
    rows = []
    for machine in machines:
        for domain in ("source_test", "target_test"):
            for section in sections:
                stem = f"{machine}_{section}_{domain}.csv"
                y_pred = [float(r[1]) for r in sorted(_read(team / f"anomaly_score_{stem}"))]
                y_true = [float(r[1]) for r in sorted(_read(gt / f"ground_truth_{stem}"))]
                dec = [float(r[1]) for r in sorted(_read(team / f"decision_result_{stem}"))]
                tn, fp, fn, tp = confusion_matrix(y_true, dec).ravel()
                prec = tp / np.maximum(tp + fp, eps)
                rec = tp / np.maximum(tp + fn, eps)
                rows.append({"machine_type": machine, "section": section[-2:], "domain": domain.split("_")[0],
                             "auc": roc_auc_score(y_true, y_pred),
                             "pauc": roc_auc_score(y_true, y_pred, max_fpr=0.1),
                             "f1": 2.0 * prec * rec / np.maximum(prec + rec, eps)})
    perf = np.array([[r["auc"], r["pauc"]] for r in rows], dtype=float)
    return {"rows": rows, "score": hmean(np.maximum(perf, eps), axis=None)}


def test_2021_layout_gets_per_domain_files_the_2021_evaluator_reads(tmp_path):
    index = index_dataset(_write_2021(tmp_path / "d21"))
    test = index[index["split"] == "test"].reset_index(drop=True)
    assert len(test) == 2 * 2 * 10 and all(is_dcase2021_clip(p) for p in test["path"])
    rng = np.random.default_rng(0)
    scores = rng.normal(size=len(test)) + (test["label"] == "anomaly").to_numpy()
    table = test.assign(score=scores, decision=(scores > 0.5).astype(int))
    res = evaluate_scores(table, system="t", data="d")
    team = tmp_path / "team"
    write_results(res, table, team)
    # A loop over the index: every (type, section, domain) file holds that domain's clips, sorted by name.
    expected = {}
    for n in range(len(test)):
        row = test.iloc[n]
        for stem in (f"{row['machine_type']}_section_{row['section']}_test.csv",
                     f"{row['machine_type']}_section_{row['section']}_{row['domain']}_test.csv"):
            expected.setdefault(f"anomaly_score_{stem}", []).append([Path(row["path"]).name, repr(float(scores[n]))])
            expected.setdefault(f"decision_result_{stem}", []).append([Path(row["path"]).name,
                                                                       str(int(scores[n] > 0.5))])
    written = {p.name for p in team.glob("*_test.csv")}
    assert written == set(expected) and len(written) == 2 * 2 * 3 * 2
    assert "anomaly_score_fan_section_01_target_test.csv" in written
    for name, rows in expected.items():
        assert _read(team / name) == sorted(rows), name
    # The 2021 evaluator's numbers on these files are results.json's dcase2021 block.
    gt = tmp_path / "ground_truth_data"
    gt.mkdir()
    for (mtype, section, domain), g in test.groupby(["machine_type", "section", "domain"]):
        with open(gt / f"ground_truth_{mtype}_section_{section}_{domain}_test.csv", "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows(
                sorted([Path(p).name, int(lab == "anomaly")] for p, lab in zip(g["path"], g["label"], strict=True)))
    ref = _evaluator_2021(team, gt)
    ours = {(r["machine_type"], r["section"], r["domain"]): r for r in res["dcase2021"]["per_section_domain"]}
    assert len(ours) == len(ref["rows"]) == 8
    for r in ref["rows"]:
        mine = ours[(r["machine_type"], r["section"], r["domain"])]
        for key in ("auc", "pauc", "f1"):
            assert abs(mine[key] - r[key]) < 1e-9
    assert abs(res["dcase2021"]["score"] - ref["score"]) < 1e-9


def test_2022_and_later_names_get_section_files_only(tmp_path):
    assert not is_dcase2021_clip("x/fan/test/section_00_source_test_normal_0000_vel_6.wav")
    assert not is_dcase2021_clip("x/fan/test/section_00_0003.wav")
    assert is_dcase2021_clip("x/fan/test/section_03_target_test_0007.wav")  # 2021 evaluation names
    assert is_dcase2021_clip("x/fan/source_test/section_00_source_test_normal_0000_vel_6.wav")
    paths = [f"/d/ToyCar/test/section_00_{d}_test_{lab}_0000_spd_1.wav" for d in ("source", "target")
             for lab in ("normal", "anomaly")]
    table = pd.DataFrame({"path": paths, "machine_type": "ToyCar", "machine_id": "00", "section": "00",
                          "domain": ["source", "source", "target", "target"],
                          "label": ["normal", "anomaly"] * 2, "score": [0.1, 0.9, 0.2, 0.8], "decision": [0, 1, 0, 1]})
    write_results(evaluate_scores(table, system="t", data="d"), table, tmp_path / "t")
    assert sorted(p.name for p in (tmp_path / "t").glob("*_test.csv")) == [
        "anomaly_score_ToyCar_section_00_test.csv", "decision_result_ToyCar_section_00_test.csv"]


def test_rcmae_evaluate_writes_the_2021_files_of_a_2021_layout(tmp_path):
    from conftest import SHORT_OVERRIDES

    from rcmae.evaluation.evaluate import evaluate_run
    from rcmae.training import stages as train

    data = _write_2021(tmp_path / "d21")
    run = tmp_path / "run"
    train.pretrain(data, run, epochs=1, overrides=SHORT_OVERRIDES, progress=False)
    evaluate_run(run, scorer="knn", progress=False)
    scores = pd.read_csv(run / "eval" / "scores.csv", dtype={"section": str})
    for folder in (run / "eval", run / "eval" / "knn"):
        for (mtype, section, domain), g in scores.groupby(["machine_type", "section", "domain"]):
            stem = f"{mtype}_section_{section}_{domain}_test.csv"
            want = sorted([Path(p).name, repr(float(v))] for p, v in zip(g["path"], g["score_knn"], strict=True))
            assert _read(folder / f"anomaly_score_{stem}") == want
            dec = sorted([Path(p).name, str(int(d == "anomaly"))] for p, d in zip(g["path"], g["decision_knn"],
                                                                                  strict=True))
            assert _read(folder / f"decision_result_{stem}") == dec
