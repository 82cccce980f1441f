"""Baseline detectors that write the same ``results.json`` and challenge CSVs as ``rcmae evaluate``.

- ``ae``: the official DCASE 2020 Task 2 dense autoencoder baseline (``rcmae.evaluation.baselines.ae``).
- ``knn``: a per-machine-ID nearest-neighbour score on per-clip features or a run's embeddings
  (``rcmae.evaluation.baselines.knn``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from rcmae.files import write_json

BASELINES = ("ae", "knn")


def run_baseline(
    name: str,
    data: str | os.PathLike,
    out: str | os.PathLike,
    epochs: int | None = None,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
    **kw: object,
) -> dict:
    """Run baseline ``name`` on the data folder ``data`` and write its results into ``out``.

    Args:
        name: ``"ae"`` or ``"knn"``.
        data: a data folder (any layout ``rcmae.data.index_dataset`` reads).
        out: output folder: ``results.json``, ``anomaly_score_<type>_id_XX.csv``, ``result.csv``,
            ``baseline.json`` (settings, timings, skipped files) and, for the AE, ``models/``.
        epochs: AE training epochs (default 100, the official value); ignored by ``knn``.
        seed: AE initialisation and shuffling seed.
        device: AE device (default: cuda when available, else cpu).
        progress: tqdm progress bars.
        **kw: baseline settings: AE ``AEConfig`` fields (``batch_size``, ``n_mels``, ...); kNN ``k``,
            ``metric`` (``cosine``/``euclidean``), ``embeddings`` (a run folder), ``space``
            (``finetune``/``pretrain``).

    Returns:
        The results dict (``rcmae.evaluation.metrics.evaluate_scores`` shape).
    """
    from rcmae import data as rdata
    from rcmae.evaluation import metrics

    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # A stray file that fits no layout is skipped and reported, as a bad clip is.
    index = rdata.index_dataset(data, strict=False)
    from rcmae.data.checks import check_labelled_test, drop_train_anomalies

    check_labelled_test(index, data)  # before any training or writing
    index = drop_train_anomalies(index, data)
    start = time.perf_counter()
    if name == "ae":
        from rcmae.evaluation.baselines.ae import AEConfig, run_ae

        unknown = set(kw) - set(AEConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(f"ae baseline: unknown setting(s) {sorted(unknown)}; "
                             "see rcmae.evaluation.baselines.ae.AEConfig")
        table, info = run_ae(index, out, epochs=epochs, seed=seed, device=device, progress=progress, **kw)
    else:
        from rcmae.evaluation.baselines.knn import run_knn

        unknown = set(kw) - {"k", "metric", "embeddings", "space"}
        if unknown:
            raise ValueError(f"knn baseline: unknown setting(s) {sorted(unknown)}; use k, metric, embeddings, space")
        table, info = run_knn(index, out, progress=progress, **kw)
    if table.empty:
        raise ValueError(f"{data}: no test clips could be scored; the folder needs test/ clips with training clips")
    # DCASE 2021+ data: the clips' section, domain and attributes, so that results.json gets the domain
    # metrics and the official score (decisions need thresholds, which the baselines do not fit).
    extra = [c for c in ("section", "domain", "attributes") if c not in table.columns]
    if extra and rdata.has_domains(index):
        table = table.merge(index[["path", *extra]], on="path", how="left")
    results = metrics.evaluate_scores(table, system=name, data=str(data))
    results["baseline"] = {k: v for k, v in info.items() if k != "skipped"}
    skipped = list(index.attrs.get("skipped", [])) + list(info["skipped"])
    results["skipped_files"] = [list(s) for s in skipped]
    metrics.write_results(results, table, out)
    write_json(out / "baseline.json", {"name": name, "seed": seed, "epochs": epochs, "settings": {
        k: str(v) for k, v in kw.items()}, "wall_s": time.perf_counter() - start, "n_scored": len(table)})
    for path, reason in skipped:
        print(f"skipped {path}: {reason}")
    return results
