"""The paper's figures as files, drawn from a run folder with matplotlib (PNG and SVG).

``write_figures(run, out)`` reads only the run's files (``embeddings/{pretrain,finetune}.npz``,
``eval/scores.csv``, ``metrics.csv``) and writes, each as ``.png`` and ``.svg``:

- ``tsne_pretrain_normal`` / ``tsne_pretrain`` / ``tsne_finetune``: the paper's Figs. 3(a), 3(b) and 4: one
  t-SNE panel per machine type (computed per type), colour = machine ID, marker ``o`` = normal, ``x`` =
  anomaly. Fig. 3(a) embeds the normal clips only ("pretrained embedding of just normal sounds"), so its
  t-SNE is fitted on them alone; 3(b) and 4 every embedded clip of the run (normal training clips and
  labelled test clips). The coordinates go to ``tsne_<name>.csv``.
- ``roc_<scorer>``: one ROC curve per machine type over its labelled test clips (sklearn's ``roc_curve``),
  with its AUC; the points go to ``roc_<scorer>.csv``.
- ``hist_<scorer>``: per machine type, histograms of normal and anomalous test scores with each ID's
  decision threshold (dashed).
- ``training_curves``: per-epoch loss of both stages and its parts.

matplotlib runs on its non-interactive Agg backend: no display, browser or GPU is needed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from rcmae.files import atomic_write_text

FORMATS = ("png", "svg")
SPACES = ("pretrain", "finetune")
PAPER_FIGURE = {"pretrain": "Fig. 3(b)", "finetune": "Fig. 4"}
# The paper's t-SNE figures: file stem -> caption (write_figures draws them; reproduce's report shows them).
TSNE_FIGURES = {
    "tsne_pretrain_normal": "Fig. 3(a): pretrained embeddings of normal clips only",
    "tsne_pretrain": "Fig. 3(b): pretrained embeddings of normal and anomalous clips",
    "tsne_finetune": "Fig. 4: fine-tuned embeddings of training and test clips",
}
LOSS_PARTS = ("loss", "mae", "info_nce", "vcr", "supcon", "ce")


class FigureError(ValueError):
    """A run folder that lacks what a figure needs; the message names the file and the command that writes it."""


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, name: str) -> list[Path]:
    paths = []
    for fmt in FORMATS:
        path = out / f"{name}.{fmt}"
        tmp = out / f".{name}.tmp.{fmt}"
        fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
        os.replace(tmp, path)
        paths.append(path)
    return paths


def _panels(plt, n: int, size: float = 3.6):
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


# ---------------------------------------------------------------- t-SNE
def load_embeddings(run: str | os.PathLike, space: str) -> pd.DataFrame:
    """Rows of ``embeddings/<space>.npz``: ``machine_type, machine_id, split, label, path`` and ``z`` (a column of
    arrays)."""
    path = Path(run) / "embeddings" / f"{space}.npz"
    if not path.is_file():
        raise FigureError(f"{path}: missing; train the run and run `rcmae evaluate --run {run}` first")
    with np.load(path, allow_pickle=False) as npz:
        frame = pd.DataFrame({k: npz[k].astype(str) for k in ("path", "machine_type", "machine_id", "split", "label")})
        frame["z"] = list(npz["z"].astype(np.float32))
    return frame


def tsne_coordinates(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """2-D t-SNE per machine type (perplexity capped for small types); adds columns ``x, y``."""
    from sklearn.manifold import TSNE

    parts = []
    for _, rows in frame.groupby("machine_type", sort=True):
        z = np.stack(rows["z"].to_list())
        if len(z) < 3:
            xy = np.zeros((len(z), 2))
        else:
            perplexity = float(min(30.0, (len(z) - 1) / 3))
            xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)
        parts.append(rows.assign(x=xy[:, 0], y=xy[:, 1]))
    return pd.concat(parts).drop(columns="z")


def tsne_figure(coords: pd.DataFrame, title: str):
    """One panel per machine type; one scatter per (machine ID, normal/anomaly), labelled ``"<id> <label>"``."""
    plt = _plt()
    types = sorted(coords["machine_type"].unique())
    fig, axes = _panels(plt, len(types))
    for ax, mtype in zip(axes, types, strict=True):
        rows = coords[coords["machine_type"] == mtype]
        ids = sorted(rows["machine_id"].unique())
        colours = plt.get_cmap("tab10" if len(ids) <= 10 else "tab20")
        for k, mid in enumerate(ids):
            for label, marker in (("normal", "o"), ("anomaly", "x")):
                sel = rows[(rows["machine_id"] == mid) & (rows["label"] == label)]
                if len(sel):
                    kw = {"facecolors": "none"} if marker == "o" else {}
                    ax.scatter(sel["x"], sel["y"], s=12, marker=marker, color=colours(k % colours.N),
                               label=f"{mid} {label}", linewidths=0.8, **kw)
        ax.set_title(mtype)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=6, markerscale=0.8, loc="best")
    fig.suptitle(title)
    return fig


# ---------------------------------------------------------------- ROC, histograms
def load_scores(run: str | os.PathLike, scorer: str | None = None) -> tuple[pd.DataFrame, str]:
    """``eval/scores.csv`` and the scorer to draw (default: the run's default scorer)."""
    run = Path(run)
    path = run / "eval" / "scores.csv"
    if not path.is_file():
        raise FigureError(f"{path}: missing; run `rcmae evaluate --run {run}` first")
    table = pd.read_csv(path, dtype={"machine_id": str})
    if scorer is None:
        info = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
        scorer = info.get("evaluated", {}).get("default_scorer") or info.get("default_scorer")
        if f"score_{scorer}" not in table:
            scorer = next(c[len("score_"):] for c in table.columns if c.startswith("score_"))
    if f"score_{scorer}" not in table:
        have = ", ".join(c[len("score_"):] for c in table.columns if c.startswith("score_"))
        raise FigureError(f"{path}: no scores for scorer {scorer!r} (it has: {have}); pass --scorer one of those")
    return table, scorer


def roc_points(table: pd.DataFrame, scorer: str) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Per machine type: ``(fpr, tpr, auc)`` from sklearn over its test clips (anomaly = positive)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    out = {}
    for mtype, rows in table.groupby("machine_type", sort=True):
        y = (rows["label"] == "anomaly").astype(int).to_numpy()
        if y.min() == y.max():
            continue  # one class only: no ROC
        s = rows[f"score_{scorer}"].to_numpy(dtype=float)
        fpr, tpr, _ = roc_curve(y, s)
        out[str(mtype)] = (fpr, tpr, float(roc_auc_score(y, s)))
    return out


def roc_figure(points: dict[str, tuple[np.ndarray, np.ndarray, float]], scorer: str):
    """All machine types on one axes; each line is labelled with its type and AUC."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    for mtype, (fpr, tpr, auc) in points.items():
        ax.plot(fpr, tpr, label=f"{mtype} (AUC {auc:.3f})", gid=mtype)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
    ax.axvline(0.1, color="grey", linestyle="--", linewidth=0.6)  # pAUC's max FPR
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC per machine type ({scorer})")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def histogram_figure(table: pd.DataFrame, scorer: str):
    """Per machine type: normal and anomalous test scores, and each ID's threshold as a dashed line."""
    plt = _plt()
    types = sorted(table["machine_type"].unique())
    fig, axes = _panels(plt, len(types))
    score, thr = f"score_{scorer}", f"threshold_{scorer}"
    for ax, mtype in zip(axes, types, strict=True):
        rows = table[table["machine_type"] == mtype]
        bins = np.histogram_bin_edges(rows[score].to_numpy(dtype=float), bins=30)
        for label, colour in (("normal", "tab:blue"), ("anomaly", "tab:red")):
            vals = rows.loc[rows["label"] == label, score].to_numpy(dtype=float)
            if len(vals):
                ax.hist(vals, bins=bins, alpha=0.55, color=colour, label=label)
        if thr in rows:
            for mid, h in rows.groupby("machine_id")[thr].first().items():
                if pd.notna(h):
                    ax.axvline(float(h), color="black", linestyle="--", linewidth=0.8)
                    ax.annotate(f"id {mid}", (float(h), ax.get_ylim()[1] * 0.9), fontsize=6, rotation=90)
        ax.set_title(mtype)
        ax.set_xlabel(f"score ({scorer})")
        ax.set_ylabel("test clips")
        ax.legend(fontsize=7)
    fig.suptitle("scores and decision thresholds (dashed)")
    return fig


# ---------------------------------------------------------------- training curves
def training_figure(metrics: pd.DataFrame):
    """Per-epoch mean of the loss and its parts, one panel per stage."""
    plt = _plt()
    epochs = metrics[metrics["kind"] == "epoch"]
    stages = [s for s in ("pretrain", "finetune") if (epochs["stage"] == s).any()]
    if not stages:
        raise FigureError("metrics.csv has no per-epoch rows; train the run first")
    fig, axes = _panels(plt, len(stages), size=4.2)
    for ax, stage in zip(axes, stages, strict=True):
        rows = epochs[epochs["stage"] == stage].sort_values("epoch")
        for part in LOSS_PARTS:
            if part in rows and rows[part].notna().any():
                ax.plot(rows["epoch"] + 1, rows[part], label=part, linewidth=2 if part == "loss" else 1)
        ax.set_title(stage)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.suptitle("training curves")
    return fig


# ---------------------------------------------------------------- all of them
def write_figures(run: str | os.PathLike, out: str | os.PathLike, scorer: str | None = None,
                  seed: int = 0) -> list[Path]:
    """Write every figure the run's files allow into ``out`` (PNG + SVG); returns the paths written.

    A figure whose inputs are missing is skipped with a note on stderr; with none at all it raises.

    Raises:
        FigureError: the run has none of embeddings, eval/scores.csv and metrics.csv.
    """
    import sys

    plt = _plt()
    run, out = Path(run), Path(out)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: run folder not found; pass --run a folder written by `rcmae pretrain`")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    notes: list[str] = []
    for space in SPACES:
        try:
            frame = load_embeddings(run, space)
        except FigureError as err:
            notes.append(str(err))
            continue
        what = "pretrained" if space == "pretrain" else "fine-tuned"
        panels = [(f"tsne_{space}", frame, f"{PAPER_FIGURE[space]}: t-SNE of the {what} embeddings (o normal, "
                   "x anomaly)")]
        if space == "pretrain":  # Fig. 3(a): the normal clips alone, t-SNE fitted on them
            normal = frame[frame["label"] == "normal"]
            if len(normal):
                panels.insert(0, ("tsne_pretrain_normal", normal, "Fig. 3(a): t-SNE of the pretrained embeddings "
                                  "of normal clips only"))
        for name, rows, title in panels:
            coords = tsne_coordinates(rows, seed=seed)
            atomic_write_text(out / f"{name}.csv", coords.to_csv(index=False))
            fig = tsne_figure(coords, title)
            written += _save(fig, out, name)
            plt.close(fig)
    try:
        table, scorer = load_scores(run, scorer)
    except FigureError as err:
        notes.append(str(err))
    else:
        points = roc_points(table, scorer)
        rows = [{"machine_type": t, "fpr": f, "tpr": p} for t, (fpr, tpr, _) in points.items()
                for f, p in zip(fpr, tpr, strict=True)]
        atomic_write_text(out / f"roc_{scorer}.csv", pd.DataFrame(rows).to_csv(index=False))
        for name, fig in ((f"roc_{scorer}", roc_figure(points, scorer)),
                          (f"hist_{scorer}", histogram_figure(table, scorer))):
            written += _save(fig, out, name)
            plt.close(fig)
    metrics = run / "metrics.csv"
    if metrics.is_file() and metrics.stat().st_size:
        fig = training_figure(pd.read_csv(metrics))
        written += _save(fig, out, "training_curves")
        plt.close(fig)
    else:
        notes.append(f"{metrics}: missing; training curves need a trained run")
    for note in notes:
        print(f"figures: skipped: {note}", file=sys.stderr)
    if not written:
        raise FigureError(f"{run}: nothing to draw ({'; '.join(notes)})")
    return written
