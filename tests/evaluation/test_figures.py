"""``rcmae figures``: the files exist, the t-SNE shows every embedded clip of its class, the ROC is sklearn's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import SHORT_OVERRIDES, write_tiny_dcase
from sklearn.metrics import roc_curve

from rcmae import cli
from rcmae.evaluation import evaluate as score
from rcmae.evaluation import figures
from rcmae.training import stages as train

QUICK = [*SHORT_OVERRIDES, "pretrain.epochs=2", "finetune.epochs=2"]


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    root = tmp_path_factory.mktemp("figs")
    data = write_tiny_dcase(root / "data", seconds=1.0, seed=2)
    run = train.pretrain(data, root / "run", preset="tiny", overrides=QUICK, progress=False)
    train.finetune(run, progress=False)
    score.evaluate_run(run, progress=False)
    out = root / "figs"
    assert cli.main(["figures", "--run", str(run), "--out", str(out), "--scorer", "knn"]) == 0
    return run, out


def test_every_figure_is_written_as_png_and_svg(drawn):
    _, out = drawn
    for name in ("tsne_pretrain_normal", "tsne_pretrain", "tsne_finetune", "roc_knn", "hist_knn", "training_curves"):
        png, svg = out / f"{name}.png", out / f"{name}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
        assert b"<svg" in svg.read_bytes()[:2000]


def test_tsne_shows_every_embedded_clip_once_per_class(drawn):
    run, out = drawn
    for space in ("pretrain", "finetune"):
        frame = figures.load_embeddings(run, space)
        expected = frame.groupby(["machine_type", "machine_id", "label"]).size()
        coords = pd.read_csv(out / f"tsne_{space}.csv", dtype={"machine_id": str})
        assert coords.groupby(["machine_type", "machine_id", "label"]).size().equals(expected)
        # The drawn figure: one scatter per (ID, label) per machine-type panel, with exactly those points.
        fig = figures.tsne_figure(coords, "t")
        drawn_counts = {}
        for ax in fig.axes:
            for coll in ax.collections:
                mid, label = coll.get_label().split()
                drawn_counts[(ax.get_title(), mid, label)] = len(coll.get_offsets())
        assert drawn_counts == {k: int(v) for k, v in expected.items()}
        assert set(frame["label"]) == {"normal", "anomaly"} and set(frame["split"]) == {"train", "test"}


def test_fig_3a_embeds_the_normal_clips_alone(drawn):
    run, out = drawn
    frame = figures.load_embeddings(run, "pretrain")
    normal = frame[frame["label"] == "normal"]
    coords = pd.read_csv(out / "tsne_pretrain_normal.csv", dtype={"machine_id": str})
    assert set(coords["label"]) == {"normal"} and len(coords) == len(normal) < len(frame)
    assert coords.groupby(["machine_type", "machine_id"]).size().equals(
        normal.groupby(["machine_type", "machine_id"]).size())
    # Its t-SNE is fitted on the normal clips alone: the same as computing it on them directly.
    again = figures.tsne_coordinates(normal, seed=0)
    assert np.allclose(coords[["x", "y"]].to_numpy(), again[["x", "y"]].to_numpy())
    assert "Fig. 3(a)" in (out / "tsne_pretrain_normal.svg").read_text()


def test_roc_points_are_sklearns(drawn):
    run, out = drawn
    table = pd.read_csv(run / "eval/scores.csv", dtype={"machine_id": str})
    points = figures.roc_points(table, "knn")
    fig = figures.roc_figure(points, "knn")
    lines = {line.get_gid(): line for line in fig.axes[0].get_lines() if line.get_gid()}
    saved = pd.read_csv(out / "roc_knn.csv")
    assert set(lines) == set(table["machine_type"]) == set(saved["machine_type"])
    for mtype, rows in table.groupby("machine_type"):
        fpr, tpr, _ = roc_curve((rows["label"] == "anomaly").astype(int), rows["score_knn"])
        assert np.allclose(lines[mtype].get_xdata(), fpr) and np.allclose(lines[mtype].get_ydata(), tpr)
        mine = saved[saved["machine_type"] == mtype]
        assert np.allclose(mine["fpr"], fpr) and np.allclose(mine["tpr"], tpr)


def test_histograms_mark_each_ids_threshold(drawn):
    run, _ = drawn
    table = pd.read_csv(run / "eval/scores.csv", dtype={"machine_id": str})
    fig = figures.histogram_figure(table, "knn")
    for ax in fig.axes:
        rows = table[table["machine_type"] == ax.get_title()]
        xs = sorted(line.get_xdata()[0] for line in ax.get_lines())
        assert np.allclose(xs, sorted(rows.groupby("machine_id")["threshold_knn"].first()))
        assert sum(p.get_height() for p in ax.patches) == len(rows)


def test_missing_inputs_say_which_command_writes_them(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert cli.main(["figures", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "o")]) == 2
    assert "rcmae evaluate --run" in capsys.readouterr().err
