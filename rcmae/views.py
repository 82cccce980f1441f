"""Plotly figures and tables for results, scores, embeddings, training curves and spectrograms.

Each figure is split into a compute step (plain numbers, testable and cacheable) and a
drawing step, so the workbench can cache t-SNE/UMAP and tests can check the numbers a
figure shows against sklearn and numpy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.colors as pc
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from sklearn.metrics import roc_curve

LABEL_VALUE = {"normal": 0, "anomaly": 1}
# Enough distinct colours for every machine ID of a DCASE year (up to ~48 before repeating).
_PALETTE = tuple(pc.qualitative.Dark24 + pc.qualitative.Light24)
_SCORE_COLUMNS = ("path", "machine_type", "machine_id", "label", "score")


# ---------------------------------------------------------------- tables
def results_table(results: dict) -> pd.DataFrame:
    """Per-ID rows of a ``results.json`` dict, then one mean row per machine type.

    Columns: machine_type, machine_id, AUC, pAUC, n_normal, n_anomaly (fractions, as in the JSON).
    """
    rows = [{"machine_type": r["machine_type"], "machine_id": r["machine_id"], "AUC": r["auc"], "pAUC": r["pauc"],
             "n_normal": r.get("n_normal"), "n_anomaly": r.get("n_anomaly")} for r in results.get("per_id", [])]
    for mtype, v in results.get("per_type", {}).items():
        rows.append({"machine_type": mtype, "machine_id": "mean", "AUC": v["auc"], "pAUC": v["pauc"],
                     "n_normal": None, "n_anomaly": None})
    table = pd.DataFrame(rows, columns=["machine_type", "machine_id", "AUC", "pAUC", "n_normal", "n_anomaly"])
    return table.sort_values(["machine_type", "machine_id"], kind="stable").reset_index(drop=True)


def per_type_table(results: dict) -> pd.DataFrame:
    """One row per machine type (AUC, pAUC, and their harmonic means over IDs) plus an ``Average`` row."""
    rows = [{"machine_type": t, "AUC": v["auc"], "pAUC": v["pauc"], "AUC hmean": v.get("auc_hmean"),
             "pAUC hmean": v.get("pauc_hmean")} for t, v in results.get("per_type", {}).items()]
    avg = results.get("average", {})
    table = pd.DataFrame(rows, columns=["machine_type", "AUC", "pAUC", "AUC hmean", "pAUC hmean"])
    # The Average row has no harmonic means (they are per type): blank cells, not "None".
    for col in ("AUC hmean", "pAUC hmean"):
        table[col] = [f"{v:.4f}" if v is not None and v == v else "" for v in table[col]]
    average = pd.DataFrame([{"machine_type": "Average", "AUC": avg.get("auc"), "pAUC": avg.get("pauc"),
                             "AUC hmean": "", "pAUC hmean": ""}])
    return pd.concat([table, average], ignore_index=True) if len(table) else average


def compare_table(results: Sequence[dict], names: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-type AUC and pAUC of several results side by side (columns ``<name> AUC``, ``<name> pAUC``).

    Rows are the union of the machine types plus ``Average``; a type a system lacks is NaN.
    """
    names = list(names) if names is not None else [r.get("system", f"system {i}") for i, r in enumerate(results)]
    if len(names) != len(results):
        raise ValueError(f"names: got {len(names)} names for {len(results)} results; give one name per result")
    # Two runs of the same system still need distinct columns.
    seen: dict[str, int] = {}
    unique = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        unique.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    types = sorted({t for r in results for t in r.get("per_type", {})})
    table = pd.DataFrame({"machine_type": [*types, "Average"]})
    for name, res in zip(unique, results, strict=True):
        per_type = res.get("per_type", {})
        avg = res.get("average", {})
        table[f"{name} AUC"] = [per_type[t]["auc"] if t in per_type else np.nan for t in types] + [avg.get("auc")]
        table[f"{name} pAUC"] = [per_type[t]["pauc"] if t in per_type else np.nan for t in types] + [avg.get("pauc")]
    return table


# ---------------------------------------------------------------- DCASE 2021-2025 tables
_SECTION_COLUMNS = [("AUC (source)", "auc_source"), ("AUC (target)", "auc_target"), ("pAUC", "pauc"),
                    ("precision (source)", "precision_source"), ("precision (target)", "precision_target"),
                    ("recall (source)", "recall_source"), ("recall (target)", "recall_target"),
                    ("F1 (source)", "f1_source"), ("F1 (target)", "f1_target")]


def section_table(results: dict) -> pd.DataFrame:
    """Per (machine type, section) rows of a DCASE 2021+ ``results.json``: the official evaluator's columns.

    Columns: machine_type, section, AUC (source), AUC (target), pAUC, precision/recall/F1 (source, target);
    then one ``mean`` row per machine type (arithmetic means over its sections, as the challenge papers
    tabulate). Empty for 2020-style results (no ``per_section``).
    """
    cols = ["machine_type", "section"] + [c for c, _ in _SECTION_COLUMNS]
    rows = [{"machine_type": r["machine_type"], "section": r["section"],
             **{c: r.get(k) for c, k in _SECTION_COLUMNS}} for r in results.get("per_section", [])]
    for mtype in sorted({r["machine_type"] for r in rows}):
        mine = [r for r in rows if r["machine_type"] == mtype]
        mean = {"machine_type": mtype, "section": "mean"}
        for c, _ in _SECTION_COLUMNS:
            vals = [r[c] for r in mine]
            mean[c] = float(np.mean(vals)) if vals and all(v is not None for v in vals) else None
        rows.append(mean)
    table = pd.DataFrame(rows, columns=cols)
    return table.sort_values(["machine_type", "section"], kind="stable").reset_index(drop=True)


def official_table(results: dict) -> pd.DataFrame:
    """The official score and the means the DCASE evaluators print, one row each (value as a fraction).

    Rows: official score (2022-2025), arithmetic mean of all its terms, AUC arithmetic mean, source/target
    harmonic and arithmetic AUC means, pAUC means, and DCASE 2021's official score. Empty for 2020 results.
    """
    off = results.get("official") or {}
    if not off:
        return pd.DataFrame(columns=["metric", "value"])
    d21 = results.get("dcase2021") or {}
    rows = [("official score (2022-2025: hmean of AUC source, AUC target, pAUC)", off.get("score")),
            ("arithmetic mean of the same terms", off.get("amean")),
            ("AUC arithmetic mean (source and target)", off.get("auc_amean")),
            ("AUC harmonic mean, source", off.get("hmean_source")),
            ("AUC harmonic mean, target", off.get("hmean_target")),
            ("AUC arithmetic mean, source", off.get("amean_source")),
            ("AUC arithmetic mean, target", off.get("amean_target")),
            ("pAUC harmonic mean", off.get("pauc_hmean")),
            ("pAUC arithmetic mean", off.get("pauc_amean")),
            ("official score (2021 definition: per domain, hmean of AUC and pAUC)", d21.get("score"))]
    for key, name in (("precision", "precision"), ("recall", "recall"), ("f1", "F1")):
        rows.append((f"{name} harmonic mean (both domains)", (off.get("over_all") or {}).get("hmean", {}).get(key)))
    return pd.DataFrame(rows, columns=["metric", "value"])


def clip_groups(paths: Sequence[str], by: str = "domain") -> np.ndarray:
    """Per clip its ``domain`` (source/target, from the file name) or ``attributes`` (the name's tail).

    Clips whose name does not say (2020 names, bare evaluation names) get ``"?"`` / ``"none"``.
    """
    from rcmae.data.names import parse_attributes, parse_name

    if by == "domain":
        return np.asarray([(parse_name(p) or {}).get("domain") or "?" for p in paths])
    if by == "attributes":
        return np.asarray([parse_attributes(p) or "none" for p in paths])
    raise ValueError(f"by: {by!r} is not known; use 'domain' or 'attributes'")


# ---------------------------------------------------------------- scores
def load_score_table(folder: str | os.PathLike) -> pd.DataFrame:
    """Per-clip scores of an eval folder from its challenge CSVs (``anomaly_score_<type>_id_XX.csv``).

    Labels come from the file names (``normal_...`` / ``anomaly_...``); clips without one are "unknown".
    Returns columns path, machine_type, machine_id, label, score.
    """
    folder = Path(folder)
    frames = []
    for csv in sorted(folder.glob("anomaly_score_*.csv")):
        stem = csv.stem[len("anomaly_score_"):]
        if stem.endswith(("_source_test", "_target_test")):
            continue  # DCASE 2021's per-domain copies of the section file's rows
        for tag in ("_id_", "_section_"):
            if tag in stem:
                mtype, mid = stem.rsplit(tag, 1)
                break
        else:
            continue
        part = pd.read_csv(csv, header=None, names=["path", "score"], dtype={"path": str})
        if part.empty:
            continue
        part["machine_type"] = mtype
        part["machine_id"] = mid
        first = part["path"].str.split("_").str[0]
        part["label"] = first.where(first.isin(list(LABEL_VALUE)), "unknown")
        frames.append(part)
    if not frames:
        raise FileNotFoundError(f"{folder}: no anomaly_score_*.csv files; evaluate the run first (rcmae evaluate)")
    return pd.concat(frames, ignore_index=True)[list(_SCORE_COLUMNS)]


def domain_roc_points(table: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"source": (fpr, tpr), "target": ...}``: each domain's normals against *all* anomalies.

    These are the curves under the official AUC(source) and AUC(target) (DCASE 2022-2025): the
    area under each equals the ``auc_source`` / ``auc_target`` of the table's section.
    """
    if "domain" not in table.columns:
        raise ValueError("domain ROC: the scores table has no 'domain' column (DCASE 2021+ data only)")
    labelled = table[table["label"].isin(list(LABEL_VALUE))]
    out = {}
    for domain in ("source", "target"):
        g = labelled[(labelled["domain"] == domain) | (labelled["label"] == "anomaly")]
        y = g["label"].map(LABEL_VALUE).to_numpy()
        if len(y) and y.min() != y.max():
            fpr, tpr, _ = roc_curve(y, g["score"].to_numpy(dtype=float))
            out[domain] = (fpr, tpr)
    return out


def roc_points(table: pd.DataFrame, by: str = "machine_type") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{group: (fpr, tpr)}`` from sklearn's ``roc_curve`` over labelled rows, grouped by a column (or "all").

    ``by="domain"`` gives the official source/target curves (:func:`domain_roc_points`).
    """
    if by == "domain":
        return domain_roc_points(table)
    labelled = table[table["label"].isin(list(LABEL_VALUE))]
    groups = [("all", labelled)] if by == "all" else list(labelled.groupby(by, sort=True))
    out = {}
    for key, g in groups:
        name = "/".join(str(k) for k in key) if isinstance(key, tuple) else str(key)
        y = g["label"].map(LABEL_VALUE).to_numpy()
        if y.min() == y.max():
            continue  # one class only: no curve
        fpr, tpr, _ = roc_curve(y, g["score"].to_numpy(dtype=float))
        out[name] = (fpr, tpr)
    return out


def roc_figure(table: pd.DataFrame, by: str = "machine_type", title: str = "ROC") -> go.Figure:
    """ROC curves (one per group) of a scores table with columns label and score."""
    fig = go.Figure()
    for name, (fpr, tpr) in roc_points(table, by).items():
        fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=name))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"dash": "dot", "color": "grey"}))
    fig.update_layout(title=title, xaxis_title="false positive rate", yaxis_title="true positive rate",
                      xaxis_range=[0, 1], yaxis_range=[0, 1.02], height=420)
    return fig


def histogram_counts(scores: np.ndarray, labels: Sequence[str], bins: int = 30) -> dict:
    """Shared bin edges and per-label counts (``numpy.histogram``) of normal vs anomalous scores."""
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels)
    edges = np.histogram_bin_edges(scores, bins=bins)
    counts = {lab: np.histogram(scores[labels == lab], bins=edges)[0] for lab in ("normal", "anomaly")
              if np.any(labels == lab)}
    return {"edges": edges, "counts": counts}


def score_histogram(scores: np.ndarray, labels: Sequence[str], threshold: float | None = None, bins: int = 30,
                    title: str = "Anomaly scores") -> go.Figure:
    """Overlaid histograms of normal and anomalous scores with the decision threshold as a vertical line."""
    h = histogram_counts(scores, labels, bins)
    edges = h["edges"]
    centers = (edges[:-1] + edges[1:]) / 2
    colors = {"normal": "#1f77b4", "anomaly": "#d62728"}
    fig = go.Figure()
    for lab, counts in h["counts"].items():
        fig.add_trace(go.Bar(x=centers, y=counts, width=np.diff(edges), name=lab, opacity=0.6,
                             marker_color=colors[lab]))
    if threshold is not None:
        fig.add_vline(x=float(threshold), line_dash="dash", line_color="black",
                      annotation_text=f"threshold {threshold:.3g}")
    fig.update_layout(barmode="overlay", title=title, xaxis_title="score", yaxis_title="clips", height=380)
    return fig


def domain_histogram(scores: np.ndarray, labels: Sequence[str], domains: Sequence[str],
                     threshold: float | None = None, bins: int = 30, title: str = "Anomaly scores by domain"
                     ) -> go.Figure:
    """Overlaid score histograms per (domain, label): source/target normals and anomalies on shared bins.

    The one decision threshold of the section (it covers both domains) is drawn as a vertical line.
    """
    scores = np.asarray(scores, dtype=float)
    groups = [f"{d} {lab}" for d, lab in zip(domains, labels, strict=True)]
    edges = np.histogram_bin_edges(scores, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    colors = {"source normal": "#1f77b4", "target normal": "#2ca02c", "source anomaly": "#d62728",
              "target anomaly": "#ff7f0e"}
    fig = go.Figure()
    arr = np.asarray(groups)
    for i, name in enumerate(sorted(set(groups), key=lambda g: (list(colors).index(g) if g in colors else 9, g))):
        counts = np.histogram(scores[arr == name], bins=edges)[0]
        fig.add_trace(go.Bar(x=centers, y=counts, width=np.diff(edges), name=name, opacity=0.55,
                             marker_color=colors.get(name, _PALETTE[i % len(_PALETTE)])))
    if threshold is not None:
        fig.add_vline(x=float(threshold), line_dash="dash", line_color="black",
                      annotation_text=f"threshold {threshold:.3g}")
    fig.update_layout(barmode="overlay", title=title, xaxis_title="score", yaxis_title="clips", height=380)
    return fig


# ---------------------------------------------------------------- embeddings
def load_embeddings(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an embeddings ``.npz``: the array ``z`` ([n, D]) plus per-clip string arrays.

    Accepts ``z`` or ``embeddings`` for the matrix; ``path``/``paths``, ``machine_type``/``machine_types``,
    ``machine_id``/``machine_ids``, ``label``/``labels``, ``split`` for the rest (missing ones become "").
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such embeddings file; evaluate the run to write embeddings/*.npz")
    with np.load(path, allow_pickle=False) as npz:
        keys = set(npz.files)
        z_key = next((k for k in ("z", "embeddings", "embedding", "emb") if k in keys), None)
        if z_key is None:
            raise ValueError(f"{path}: no 'z' array among {sorted(keys)}; write the embedding matrix as 'z'")
        z = np.asarray(npz[z_key], dtype=np.float32)
        out = {"z": z}
        for name, options in {"path": ("path", "paths", "file", "files"),
                              "machine_type": ("machine_type", "machine_types"),
                              "machine_id": ("machine_id", "machine_ids"),
                              "label": ("label", "labels"), "split": ("split", "splits")}.items():
            key = next((k for k in options if k in keys), None)
            out[name] = npz[key].astype(str) if key else np.array([""] * len(z))
    return out


def compute_embedding(z: np.ndarray, method: str = "tsne", seed: int = 0, perplexity: float | None = None,
                      n_neighbors: int | None = None) -> np.ndarray:
    """2-D coordinates ``[n, 2]`` of embeddings ``z [n, D]`` with sklearn's t-SNE or umap-learn's UMAP."""
    z = np.asarray(z, dtype=np.float32)
    if z.ndim != 2 or len(z) < 3:
        raise ValueError(f"embeddings: need a [n, D] matrix with n >= 3, got shape {z.shape}")
    n = len(z)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perp = perplexity if perplexity is not None else float(min(30.0, max(2.0, (n - 1) / 3)))
        return TSNE(n_components=2, perplexity=min(perp, n - 1.0), init="pca", random_state=seed,
                    max_iter=500).fit_transform(z).astype(np.float32)
    if method == "umap":
        import umap

        k = n_neighbors if n_neighbors is not None else int(min(15, n - 1))
        # A fixed random_state makes UMAP single-threaded and reproducible; fine for a few thousand clips.
        reducer = umap.UMAP(n_components=2, n_neighbors=max(2, k), random_state=seed, init="random", n_jobs=1)
        return np.asarray(reducer.fit_transform(z), dtype=np.float32)
    raise ValueError(f"method: {method!r} is not known; use 'tsne' or 'umap'")


def embedding_figure(points: np.ndarray, machine_ids: Sequence[str], labels: Sequence[str],
                     files: Sequence[str] | None = None, title: str = "Embeddings") -> go.Figure:
    """Scatter of 2-D points coloured by machine ID, circles for normal and crosses for anomalous clips.

    Hover shows the file; each point's ``customdata`` is its file path (the Results page plays it on click).
    """
    points = np.asarray(points)
    ids = np.asarray([str(m) for m in machine_ids])
    labs = np.asarray([str(lab) for lab in labels])
    files = np.asarray([str(f) for f in files]) if files is not None else np.array([""] * len(points))
    if not (len(points) == len(ids) == len(labs) == len(files)):
        raise ValueError("embedding_figure: points, machine_ids, labels and files must have the same length")
    fig = go.Figure()
    symbols = {"normal": "circle", "anomaly": "x", "unknown": "diamond", "": "circle"}
    for i, mid in enumerate(sorted(set(ids))):
        for lab in sorted(set(labs)):
            sel = (ids == mid) & (labs == lab)
            if not sel.any():
                continue
            names = [Path(f).name for f in files[sel]]
            fig.add_trace(go.Scatter(
                x=points[sel, 0], y=points[sel, 1], mode="markers", name=f"{mid} {lab}".strip(),
                legendgroup=mid, marker={"color": _PALETTE[i % len(_PALETTE)], "symbol": symbols.get(lab, "circle"),
                                         "size": 8 if lab == "anomaly" else 7, "line": {"width": 0.5}},
                customdata=files[sel], text=names, hovertemplate="%{text}<extra>" + f"{mid} {lab}" + "</extra>"))
    fig.update_layout(title=title, height=480, xaxis={"showticklabels": False}, yaxis={"showticklabels": False})
    return fig


# ---------------------------------------------------------------- training curves and spectrograms
def read_metrics(path: str | os.PathLike) -> pd.DataFrame:
    """A run's ``metrics.csv`` (Lightning CSV logger layout: one row per logged step, blanks elsewhere)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics yet; the run writes it while training")
    return pd.read_csv(path)


# Loss terms rcmae.training logs beside the total ``loss`` (shown, but hidden until clicked in the legend).
LOSS_TERMS = ("mae", "info_nce", "vcr", "supcon", "ce")


def loss_curves(metrics: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{column: (x, y)}`` for every loss column (``loss``, ``*loss*`` or a known term), x = step (else epoch, row).

    With rcmae's ``kind`` column, per-step rows are used (the per-epoch summaries repeat them).
    """
    if "kind" in metrics.columns and (metrics["kind"] == "step").any():
        metrics = metrics[metrics["kind"] == "step"]
    xcol = next((c for c in ("step", "global_step", "epoch") if c in metrics.columns), None)
    out = {}
    for col in metrics.columns:
        if not ("loss" in col.lower() or col in LOSS_TERMS) or not pd.api.types.is_numeric_dtype(metrics[col]):
            continue
        keep = metrics[col].notna()
        if not keep.any():
            continue
        x = metrics.loc[keep, xcol].to_numpy() if xcol else np.flatnonzero(keep.to_numpy())
        out[col] = (x, metrics.loc[keep, col].to_numpy(dtype=float))
    return out


def loss_figure(metrics: pd.DataFrame | str | os.PathLike, title: str = "Training losses") -> go.Figure:
    """Loss curves from a ``metrics.csv`` file or frame; each stage (pretrain/finetune) gets its own traces."""
    frame = metrics if isinstance(metrics, pd.DataFrame) else read_metrics(metrics)
    xname = next((c for c in ("step", "global_step", "epoch") if c in frame.columns), "row")
    parts = list(frame.groupby("stage", sort=False)) if "stage" in frame.columns else [("", frame)]
    # Each stage counts its steps from the start: side-by-side panels instead of overlapping curves.
    fig = make_subplots(rows=1, cols=max(1, len(parts)), subplot_titles=[str(s) for s, _ in parts] or None)
    for i, (stage, part) in enumerate(parts, start=1):
        for col, (x, y) in loss_curves(part).items():
            name = f"{stage} {col}".strip()
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name, marker={"size": 4},
                                     visible=True if "loss" in col.lower() else "legendonly"), row=1, col=i)
        fig.update_xaxes(title_text=xname, row=1, col=i)
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_layout(title=title, height=380)
    return fig


def spectrogram_figure(logmel: np.ndarray, sample_rate: int = 16000, hop_length: int = 512,
                       title: str = "Log-mel spectrogram", zmin: float | None = None,
                       zmax: float | None = None, colorscale: str = "Viridis") -> go.Figure:
    """Heatmap of a log-mel ``[F, T]`` in dB, time in seconds on x and mel bin on y."""
    logmel = np.asarray(logmel, dtype=float)
    if logmel.ndim == 3 and logmel.shape[0] == 1:
        logmel = logmel[0]
    if logmel.ndim != 2:
        raise ValueError(f"logmel: expected [F, T], got shape {logmel.shape}")
    t = np.arange(logmel.shape[1]) * hop_length / sample_rate
    fig = go.Figure(go.Heatmap(z=logmel, x=t, y=np.arange(logmel.shape[0]), colorscale=colorscale, zmin=zmin,
                               zmax=zmax, colorbar={"title": "dB"}))
    fig.update_layout(title=title, xaxis_title="time (s)", yaxis_title="mel bin", height=300,
                      margin={"l": 40, "r": 10, "t": 40, "b": 40})
    return fig


def monitor_figure(series: pd.DataFrame, events: pd.DataFrame | None = None, threshold: float | None = None,
                   title: str = "Anomaly score over time") -> go.Figure:
    """Score time series of ``rcmae monitor`` (``center_s``, ``score``) with the threshold and shaded events."""
    fig = go.Figure(go.Scatter(x=series["center_s"], y=series["score"], mode="lines+markers", name="score",
                               marker={"size": 5}, customdata=series[["start_s", "end_s"]].to_numpy(),
                               hovertemplate="t=%{x:.1f} s<br>score=%{y:.4f}<extra></extra>"))
    if threshold is not None:
        fig.add_hline(y=threshold, line_dash="dash", line_color="firebrick",
                      annotation_text=f"threshold {threshold:.4g}", annotation_position="top left")
    for _, ev in (events if events is not None else pd.DataFrame()).iterrows():
        fig.add_vrect(x0=ev["start_s"], x1=ev["end_s"], fillcolor="firebrick", opacity=0.15, line_width=0)
    fig.update_layout(title=title, xaxis_title="time (s, window centre)", yaxis_title="anomaly score", height=380,
                      margin={"l": 40, "r": 10, "t": 50, "b": 40}, clickmode="event+select")
    return fig
