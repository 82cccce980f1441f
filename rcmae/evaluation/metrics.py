"""AUC / pAUC, their DCASE aggregation, ``results.json`` and the official challenge CSV files.

Conventions (DCASE 2020 Task 2, y-kawagu/dcase2020_task2_baseline ``01_test.py``): anomaly = 1,
``roc_auc_score(y, s)`` and ``roc_auc_score(y, s, max_fpr=0.1)`` (McClish-standardised) per machine ID,
the arithmetic mean per machine type, and papers average the per-type means. From 2021 the
official code also reports harmonic means, which punish one bad ID harder.

DCASE 2021-2025 data (sections, source/target domains) also gets the official evaluators' numbers
(:func:`evaluate_domains`, docs/metrics.md has the formulas):

- 2022-2025 (nttcslab/dcase2023_task2_evaluator, dcase2024_task2_evaluator): per section AUC(source) over the
  source normals and *all* anomalies, AUC(target) likewise, pAUC over every clip of the section, precision /
  recall / F1 per domain from the decisions; official score = harmonic mean of [AUC(source)..., AUC(target)...,
  pAUC...] over every (type, section), each floored at ``sys.float_info.epsilon``.
- 2021 (y-kawagu/dcase2021_task2_evaluator): every (section, domain) is its own test set (that domain's normals
  and anomalies); official score = harmonic mean of [AUC, pAUC] over every (type, section, domain).
"""

from __future__ import annotations

import csv
import io
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import hmean
from sklearn.metrics import roc_auc_score, roc_curve

from rcmae.files import atomic_write_text, read_json, write_json

LABELS = {"normal": 0, "anomaly": 1}
DOMAINS = ("source", "target")
# The evaluators floor every value at this before a harmonic mean (an AUC of 0 would make it undefined).
EPS = sys.float_info.epsilon
_DECISIONS = {"anomaly": 1, "normal": 0, "1": 1, "0": 0, 1: 1, 0: 0}  # True/False hash as 1/0


def _check(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"y_true {y.shape} and scores {s.shape} must be 1-D arrays of the same length")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf; check the scorer's output")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold 0 (normal) and 1 (anomaly) only")
    if y.min() == y.max():
        raise ValueError("AUC needs both normal (0) and anomalous (1) clips; this set has only one class")
    return y.astype(int), s


def auc_pauc(y_true, scores, max_fpr: float = 0.1, standardized: bool = True) -> tuple[float, float]:
    """ROC AUC and partial AUC over FPR in [0, max_fpr], as fractions in [0, 1]; anomaly = 1.

    Args:
        y_true: 0 for normal, 1 for anomalous clips.
        scores: higher means more anomalous.
        max_fpr: upper FPR bound of the partial AUC.
        standardized: True gives the McClish-standardised value that
            ``sklearn.metrics.roc_auc_score(max_fpr=...)`` returns and every DCASE table reports
            (chance = 0.5); False gives the raw partial area divided by ``max_fpr`` (the paper's Eq. 12,
            chance = max_fpr / 2).
    """
    if not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
    y, s = _check(y_true, scores)
    auc = float(roc_auc_score(y, s))
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    # Area under the ROC from 0 to max_fpr, the curve cut at max_fpr by linear interpolation.
    stop = np.searchsorted(fpr, max_fpr, side="right")
    x = np.append(fpr[:stop], max_fpr)
    yv = np.append(tpr[:stop], np.interp(max_fpr, fpr, tpr))
    area = float(np.trapezoid(yv, x))
    if standardized:
        min_area = 0.5 * max_fpr**2
        pauc = 0.5 * (1 + (area - min_area) / (max_fpr - min_area))
    else:
        pauc = area / max_fpr
    return auc, float(pauc)


def _means(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    # hmean is undefined for zeros; an AUC of exactly 0 makes the harmonic mean 0.
    h = 0.0 if np.any(arr <= 0) else float(hmean(arr))
    return float(arr.mean()), h


def evaluate_scores(table: pd.DataFrame, system: str, data: str, max_fpr: float = 0.1) -> dict:
    """Per-ID, per-type and overall AUC/pAUC of a scores table, in the ``results.json`` shape.

    Args:
        table: one row per clip with columns ``path, machine_type, machine_id, label, score``;
            rows labelled "unknown" (unlabelled evaluation clips) are ignored here.
        system: the system's name, recorded as is.
        data: the data set's path or name, recorded as is.
    """
    missing = {"path", "machine_type", "machine_id", "label", "score"} - set(table.columns)
    if missing:
        raise ValueError(f"scores table lacks columns {sorted(missing)}")
    labelled = table[table["label"].isin(list(LABELS))]
    per_id, skipped = [], []
    for (mtype, mid), group in labelled.groupby(["machine_type", "machine_id"], sort=True):
        y = group["label"].map(LABELS).to_numpy()
        n_anomaly = int(y.sum())
        n_normal = int(len(y) - n_anomaly)
        if n_normal == 0 or n_anomaly == 0:
            skipped.append({"machine_type": mtype, "machine_id": mid, "reason": "needs normal and anomalous clips"})
            continue
        auc, pauc = auc_pauc(y, group["score"].to_numpy(), max_fpr=max_fpr)
        per_id.append({"machine_type": mtype, "machine_id": mid, "auc": auc, "pauc": pauc,
                       "n_normal": n_normal, "n_anomaly": n_anomaly})
    per_type = {}
    for mtype in sorted({r["machine_type"] for r in per_id}):
        rows = [r for r in per_id if r["machine_type"] == mtype]
        auc, auc_h = _means([r["auc"] for r in rows])
        pauc, pauc_h = _means([r["pauc"] for r in rows])
        per_type[mtype] = {"auc": auc, "pauc": pauc, "auc_hmean": auc_h, "pauc_hmean": pauc_h}
    if per_type:
        average = {
            "auc": float(np.mean([v["auc"] for v in per_type.values()])),
            "pauc": float(np.mean([v["pauc"] for v in per_type.values()])),
        }
    else:
        average = {"auc": None, "pauc": None}
    results = {"system": system, "data": str(data), "max_fpr": max_fpr, "per_id": per_id, "per_type": per_type,
               "average": average, "skipped_ids": skipped}
    if has_domain_columns(labelled):
        results.update(evaluate_domains(labelled, max_fpr=max_fpr))
    return results


# ---------------------------------------------------------------- DCASE 2021-2025: domains and the official score
def has_domain_columns(table: pd.DataFrame) -> bool:
    """True when every row of ``table`` has a section and some have a source/target domain (DCASE 2021+)."""
    if table.empty or not {"section", "domain"} <= set(table.columns):
        return False
    return bool(table["section"].astype(str).str.len().gt(0).all() and table["domain"].isin(DOMAINS).any())


def decision_metrics(y_true, decisions) -> tuple[float, float, float]:
    """Precision, recall and F1 of 0/1 decisions (anomaly = 1), as the official evaluators compute them.

    ``tp / max(tp + fp, eps)``, ``tp / max(tp + fn, eps)``, ``2 p r / max(p + r, eps)`` with
    ``eps = sys.float_info.epsilon``: no alarm at all gives precision 0, not an error.
    """
    y = np.asarray(y_true, dtype=int)
    d = np.asarray(decisions, dtype=int)
    if y.shape != d.shape:
        raise ValueError(f"y_true {y.shape} and decisions {d.shape} must have the same length")
    tp = float(np.sum((y == 1) & (d == 1)))
    fp = float(np.sum((y == 0) & (d == 1)))
    fn = float(np.sum((y == 1) & (d == 0)))
    precision = tp / max(tp + fp, EPS)
    recall = tp / max(tp + fn, EPS)
    return precision, recall, 2.0 * precision * recall / max(precision + recall, EPS)


def _decisions(table: pd.DataFrame) -> np.ndarray | None:
    """The table's ``decision`` column as 0/1, or None when it is absent or incomplete."""
    if "decision" not in table.columns:
        return None
    values = [_DECISIONS.get(v if not isinstance(v, float) or not np.isnan(v) else None) for v in table["decision"]]
    if any(v is None for v in values):
        return None
    return np.asarray(values, dtype=int)


def _fmean(values: list[float]) -> float:
    return float(np.mean(values))


def _fhmean(values: list[float]) -> float:
    # The evaluators' harmonic mean: every value floored at float epsilon first.
    return float(hmean(np.maximum(np.asarray(values, dtype=np.float64), EPS)))


def _domain_summary(rows: list[dict]) -> dict:
    """Arithmetic/harmonic means over sections and domains, as the evaluator's result.csv lists them.

    AUC, precision, recall and F1 pool the source and the target values; pAUC (one per section) enters
    twice, once per domain, exactly as the evaluator's table builds it (the means are unaffected).
    """
    metrics = {"auc": ("auc_source", "auc_target"), "pauc": ("pauc", "pauc"),
               "precision": ("precision_source", "precision_target"), "recall": ("recall_source", "recall_target"),
               "f1": ("f1_source", "f1_target")}
    out: dict[str, dict] = {"amean": {}, "hmean": {}, "hmean_source": {}, "hmean_target": {}}
    for name, (src, tgt) in metrics.items():
        s_vals, t_vals = [r[src] for r in rows], [r[tgt] for r in rows]
        if any(v is None for v in s_vals + t_vals):
            for key in out:
                out[key][name] = None
            continue
        out["amean"][name] = _fmean(s_vals + t_vals)
        out["hmean"][name] = _fhmean(s_vals + t_vals)
        out["hmean_source"][name] = _fhmean(s_vals)
        out["hmean_target"][name] = _fhmean(t_vals)
    return out


def section_metrics(y_true, scores, domains, decisions=None, max_fpr: float = 0.1) -> dict:
    """The DCASE 2022-2025 numbers of one section (one machine type's section).

    Args:
        y_true: 0 normal / 1 anomaly per clip.
        scores: anomaly scores (higher = more anomalous).
        domains: ``"source"`` / ``"target"`` per clip (``""`` when unknown: such normals enter pAUC only).
        decisions: optional 0/1 decisions per clip.

    Returns:
        ``auc_source`` (source normals + all anomalies), ``auc_target`` (target normals + all anomalies),
        ``auc_all`` and ``pauc`` (all clips), ``precision_/recall_/f1_{source,target}`` (clips of that domain;
        None without decisions), and the clip counts. An AUC whose domain has no normal clip is None.
    """
    y, s = _check(y_true, scores)
    dom = np.asarray(domains, dtype=str)
    auc_all, pauc = auc_pauc(y, s, max_fpr=max_fpr)
    row: dict = {"auc_all": auc_all, "pauc": pauc, "n_anomaly": int(y.sum())}
    for d in DOMAINS:
        in_dom = dom == d
        row[f"n_{d}_normal"] = int(np.sum(in_dom & (y == 0)))
        row[f"n_{d}_anomaly"] = int(np.sum(in_dom & (y == 1)))
        sel = in_dom | (y == 1)
        row[f"auc_{d}"] = float(roc_auc_score(y[sel], s[sel])) if row[f"n_{d}_normal"] else None
        if decisions is None or not in_dom.any():
            p = r = f = None
        else:
            p, r, f = decision_metrics(y[in_dom], np.asarray(decisions)[in_dom])
        row[f"precision_{d}"], row[f"recall_{d}"], row[f"f1_{d}"] = p, r, f
    return row


def evaluate_domains(table: pd.DataFrame, max_fpr: float = 0.1) -> dict:
    """The DCASE 2021-2025 results of a labelled scores table with ``section`` and ``domain`` columns.

    Returns the ``results.json`` keys for domain-shift data:

    - ``per_section``: one row per (machine_type, section) (:func:`section_metrics` plus the names);
    - ``domain_per_type``: per machine type the arithmetic means over its sections of ``auc_source``,
      ``auc_target``, ``pauc`` (the papers' per-type table) and the evaluator's ``amean``/``hmean``/
      ``hmean_source``/``hmean_target`` rows;
    - ``official``: the 2022-2025 official ``score`` (floored harmonic mean of every AUC(source), AUC(target) and
      pAUC), ``amean`` (their arithmetic mean, the evaluator's "TOTAL score a-mean"), ``auc_amean`` (mean of the
      source and target AUCs, its "arithmetic mean"), ``hmean_source``/``hmean_target`` and
      ``amean_source``/``amean_target`` (source-only and target-only AUC means), ``pauc_hmean``/``pauc_amean``,
      and ``over_all`` (the evaluator's rows over all types, sections and domains);
    - ``dcase2021``: 2021's definition (each section and domain a test set of its own): ``per_section_domain``
      rows, the official ``score`` (floored harmonic mean of every AUC and pAUC) and its means;
    - ``skipped_sections``: sections that lack normals of a domain (no AUC for it; left out of the scores).
    """
    labelled = table[table["label"].isin(list(LABELS))].reset_index(drop=True)
    decisions_all = _decisions(labelled)
    per_section, skipped = [], []
    for (mtype, section), group in labelled.groupby(["machine_type", "section"], sort=True):
        y = group["label"].map(LABELS).to_numpy()
        if y.min() == y.max():
            skipped.append({"machine_type": mtype, "section": section, "reason": "needs normal and anomalous clips"})
            continue
        dec = None if decisions_all is None else decisions_all[labelled.index.get_indexer(group.index)]
        row = section_metrics(y, group["score"].to_numpy(), group["domain"].astype(str).to_numpy(), dec, max_fpr)
        missing = [d for d in DOMAINS if row[f"auc_{d}"] is None]
        if missing:
            skipped.append({"machine_type": mtype, "section": section,
                            "reason": f"no {' or '.join(missing)} normal clips"})
        per_section.append({"machine_type": mtype, "section": section, **row})
    complete = [r for r in per_section if r["auc_source"] is not None and r["auc_target"] is not None]
    per_type = {}
    for mtype in sorted({r["machine_type"] for r in complete}):
        rows = [r for r in complete if r["machine_type"] == mtype]
        per_type[mtype] = {"auc_source": _fmean([r["auc_source"] for r in rows]),
                           "auc_target": _fmean([r["auc_target"] for r in rows]),
                           "pauc": _fmean([r["pauc"] for r in rows]), **_domain_summary(rows)}
    official: dict = {"score": None}
    if complete:
        src = [r["auc_source"] for r in complete]
        tgt = [r["auc_target"] for r in complete]
        pauc = [r["pauc"] for r in complete]
        official = {"score": _fhmean(src + tgt + pauc), "amean": _fmean(src + tgt + pauc),
                    "auc_amean": _fmean(src + tgt), "hmean_source": _fhmean(src), "hmean_target": _fhmean(tgt),
                    "amean_source": _fmean(src), "amean_target": _fmean(tgt), "pauc_hmean": _fhmean(pauc),
                    "pauc_amean": _fmean(pauc), "n_sections": len(complete), "over_all": _domain_summary(complete)}
    return {"per_section": per_section, "domain_per_type": per_type, "official": official,
            "dcase2021": evaluate_dcase2021(labelled, max_fpr=max_fpr), "skipped_sections": skipped}


def evaluate_dcase2021(table: pd.DataFrame, max_fpr: float = 0.1) -> dict:
    """DCASE 2021's definition: each (machine type, section, domain) is scored on its own clips.

    AUC and pAUC use that domain's normal *and anomalous* clips only (2022+ pools all anomalies of the
    section into both AUCs and takes pAUC over both domains). The official score is the harmonic mean of
    every AUC and pAUC, each floored at float epsilon; ``amean``/``hmean``/``hmean_source``/``hmean_target``
    are the evaluator's rows over all (type, section, domain) for AUC, pAUC, precision, recall and F1.
    Clips of unknown domain are left out. (The 2021 evaluator's per-type source/target rows slice its list by
    the number of machine types instead of sections; the rows over everything, reported here, are right.)
    """
    labelled = table[table["label"].isin(list(LABELS)) & table["domain"].isin(DOMAINS)].reset_index(drop=True)
    decisions_all = _decisions(labelled)
    rows, skipped = [], []
    for (mtype, section, domain), group in labelled.groupby(["machine_type", "section", "domain"], sort=True):
        y = group["label"].map(LABELS).to_numpy()
        if y.min() == y.max():
            skipped.append({"machine_type": mtype, "section": section, "domain": domain,
                            "reason": "needs normal and anomalous clips of this domain"})
            continue
        auc, pauc = auc_pauc(y, group["score"].to_numpy(), max_fpr=max_fpr)
        row = {"machine_type": mtype, "section": section, "domain": domain, "auc": auc, "pauc": pauc,
               "precision": None, "recall": None, "f1": None,
               "n_normal": int(len(y) - y.sum()), "n_anomaly": int(y.sum())}
        if decisions_all is not None:
            dec = decisions_all[labelled.index.get_indexer(group.index)]
            row["precision"], row["recall"], row["f1"] = decision_metrics(y, dec)
        rows.append(row)
    out: dict = {"per_section_domain": rows, "score": None, "skipped": skipped}
    if not rows:
        return out
    out["score"] = _fhmean([r["auc"] for r in rows] + [r["pauc"] for r in rows])
    for key, sel in (("amean", rows), ("hmean", rows), ("hmean_source", [r for r in rows if r["domain"] == "source"]),
                     ("hmean_target", [r for r in rows if r["domain"] == "target"])):
        fn = _fmean if key == "amean" else _fhmean
        out[key] = {m: (fn([r[m] for r in sel]) if sel and all(r[m] is not None for r in sel) else None)
                    for m in ("auc", "pauc", "precision", "recall", "f1")}
    return out


def _csv_text(rows: list[list]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _is_sectioned(group: pd.DataFrame) -> bool:
    # DCASE 2021+ files are named by section; 2020 by machine ID.
    sections = group["section"] if "section" in group.columns else pd.Series([], dtype=str)
    return bool(len(sections) and sections.astype(str).str.len().gt(0).all())


# DCASE 2021's test clips: in source_test / target_test folders, or named section_XX_{source,target}_test_...
# without an attribute tail (2022+ development names always carry one, 2022+ evaluation names no domain).
_DIRS_2021 = {"source_test", "target_test"}
_NAME_2021 = re.compile(r"^section_\d{2}_(?:source|target)_test_(?:(?:normal|anomaly)_)?\d+\.wav$", re.IGNORECASE)


def is_dcase2021_clip(path: str | os.PathLike) -> bool:
    """True for a DCASE 2021-style test clip (its folder is ``source_test``/``target_test``, or its name is
    2021's ``section_XX_{source,target}_test_[normal_|anomaly_]NNNN.wav``): the 2021 submission files apply."""
    p = Path(path)
    return p.parent.name.lower() in _DIRS_2021 or bool(_NAME_2021.match(p.name))


def write_challenge_csvs(table: pd.DataFrame, out_dir: str | os.PathLike) -> list[Path]:
    """Write the DCASE 2021-2025 submission files of a scores table with sections.

    Per (machine type, section): ``anomaly_score_<type>_section_<ss>_test.csv`` (``<wav name>,<score>``) and,
    when the table has a complete ``decision`` column, ``decision_result_<type>_section_<ss>_test.csv``
    (``<wav name>,<0|1>``, 1 = anomaly); no header, rows sorted by file name (the official evaluator sorts
    both its ground truth and these rows by name before pairing them). Scores keep full float precision.

    DCASE 2021-style sections (:func:`is_dcase2021_clip`) get, in addition, the files the 2021 evaluator reads:
    ``anomaly_score_<type>_section_<ss>_<domain>_test.csv`` and
    ``decision_result_<type>_section_<ss>_<domain>_test.csv`` per domain (``source``, ``target``), each with that
    domain's clips only, in the same format.

    Returns:
        The written paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for (mtype, section), group in table.groupby(["machine_type", "section"], sort=True):
        g = group.assign(_name=group["path"].map(lambda p: Path(p).name)).sort_values("_name", kind="stable")
        parts = [(f"{mtype}_section_{section}_test.csv", g)]
        if "domain" in g.columns and any(is_dcase2021_clip(p) for p in g["path"]):
            parts += [(f"{mtype}_section_{section}_{d}_test.csv", g[g["domain"] == d])
                      for d in DOMAINS if (g["domain"] == d).any()]
        for stem, part in parts:
            rows = [[n, float(v)] for n, v in zip(part["_name"], part["score"], strict=True)]
            written.append(atomic_write_text(out_dir / f"anomaly_score_{stem}", _csv_text(rows)))
            dec = _decisions(part)
            if dec is not None:
                rows = [[n, int(v)] for n, v in zip(part["_name"], dec, strict=True)]
                written.append(atomic_write_text(out_dir / f"decision_result_{stem}", _csv_text(rows)))
    return written


def write_results(
    results: dict, table: pd.DataFrame, out_dir: str | os.PathLike, name: str = "results.json",
    challenge_csvs: bool = True,
) -> Path:
    """Write ``results.json`` (as ``name``) and, beside it, the official challenge files.

    ``anomaly_score_<type>_id_XX.csv`` holds ``<wav file name>,<score>`` rows, no header, normal clips
    then anomalous ones (sorted), as the DCASE 2020 baseline writes them; ``result.csv`` holds, per type,
    the type, ``id,AUC,pAUC``, one row per ID, ``Average`` and a blank row. DCASE 2021+ data (clips with
    sections) gets :func:`write_challenge_csvs`' ``anomaly_score_<type>_section_<ss>_test.csv`` and
    ``decision_result_<type>_section_<ss>_test.csv`` instead of the per-ID score files.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = write_json(out_dir / name, results)
    if not challenge_csvs:
        return path
    order = {"normal": 0, "anomaly": 1, "unknown": 2}
    if _is_sectioned(table):
        write_challenge_csvs(table, out_dir)
    else:
        for (mtype, mid), group in table.groupby(["machine_type", "machine_id"], sort=True):
            g = group.assign(_name=group["path"].map(lambda p: Path(p).name),
                             _o=group["label"].map(order).fillna(2))
            g = g.sort_values(["_o", "_name"])
            rows = [[n, float(s)] for n, s in zip(g["_name"], g["score"], strict=True)]
            atomic_write_text(out_dir / f"anomaly_score_{mtype}_id_{mid}.csv", _csv_text(rows))
    lines: list[list] = []
    for mtype, type_res in results["per_type"].items():
        rows = [r for r in results["per_id"] if r["machine_type"] == mtype]
        lines.append([mtype])
        lines.append(["id", "AUC", "pAUC"])
        lines.extend([r["machine_id"], r["auc"], r["pauc"]] for r in rows)
        lines.append(["Average", type_res["auc"], type_res["pauc"]])
        lines.append([])
    atomic_write_text(out_dir / "result.csv", _csv_text(lines))
    return path


def load_results(path: str | os.PathLike) -> dict:
    """Read a ``results.json`` (or a folder holding one) and check its shape."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    res = read_json(path)
    missing = {"system", "per_id", "per_type", "average"} - set(res)
    if missing:
        raise ValueError(f"{path}: not an rcmae results file (missing {sorted(missing)})")
    return res


def results_frame(results: dict) -> pd.DataFrame:
    """The per-ID rows of a results dict as a table (machine_type, machine_id, auc, pauc, n_normal, n_anomaly)."""
    return pd.DataFrame(results["per_id"],
                        columns=["machine_type", "machine_id", "auc", "pauc", "n_normal", "n_anomaly"])
