"""`evaluate_run`: score a run's test clips with every scorer and write results.json and the challenge CSVs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from rcmae.data.checks import check_labelled_test
from rcmae.data.datasets import compute_logmels
from rcmae.data.index import index_dataset
from rcmae.data.names import parse_attributes
from rcmae.evaluation.metrics import evaluate_scores, write_results
from rcmae.files import atomic_write_text, write_json
from rcmae.run.folder import read_run_json, update_progress, update_run_json, writer_lock
from rcmae.scorers import (
    INVALID_REASON,
    ScoringError,
)
from rcmae.scorers.detector import Detector
from rcmae.scorers.fitting import save_embeddings


def evaluate_run(run: str | os.PathLike, data: str | os.PathLike | None = None, scorer: str | None = None,
                 progress: bool = True, allow_partial: bool = False) -> dict[str, dict]:
    """Score every labelled test clip with every scorer (or one) and write ``eval/`` (one writer at a time)."""
    if not Path(run).is_dir():
        raise FileNotFoundError(f"{run}: run folder not found; pass --run a folder made by rcmae pretrain or fit")
    with writer_lock(run):
        return _evaluate_run(run, data, scorer, progress, allow_partial)


def _evaluate_run(run: str | os.PathLike, data: str | os.PathLike | None = None, scorer: str | None = None,
                  progress: bool = True, allow_partial: bool = False) -> dict[str, dict]:
    """Score every labelled test clip (2021+ data: every test clip) with every scorer (or one) and write ``eval/``.

    Writes ``eval/results.json`` and challenge CSVs for the default scorer, ``eval/results.<scorer>.json``
    and ``eval/<scorer>/`` (results + CSVs) for each, ``eval/scores.csv`` (every clip, score, threshold,
    decision), and adds the test rows to ``embeddings/{pretrain,finetune}.npz``.

    Returns:
        ``{scorer: results dict}`` (the ``rcmae.evaluation.metrics.evaluate_scores`` schema).
    """
    run = Path(run)
    det = Detector.load(run)
    info = read_run_json(run)
    data = Path(data) if data is not None else Path(info["data"])
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: data folder not found; pass --data")
    index = index_dataset(data)
    test = index[index["split"] == "test"]
    # DCASE 2021+ evaluation clips without ground truth (section_00_0000.wav) are scored as well, so that the
    # challenge CSVs hold every clip a submission needs; the metrics use the labelled clips only.
    test = test[test["label"].isin(["normal", "anomaly"])
                | ((test["label"] == "unknown") & test["section"].astype(str).str.len().gt(0))].reset_index(drop=True)
    if test.empty:
        raise FileNotFoundError(f"{data}: no labelled test clips (<type>/test/normal_*, anomaly_*); pass --data")
    known = set(det.units)
    unknown = test[[(t, i) not in known for t, i in zip(test["machine_type"], test["machine_id"], strict=True)]]
    if len(unknown):
        print(f"evaluate: skipping {len(unknown)} test clips of machine IDs not in the run's training data",
              file=sys.stderr)
        test = test.drop(unknown.index).reset_index(drop=True)
    if test.empty:
        raise ValueError(f"{data}: none of its test clips belong to the run's machine IDs; evaluate on the right data")
    if test["label"].isin(["normal", "anomaly"]).any():
        # Before anything is scored or written, so that earlier results stay. A wholly unlabelled 2021+
        # evaluation set is a submission: scored and decided, with nothing to measure.
        check_labelled_test(test, data)
        labelled = test[test["label"].isin(["normal", "anomaly"])]
        kinds = labelled.groupby(["machine_type", "machine_id"])["label"].nunique()
        lacking = [f"{t}/{i}" for (t, i), k in kinds.items() if k < 2]
        if lacking:
            what = (f"{len(lacking)} machine unit(s) cannot be measured (no normal or no anomalous test clips): "
                    f"{', '.join(lacking[:8])}{', ...' if len(lacking) > 8 else ''}")
            if (Path(run) / "eval" / "results.json").is_file() and not allow_partial:
                raise ValueError(f"{data}: {what}; the earlier eval/ results are kept. Pass --allow-partial to "
                                 "replace them with results that leave these units out")
            print(f"evaluate: {what}; they are left out of the metrics", file=sys.stderr)
    scorers = [det._scorer(scorer)] if scorer else list(det.scorers)
    det.ensure_fitted(scorers, progress=progress)  # only what is not current: new data, front-end or network
    x, kept, report = compute_logmels(list(test["path"]), det.logmel, det.cfg.data.sample_rate,
                                      det.cfg.data.duration, channel=det.cfg.data.channel, progress=progress,
                                      desc="test log-mels", transform=det.stats.apply)
    if report.skipped:
        print(report.summary(), file=sys.stderr)
    test = test.set_index("path").loc[kept].reset_index()
    types, ids = list(test["machine_type"].astype(str)), list(test["machine_id"].astype(str))
    # idprob's own attribute class comes from the file name only: attributes that ground-truth CSVs attach to bare
    # evaluation names must not change a submission's scores (docs/training.md).
    attributes = [parse_attributes(p) for p in test["path"]]
    out_dir = run / "eval"
    results: dict[str, dict] = {}
    scores_table = test[["path", "machine_type", "machine_id", "label"]
                        + [c for c in ("section", "domain", "attributes") if c in test.columns]].copy()
    skipped: dict[str, str] = {}
    tables: dict[str, pd.DataFrame] = {}
    for k, name in enumerate(scorers):
        update_progress(run, stage="evaluate", state="running", scorer=name, eval_step=k, eval_steps=len(scorers),
                        clips=len(x))
        try:
            scores = det.score_logmels(x, types, ids, name, attributes)
            bad = [Path(p).name for p, v in zip(test["path"], scores, strict=True) if not np.isfinite(v)]
            if bad:  # a NaN/inf score is never a normal clip, nor a metric
                raise ScoringError(f"{len(bad)} clip(s) have no finite score ({', '.join(bad[:3])}"
                                   f"{', ...' if len(bad) > 3 else ''}): {INVALID_REASON}")
        except ScoringError as err:
            # One scorer that cannot work on this run (e.g. too few clips for a covariance) must not
            # cost the user the others: report it and go on.
            skipped[name] = str(err)
            print(f"evaluate: scorer {name} skipped: {err}", file=sys.stderr)
            continue
        thr = [det.threshold(name, t, i) for t, i in zip(types, ids, strict=True)]
        # One threshold per machine ID / section covers both domains (the DCASE 2022+ rule).
        table = test.assign(score=scores, decision=[None if h is None else int(s > h)
                                                    for s, h in zip(scores, thr, strict=True)])
        res = evaluate_scores(table, system=f"rcmae-{name}", data=str(data))
        tables[name] = table
        scores_table[f"score_{name}"] = scores
        scores_table[f"threshold_{name}"] = thr
        scores_table[f"decision_{name}"] = [None if h is None else ("anomaly" if s > h else "normal")
                                            for s, h in zip(scores, thr, strict=True)]
        results[name] = res
    if not results:
        raise ScoringError(f"{run}: no scorer could score this run ({'; '.join(skipped.values())})")
    # Written only now that every scorer has finished: a failure above leaves the earlier eval/ intact.
    for name, res in results.items():
        write_results(res, tables[name], out_dir / name, name="results.json")
        write_json(out_dir / f"results.{name}.json", res)
        if name == det.default_scorer:
            write_results(res, tables[name], out_dir, name="results.json")
    if det.default_scorer not in results:
        stand_in = next(iter(results))
        print(f"evaluate: the default scorer {det.default_scorer} was skipped; eval/results.json holds {stand_in}",
              file=sys.stderr)
        write_results(results[stand_in], test.assign(
            score=scores_table[f"score_{stand_in}"],
            decision=scores_table[f"decision_{stand_in}"].map({"anomaly": 1, "normal": 0})), out_dir,
            name="results.json")
    atomic_write_text(out_dir / "scores.csv", scores_table.to_csv(index=False))
    for space in det.models:
        z = det.embed(x, space).float().cpu().numpy()
        save_embeddings(run / "embeddings" / f"{space}.npz", z, list(test["path"]), types, ids, "test",
                         list(test["label"]), keep_other=True)
    update_run_json(run, evaluated={"data": str(data.resolve()), "scorers": list(results),
                                    "default_scorer": det.default_scorer, "skipped_scorers": skipped,
                                    "average": {k: v["average"] for k, v in results.items()}})
    update_progress(run, stage="evaluate", state="done", scorer="", eval_step=len(scorers), eval_steps=len(scorers))
    return results
