"""What the workspace holds, as tables for the pages: data sets, runs, banks, benchmarks, results."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from rcmae.workspace import Workspace


# ---------------------------------------------------------------- workspace listings
def list_datasets(ws: Workspace) -> list[Path]:
    """Data folders in ``<workspace>/data`` (each sub-folder is one data set), demo first."""
    if not ws.data.is_dir():
        return []
    folders = [p for p in sorted(ws.data.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    return sorted(folders, key=lambda p: (p.name != "demo", p.name))


def list_runs(ws: Workspace) -> list[Path]:
    """Run folders (holding ``run.json``) in ``<workspace>/runs``, newest first."""
    if not ws.runs.is_dir():
        return []
    runs = [p for p in ws.runs.iterdir() if (p / "run.json").is_file()]
    return sorted(runs, key=lambda p: (p / "run.json").stat().st_mtime, reverse=True)


def list_banks(ws: Workspace) -> list[Path]:
    """Augmentation banks (holding ``manifest.csv``) in ``<workspace>/banks``."""
    if not ws.banks.is_dir():
        return []
    return sorted(p for p in ws.banks.iterdir() if (p / "manifest.csv").is_file())


def list_benchmarks(ws: Workspace) -> list[Path]:
    """Benchmark folders (holding ``benchmark.json``) in ``<workspace>/benchmarks``, newest first."""
    if not ws.benchmarks.is_dir():
        return []
    found = [p for p in ws.benchmarks.iterdir() if (p / "benchmark.json").is_file()]
    return sorted(found, key=lambda p: (p / "benchmark.json").stat().st_mtime, reverse=True)


def list_recordings(ws: Workspace) -> list[Path]:
    """Long recordings in ``<workspace>/recordings`` (``make app`` puts the demo recording there), by name."""
    folder = ws.root / "recordings"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".wav", ".flac") and p.is_file())


def guess_machine(scorer, path: str | os.PathLike) -> str | None:
    """``"type/id"`` of a recording from its folders and name (``rcmae.deploy.monitor.resolve_unit``), or None."""
    from rcmae.deploy.monitor import MonitorError, resolve_unit

    if not path:
        return None
    try:
        return "/".join(resolve_unit(scorer, path, None, None))
    except MonitorError:
        return None


def new_name(parent: Path, stem: str) -> str:
    """``<stem>-<YYYYmmdd-HHMMSS>``, made unique inside ``parent``."""
    base = f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', stem).strip('-') or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, i = base, 1
    while (parent / name).exists():
        i += 1
        name = f"{base}-{i}"
    return name


def read_progress(folder: str | os.PathLike | None) -> dict | None:
    """A run's ``progress.json`` (stage, epoch, epochs, step, steps, loss, state), or None."""
    if not folder:
        return None
    from rcmae.files import read_json

    path = Path(folder) / "progress.json"
    try:
        return read_json(path)
    except (FileNotFoundError, ValueError):
        return None


def progress_fraction(progress: dict | None) -> float:
    """Fraction done of what the job does now, from ``progress.json``: fitting scorers (``fit_step`` of
    ``fit_steps``), evaluating (``eval_step`` of ``eval_steps``), else training (steps, else epochs)."""
    if not progress:
        return 0.0
    if progress.get("state") == "done":
        return 1.0
    if progress.get("state") == "fitting" and progress.get("fit_steps"):
        return float(min(1.0, max(0.0, (progress.get("fit_step") or 0) / progress["fit_steps"])))
    if progress.get("stage") == "evaluate" and progress.get("eval_steps"):
        return float(min(1.0, max(0.0, (progress.get("eval_step") or 0) / progress["eval_steps"])))
    steps, step = progress.get("steps") or 0, progress.get("step") or 0
    if steps:
        return float(min(1.0, max(0.0, step / steps)))
    epochs, epoch = progress.get("epochs") or 0, progress.get("epoch") or 0
    return float(min(1.0, max(0.0, epoch / epochs))) if epochs else 0.0


def progress_label(progress: dict | None) -> str:
    """One line of what a run is doing now: training (epoch, step, loss), fitting scorer k of n, or evaluating."""
    if not progress:
        return ""
    stage = progress.get("stage") or ""
    if progress.get("state") == "fitting":
        k, n = (progress.get("fit_step") or 0), (progress.get("fit_steps") or 0)
        what = progress.get("scorer") or ""
        return f"{stage}: fitting scorers, {k}/{n}" + (f" ({what})" if what else "")
    if stage in ("evaluate", "fit"):
        k, n = progress.get("eval_step") or 0, progress.get("eval_steps") or 0
        what = progress.get("scorer") or ""
        done = " done" if progress.get("state") == "done" else ""
        return (f"{stage}{done}: scorer {k}/{n}" + (f" ({what})" if what else "")) if n else f"{stage}{done}"
    label = (f"{stage} epoch {progress.get('epoch')}/{progress.get('epochs')}, "
             f"step {progress.get('step')}/{progress.get('steps')}")
    return label + (f", loss {progress['loss']:.4f}" if progress.get("loss") is not None else "")


def chain_lines(chain: Sequence) -> list[str]:
    """One markdown line per job of a chain: its state, and what it does now (from its run's progress.json)."""
    icons = {"done": ":material/check_circle:", "running": ":material/progress_activity:",
             "queued": ":material/schedule:"}
    lines = []
    for job in chain:
        icon = icons.get(job.state, ":material/error:")
        took = f" in {job.duration:.0f} s" if job.state == "done" and job.duration is not None else ""
        now = ""
        if job.state == "running":
            label = progress_label(read_progress(job.out)) if job.kind in ("fit", "pretrain", "finetune",
                                                                           "evaluate") else ""
            now = f": {label}" if label else f" ({job.duration or 0:.0f} s)"
        lines.append(f"{icon} {job.name}: {job.state}{took}{now}")
    return lines


def chain_eta(chain: Sequence, history: Sequence = ()) -> str:
    """The remaining time of a chain: the running job's rate so far, and earlier durations of the queued kinds."""
    left, known = 0.0, True
    for job in chain:
        if job.state == "running":
            frac = progress_fraction(read_progress(job.out)) if job.kind != "demo-data" else 0.0
            if frac > 0.05 and job.duration:
                left += job.duration * (1.0 - frac) / frac
            else:
                known = False
        elif job.state == "queued":
            past = [j.duration for j in history if j.kind == job.kind and j.state == "done" and j.duration]
            if past:
                left += sorted(past)[len(past) // 2]
            else:
                known = False
    if not known or left <= 0:
        return ""
    return f"About {left:.0f} s left" if left < 120 else f"About {left / 60:.0f} min left"


# ---------------------------------------------------------------- data page
def data_overview(folder: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame, list[tuple[str, str]]]:
    """``(index, count table, problems)`` of a data folder; files that fit no layout are problems, not errors."""
    from rcmae.data.index import count_table, index_dataset

    index = index_dataset(folder, strict=False)
    return index, count_table(index), list(index.attrs.get("skipped", []))


def count_matrix(counts: pd.DataFrame) -> pd.DataFrame:
    """A count table as one row per (machine_type, machine_id) and one column per ``"<split> <label>"``.

    Columns run train before test, normal before anomaly before unknown; missing combinations are 0.
    """
    wide = counts.pivot_table(index=["machine_type", "machine_id"], columns=["split", "label"], values="clips",
                              fill_value=0, aggfunc="sum")
    order = {"train": 0, "test": 1, "normal": 0, "anomaly": 1, "unknown": 2}
    wide = wide[sorted(wide.columns, key=lambda c: (order.get(c[0], 9), order.get(c[1], 9)))]
    wide.columns = [f"{split} {label}" for split, label in wide.columns]
    return wide.reset_index().astype({c: int for c in wide.columns})


def check_clips(paths: Sequence[str], progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Problems of each clip (``rcmae.data.audio.check_clip``): unreadable, silent, wrong rate...; a row each."""
    from rcmae.data.audio import check_clip

    rows = []
    for i, path in enumerate(paths):
        for problem in check_clip(path):
            rows.append({"path": str(path), "problem": problem})
        if progress is not None:
            progress(i + 1, len(paths))
    return pd.DataFrame(rows, columns=["path", "problem"])


# ---------------------------------------------------------------- results page
def eval_results(run: str | os.PathLike) -> dict[str, dict]:
    """``{scorer: results}`` of an evaluated run (``eval/results.<scorer>.json``; ``default`` when only one)."""
    from rcmae.evaluation.metrics import load_results

    eval_dir = Path(run) / "eval"
    found = {}
    for path in sorted(eval_dir.glob("results.*.json")):
        found[path.name[len("results."):-len(".json")]] = load_results(path)
    if not found and (eval_dir / "results.json").is_file():
        found["default"] = load_results(eval_dir / "results.json")
    return found


def score_table(run: str | os.PathLike, scorer: str) -> pd.DataFrame:
    """Per-clip test scores of one scorer: path, machine_type, machine_id, label, score, threshold, decision.

    Reads ``eval/scores.csv`` (every scorer's columns); falls back to the challenge CSVs of ``eval/<scorer>/``.
    """
    from rcmae.views import load_score_table

    eval_dir = Path(run) / "eval"
    csv = eval_dir / "scores.csv"
    if csv.is_file():
        try:
            frame = pd.read_csv(csv, dtype={"machine_id": str, "machine_type": str, "path": str, "label": str})
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
            raise ValueError(f"{csv}: empty or torn ({str(err).splitlines()[0]}); re-run evaluate on this run") \
                from err
        if f"score_{scorer}" in frame.columns:
            table = pd.DataFrame({
                "path": frame["path"], "machine_type": frame["machine_type"], "machine_id": frame["machine_id"],
                "label": frame["label"], "score": frame[f"score_{scorer}"],
                "threshold": frame.get(f"threshold_{scorer}"), "decision": frame.get(f"decision_{scorer}")})
            # DCASE 2021+ runs: the clip's domain and attributes, for the domain-split plots.
            for col in ("domain", "attributes"):
                if col in frame.columns:
                    # An all-empty column is read as float (NaN): cast first, then blank the missing values.
                    table[col] = frame[col].astype(object).where(frame[col].notna(), "").astype(str)
            return table
    folder = eval_dir / scorer if (eval_dir / scorer).is_dir() else eval_dir
    return load_score_table(folder).assign(threshold=np.nan, decision=None)


def embedding_files(run: str | os.PathLike) -> dict[str, Path]:
    """``{space: npz}`` of a run's ``embeddings/`` (``pretrain``, ``finetune``)."""
    found = {p.stem: p for p in (Path(run) / "embeddings").glob("*.npz") if not p.name.startswith(".")}
    # Pretrained before fine-tuned, as the paper's Figures 3 and 4.
    return dict(sorted(found.items(), key=lambda kv: ({"pretrain": 0, "finetune": 1}.get(kv[0], 2), kv[0])))


def benchmark_results(folder: str | os.PathLike) -> tuple[list[dict], str]:
    """A benchmark's rows as results-like dicts (per_type / average means) and its Markdown table."""
    from rcmae.files import read_json

    folder = Path(folder)
    bench = read_json(folder / "benchmark.json")
    rows = []
    for r in bench.get("rows", []):
        if r.get("status") == "failed":
            continue
        rows.append({"system": r["row"],
                     "per_type": {t: {m: v[m]["mean"] for m in ("auc", "pauc")} for t, v in r["per_type"].items()},
                     "average": {m: r["average"][m]["mean"] for m in ("auc", "pauc")}})
    table = (folder / "table.md").read_text() if (folder / "table.md").is_file() else ""
    return rows, table


def score_with_progress(detector, paths: Sequence[str | os.PathLike], scorer: str | None = None,
                        machine_type: str | None = None, machine_id: str | None = None,
                        progress: Callable[[int, int], None] | None = None, chunk: int = 64) -> list[dict]:
    """:meth:`Detector.score_paths` in chunks, calling ``progress(done, total)`` after each (the Score page's bar)."""
    from rcmae.scorers.detector import expand_wavs

    files = expand_wavs(paths)
    rows: list[dict] = []
    for start in range(0, len(files), chunk):
        rows += detector.score_paths(files[start:start + chunk], scorer=scorer, machine_type=machine_type,
                                     machine_id=machine_id)
        if progress is not None:
            progress(len(rows), len(files))
    return rows


def score_rows_table(rows: Sequence[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Detector rows -> (one row per clip: file, type, id, score, threshold, decision, error;
    per-ID probabilities, one column per class)."""
    table = pd.DataFrame([{"file": Path(r["path"]).name, "machine_type": r["machine_type"],
                           "machine_id": r["machine_id"], "scorer": r["scorer"], "score": r["score"],
                           "threshold": r["threshold"], "decision": r["decision"] or "", "error": r["error"] or "",
                           "note": r.get("note") or ""}
                          for r in rows])
    probs = pd.DataFrame([{"file": Path(r["path"]).name, **(r.get("probs") or {})} for r in rows if r.get("probs")])
    return table, probs
