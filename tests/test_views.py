"""Figures and tables show the numbers of independent references (sklearn, numpy, the JSON)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_curve
from sklearn.neighbors import KNeighborsClassifier

from rcmae import views as viz

RESULTS = {
    "system": "rcmae", "data": "d",
    "per_id": [
        {"machine_type": "fan", "machine_id": "00", "auc": 0.91, "pauc": 0.71, "n_normal": 4, "n_anomaly": 4},
        {"machine_type": "fan", "machine_id": "02", "auc": 0.81, "pauc": 0.61, "n_normal": 4, "n_anomaly": 3},
        {"machine_type": "valve", "machine_id": "00", "auc": 0.55, "pauc": 0.50, "n_normal": 5, "n_anomaly": 5},
    ],
    "per_type": {"fan": {"auc": 0.86, "pauc": 0.66, "auc_hmean": 0.857, "pauc_hmean": 0.655},
                 "valve": {"auc": 0.55, "pauc": 0.50, "auc_hmean": 0.55, "pauc_hmean": 0.50}},
    "average": {"auc": 0.705, "pauc": 0.58},
}


def _scores(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for mtype in ("fan", "valve"):
        for lab in ("normal", "anomaly"):
            for i in range(25):
                rows.append({"path": f"/x/{mtype}/{lab}_id_00_{i:08d}.wav", "machine_type": mtype, "machine_id": "00",
                             "label": lab, "score": rng.normal(1.0 if lab == "anomaly" else 0.0)})
    return pd.DataFrame(rows)


def test_roc_figure_points_equal_sklearn() -> None:
    table = _scores()
    fig = viz.roc_figure(table, by="machine_type")
    traces = {t.name: t for t in fig.data}
    for mtype in ("fan", "valve"):
        g = table[table.machine_type == mtype]
        fpr, tpr, _ = roc_curve((g.label == "anomaly").astype(int), g.score)
        np.testing.assert_allclose(traces[mtype].x, fpr)
        np.testing.assert_allclose(traces[mtype].y, tpr)
    assert "chance" in traces


def test_histogram_counts_equal_numpy() -> None:
    table = _scores(1)
    fig = viz.score_histogram(table.score.to_numpy(), table.label.tolist(), threshold=0.5, bins=12)
    edges = np.histogram_bin_edges(table.score, bins=12)
    bars = {t.name: t for t in fig.data}
    for lab in ("normal", "anomaly"):
        expected, _ = np.histogram(table.score[table.label == lab], bins=edges)
        np.testing.assert_array_equal(bars[lab].y, expected)
        np.testing.assert_allclose(bars[lab].x, (edges[:-1] + edges[1:]) / 2)
    assert sum(bars["normal"].y) + sum(bars["anomaly"].y) == len(table)
    (line,) = fig.layout.shapes
    assert line.x0 == line.x1 == 0.5


def _blobs(n_per: int = 25, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 10, size=(3, dim))
    z = np.concatenate([c + rng.normal(0, 0.5, size=(n_per, dim)) for c in centers])
    ids = np.repeat(["00", "02", "04"], n_per)
    return z.astype(np.float32), ids


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_embedding_keeps_clusters_apart(method: str) -> None:
    z, ids = _blobs()
    pts = viz.compute_embedding(z, method=method, seed=0)
    assert pts.shape == (len(z), 2) and np.isfinite(pts).all()
    # Leave-one-out 1-NN in 2-D must recover the cluster of (almost) every point.
    knn = KNeighborsClassifier(n_neighbors=2).fit(pts, ids)
    neighbours = knn.kneighbors(pts, n_neighbors=2, return_distance=False)[:, 1]
    agreement = np.mean(ids[neighbours] == ids)
    assert agreement >= 0.95


def test_embedding_figure_groups_and_hover() -> None:
    pts = np.arange(12, dtype=float).reshape(6, 2)
    ids = ["00", "00", "02", "02", "02", "00"]
    labels = ["normal", "anomaly", "normal", "normal", "anomaly", "normal"]
    files = [f"/d/{lab}_id_{m}_{i}.wav" for i, (m, lab) in enumerate(zip(ids, labels, strict=True))]
    fig = viz.embedding_figure(pts, ids, labels, files)
    by_name = {t.name: t for t in fig.data}
    assert set(by_name) == {"00 normal", "00 anomaly", "02 normal", "02 anomaly"}
    np.testing.assert_array_equal(by_name["00 normal"].x, [0, 10])
    assert list(by_name["02 normal"].customdata) == [files[2], files[3]]
    assert by_name["00 anomaly"].marker.symbol == "x" and by_name["00 normal"].marker.symbol == "circle"
    # Same machine ID, same colour for normal and anomalous clips.
    assert by_name["02 normal"].marker.color == by_name["02 anomaly"].marker.color


def test_results_tables_equal_json() -> None:
    t = viz.results_table(RESULTS)
    row = t[(t.machine_type == "fan") & (t.machine_id == "02")].iloc[0]
    assert (row.AUC, row.pAUC, row.n_normal, row.n_anomaly) == (0.81, 0.61, 4, 3)
    mean = t[(t.machine_type == "valve") & (t.machine_id == "mean")].iloc[0]
    assert (mean.AUC, mean.pAUC) == (0.55, 0.50)
    pt = viz.per_type_table(RESULTS).set_index("machine_type")
    assert pt.loc["fan", "AUC hmean"] == "0.8570" and pt.loc["Average", "pAUC"] == 0.58
    # No "None" in a table: the Average row has no per-ID harmonic means, and shows blank cells.
    assert pt.loc["Average", "AUC hmean"] == "" and not pt.astype(str).isin(["None", "nan"]).any().any()
    other = {"system": "ae", "per_type": {"fan": {"auc": 0.6, "pauc": 0.52}}, "average": {"auc": 0.6, "pauc": 0.52}}
    cmp = viz.compare_table([RESULTS, other, RESULTS]).set_index("machine_type")
    assert cmp.loc["valve", "rcmae AUC"] == 0.55 and np.isnan(cmp.loc["valve", "ae AUC"])
    assert cmp.loc["Average", "ae pAUC"] == 0.52 and "rcmae (2) AUC" in cmp.columns


def test_load_score_table_from_challenge_csvs(tmp_path) -> None:
    (tmp_path / "anomaly_score_fan_id_00.csv").write_text("normal_id_00_00000000.wav,0.25\n"
                                                          "anomaly_id_00_00000001.wav,1.5\n")
    (tmp_path / "anomaly_score_valve_id_02.csv").write_text("id_02_00000003.wav,0.75\n")
    t = viz.load_score_table(tmp_path)
    assert t.values.tolist() == [
        ["normal_id_00_00000000.wav", "fan", "00", "normal", 0.25],
        ["anomaly_id_00_00000001.wav", "fan", "00", "anomaly", 1.5],
        ["id_02_00000003.wav", "valve", "02", "unknown", 0.75],
    ]
    with pytest.raises(FileNotFoundError, match="evaluate the run first"):
        viz.load_score_table(tmp_path / "empty")


def test_loss_figure_and_spectrogram(tmp_path) -> None:
    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,step,train_loss,val_auc\n0,0,2.0,\n0,1,1.5,\n0,1,,0.7\n1,2,1.0,\n")
    fig = viz.loss_figure(csv)
    (trace,) = fig.data
    assert trace.name == "train_loss"
    np.testing.assert_array_equal(trace.x, [0, 1, 2])
    np.testing.assert_array_equal(trace.y, [2.0, 1.5, 1.0])
    logmel = np.random.default_rng(0).normal(size=(8, 5))
    spec = viz.spectrogram_figure(logmel, sample_rate=16000, hop_length=8000)
    np.testing.assert_array_equal(spec.data[0].z, logmel)
    np.testing.assert_allclose(spec.data[0].x, [0, 0.5, 1.0, 1.5, 2.0])
    with pytest.raises(ValueError, match=r"logmel: expected \[F, T\]"):
        viz.spectrogram_figure(np.zeros(4))


def test_loss_figure_reads_rcmae_metrics(tmp_path) -> None:
    # rcmae.training's layout: a stage and a kind column; per-epoch rows repeat the last step and are skipped.
    csv = tmp_path / "metrics.csv"
    csv.write_text("stage,kind,epoch,step,loss,mae,supcon,lr\n"
                   "pretrain,step,0,1,2.0,1.5,,0.1\npretrain,step,0,2,1.8,1.2,,0.1\npretrain,epoch,0,2,1.8,1.2,,\n"
                   "finetune,step,0,1,5.0,,4.0,0.1\n")
    by_name = {t.name: t for t in viz.loss_figure(csv).data}
    assert set(by_name) == {"pretrain loss", "pretrain mae", "finetune loss", "finetune supcon"}
    np.testing.assert_array_equal(by_name["pretrain loss"].x, [1, 2])
    np.testing.assert_array_equal(by_name["pretrain loss"].y, [2.0, 1.8])
    np.testing.assert_array_equal(by_name["finetune supcon"].y, [4.0])
    assert by_name["pretrain mae"].visible == "legendonly" and by_name["finetune loss"].visible is True


# ---------------------------------------------------------------- DCASE 2021+ views
def _domain_scores(seed: int = 3) -> pd.DataFrame:
    """Two sections; target normals score higher than source normals (a shift the target AUC must show)."""
    rng = np.random.default_rng(seed)
    rows = []
    for mtype in ("fan", "valve"):
        for domain in ("source", "target"):
            for lab in ("normal", "anomaly"):
                for n in range(8):
                    shift = (1.5 if lab == "anomaly" else 0.0) + (0.8 if domain == "target" and lab == "normal" else 0)
                    rows.append({"path": f"/d/{mtype}/test/section_00_{domain}_test_{lab}_{n:04d}_spd_{n % 2}.wav",
                                 "machine_type": mtype, "machine_id": "00", "section": "00", "domain": domain,
                                 "label": lab, "score": float(rng.normal() + shift)})
    return pd.DataFrame(rows)


def test_domain_roc_areas_equal_the_reported_domain_aucs():
    from rcmae.evaluation.metrics import evaluate_scores

    table = _domain_scores()
    res = evaluate_scores(table, system="t", data="d")
    for row in res["per_section"]:
        curves = viz.domain_roc_points(table[table["machine_type"] == row["machine_type"]])
        assert set(curves) == {"source", "target"}
        for domain, (fpr, tpr) in curves.items():
            assert float(np.trapezoid(tpr, fpr)) == pytest.approx(row[f"auc_{domain}"], abs=1e-12)
    assert viz.roc_points(table, by="domain").keys() == {"source", "target"}
    with pytest.raises(ValueError, match="no 'domain' column"):
        viz.domain_roc_points(table.drop(columns="domain"))


def test_section_and_official_tables_show_the_json():
    from rcmae.evaluation.metrics import evaluate_scores

    table = _domain_scores().assign(decision=lambda t: (t["score"] > 1.0).astype(int))
    res = evaluate_scores(table, system="t", data="d")
    sec = viz.section_table(res)
    assert sec[["machine_type", "section"]].values.tolist() == [["fan", "00"], ["fan", "mean"], ["valve", "00"],
                                                                 ["valve", "mean"]]
    for row in res["per_section"]:
        got = sec[(sec.machine_type == row["machine_type"]) & (sec.section == "00")].iloc[0]
        assert (got["AUC (source)"], got["AUC (target)"], got["pAUC"], got["F1 (target)"]) == pytest.approx(
            (row["auc_source"], row["auc_target"], row["pauc"], row["f1_target"]))
    official = viz.official_table(res).set_index("metric")["value"]
    assert official.iloc[0] == pytest.approx(res["official"]["score"])
    assert official["AUC harmonic mean, target"] == pytest.approx(res["official"]["hmean_target"])
    assert viz.section_table(RESULTS).empty and viz.official_table(RESULTS).empty


def test_domain_histogram_counts_and_clip_groups():
    table = _domain_scores()
    fig = viz.domain_histogram(table["score"].to_numpy(), table["label"].tolist(), table["domain"].tolist(),
                               threshold=0.5)
    edges = np.histogram_bin_edges(table["score"].to_numpy(), bins=30)
    for trace in fig.data:
        domain, lab = trace.name.split()
        sel = (table["domain"] == domain) & (table["label"] == lab)
        assert list(trace.y) == list(np.histogram(table.loc[sel, "score"], bins=edges)[0])
    assert {t.name for t in fig.data} == {"source normal", "source anomaly", "target normal", "target anomaly"}
    paths = ["a/section_00_target_test_normal_0001_spd_1.wav", "normal_id_00_00000000.wav", "section_00_0001.wav"]
    assert list(viz.clip_groups(paths, "domain")) == ["target", "?", "?"]
    assert list(viz.clip_groups(paths, "attributes")) == ["spd_1", "none", "none"]
    with pytest.raises(ValueError, match="use 'domain' or 'attributes'"):
        viz.clip_groups(paths, "colour")
