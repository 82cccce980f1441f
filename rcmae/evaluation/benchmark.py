"""Run several detectors on the same data and put their AUC/pAUC, wall time and peak memory in one table.

Each system runs in its own child process (``python -m rcmae.evaluation.benchmark --child SPEC``), so the wall
time and the peak resident memory (``os.wait4``'s ``ru_maxrss`` of that child and its own children)
belong to that system alone, and a system that crashes is reported as failed while the others run.

Systems (``SYSTEMS``): ``rcmae`` (pretrain + finetune + evaluate with the preset; each scorer
``idprob`` / ``knn`` / ``recon`` becomes its own row ``rcmae:<scorer>``), its ablations, ``margin`` (the
angular-margin classifier, always with the ``margin`` preset: rows ``margin:idprob``, ``margin:knn``,
``margin:ensemble``), and the baselines ``ae`` (DCASE 2020 autoencoder) and ``knn`` (per-ID kNN on mean/std log-mel).

Overrides: ``KEY=VALUE`` strings go to every rcmae system's config (``pretrain.lr=1e-3``); those
prefixed ``ae.`` or ``knn.`` go to that baseline instead (``ae.epochs=10``, ``knn.k=3``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from rcmae.files import atomic_write_text, check_replaceable, current_git_commit, read_json, write_json

# One table of named systems: the rcmae ablations are override sets on the same pipeline.
# aug "bank" = the augmentation bank built once per benchmark with the backend --aug names (procedural:
# the weight-free stand-in, the default; audioldm: the paper's diffusion augmentation; specaugment: no
# bank at all); "specaugment" = time/frequency masking (paper's "without DDA"). Table 3 of the paper is
# --systems rcmae,rcmae-nodda --aug audioldm.
SYSTEMS: dict[str, dict] = {
    "rcmae": {"kind": "rcmae", "aug": "bank", "overrides": [],
              "about": "full RC-MAE: MAE + InfoNCE + VCR pretraining on augmented pairs, then SupCon + CE"},
    "rcmae-nodda": {"kind": "rcmae", "aug": "specaugment", "overrides": [],
                    "about": "without diffusion-style augmentation: time/frequency masking pairs"},
    "rcmae-novcr": {"kind": "rcmae", "aug": "bank", "overrides": ["pretrain.w_vcr=0"],
                    "about": "without the variance-covariance regulariser"},
    "rcmae-contrastive": {"kind": "rcmae", "aug": "bank", "overrides": ["pretrain.w_mae=0"],
                          "about": "contrastive only: InfoNCE + VCR, no masked reconstruction"},
    "rcmae-mae": {"kind": "rcmae", "aug": "bank", "overrides": ["pretrain.w_nce=0", "pretrain.w_vcr=0"],
                  "about": "masked autoencoder only"},
    "rcmae-nopretrain": {"kind": "rcmae", "aug": "specaugment", "overrides": [], "pretrain_epochs": 0,
                         "about": "no pretraining: fine-tuning from random initialisation"},
    "margin": {"kind": "rcmae", "aug": "specaugment", "overrides": [], "preset": "margin",
               "about": "angular-margin classifier (log-mel + Tgram, ArcFace, mixup; the margin preset): idprob, knn"},
    "ae": {"kind": "baseline", "about": "official DCASE 2020 Task 2 dense autoencoder baseline"},
    "knn": {"kind": "baseline", "about": "per-ID nearest neighbour on standardised per-clip mean/std log-mel"},
}


def machine_info() -> dict:
    """Platform, CPU model, cores, memory, GPU and torch version of this machine."""
    import psutil
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    gpu = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": gpu,
        "torch": torch.__version__,
    }


def _split_overrides(overrides: list[str]) -> tuple[list[str], dict[str, dict[str, object]]]:
    """rcmae config overrides, and ``{"ae": {...}, "knn": {...}}`` for the ``ae.``/``knn.`` prefixed ones."""
    rc, base = [], {"ae": {}, "knn": {}}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} is not KEY=VALUE (e.g. pretrain.lr=1e-3 or ae.epochs=10)")
        head, _, rest = key.strip().partition(".")
        if head in base and rest:
            base[head][rest] = _literal(value.strip())
        else:
            rc.append(item)
    return rc, base


def _literal(text: str) -> object:
    """``"10"`` -> 10, ``"1e-3"`` -> 0.001, ``"true"`` -> True; anything else stays a string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


# ---------------------------------------------------------------- child side
AUG_BACKENDS = ("procedural", "audioldm", "specaugment")


def _run_bank_child(spec: dict) -> dict:
    from rcmae.augment import bank

    options = dict(spec.get("aug_options") or {})
    if "steps" in options:
        options["steps"] = tuple(options["steps"])
    print(bank.build_bank(data=Path(spec["data"]), out=Path(spec["bank"]), backend=spec.get("backend", "procedural"),
                          seed=spec["seed"], **options), flush=True)
    return {}


def _run_child(spec: dict) -> dict:
    """Run one system for one seed (inside the child process); returns ``{row name: results dict}``."""
    out = Path(spec["out"])
    if spec["kind"] == "bank":
        return _run_bank_child(spec)
    if spec["kind"] == "baseline":
        from rcmae.evaluation.baselines import run_baseline

        kw = dict(spec["baseline_kw"])
        epochs = kw.pop("epochs", None)
        res = run_baseline(spec["system"], spec["data"], out / "baseline", epochs=epochs, seed=spec["seed"],
                           progress=True, **kw)  # tqdm goes to the system's log.txt: its progress
        return {spec["system"]: res}
    from rcmae.evaluation import evaluate as score
    from rcmae.training import stages as train

    if spec["kind"] == "rescore":
        # Only scoring: the finished run folder (the contract between training and scoring) is scored again with
        # the scorers of the code that runs now; with score.* overrides, a copy of it under them.
        run = Path(spec["run"])
        if spec.get("score_overrides"):
            from rcmae.evaluation.rescore import rescored_copy

            run = rescored_copy(run, Path(spec["out"]) / "run", spec["score_overrides"])
        results = score.evaluate_run(run, data=Path(spec["data"]), progress=False)
        return {f"{spec['system']}:{name}": res for name, res in results.items()}
    run = out / "run"
    # A run left by an earlier failed attempt starts over: the benchmark resumes per system, not per epoch.
    # Only a run folder goes (check_replaceable): anything else in its place is refused, never deleted.
    check_replaceable(run, ("run.json", "config.yaml", "progress.json"), "run folder", flag="a benchmark retry")
    shutil.rmtree(run, ignore_errors=True)
    overrides = [*spec["overrides"], f"seed={spec['seed']}"]
    train.pretrain(data=Path(spec["data"]), out=run, preset=spec["preset"], aug=spec["aug"],
                   epochs=spec.get("pretrain_epochs"), overrides=overrides, progress=False)
    train.finetune(run=run, data=Path(spec["data"]), progress=False)
    # Training never scores: evaluate fits the thresholds and train embeddings of the trained run (fit_run).
    results = score.evaluate_run(run, data=Path(spec["data"]), progress=False)
    return {f"{spec['system']}:{name}": res for name, res in results.items()}


def _child_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    try:
        rows = _run_child(spec)
    except Exception as err:  # noqa: BLE001 - any failure becomes the system's one-line error
        line = f"{type(err).__name__}: {err}".splitlines()[0]
        write_json(out / "error.json", {"error": line})
        import traceback

        traceback.print_exc()
        return 1
    write_json(out / "rows.json", rows)
    return 0


# ---------------------------------------------------------------- parent side
def _spawn(spec: dict, out: Path) -> dict:
    """Run ``spec`` in a child process; returns status, error, wall_s, peak_mib, rows."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("rows.json", "error.json"):
        (out / stale).unlink(missing_ok=True)
    spec_path = out / "spec.json"
    write_json(spec_path, spec)
    start = time.perf_counter()
    with open(out / "log.txt", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "rcmae.evaluation.benchmark", "--child", str(spec_path)],
                                stdout=log, stderr=subprocess.STDOUT)
        # wait4 (not Popen.wait) hands back this child's own rusage: its peak RSS, not the maximum over all children.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    record = {"wall_s": round(wall, 2), "peak_mib": round(usage.ru_maxrss / 1024, 1), "returncode": proc.returncode,
              "log": str(out / "log.txt"), "commit": current_git_commit(),
              # CPU seconds (user + system) of the child and its children: the cost on a shared, loaded machine.
              "cpu_s": round(usage.ru_utime + usage.ru_stime, 2)}
    if proc.returncode == 0 and (out / "rows.json").is_file():
        record.update(status="ok", error=None, rows=read_json(out / "rows.json"))
    else:
        record.update(status="failed", rows={}, error=_error_line(out, proc.returncode))
    write_json(out / "record.json", record)
    return record


def _rescore(previous: dict, system: str, data: Path, run_out: Path, overrides: list[str] = ()) -> dict:
    """Score a finished run again with the current scorers; the updated record (training numbers kept).

    ``overrides`` (the benchmark's ``--set``): its ``score.*`` items rescore a copy of the run under them
    (``rescore/run``, :func:`rescored_copy`); the record keeps them as ``rescore_overrides``.
    """
    from rcmae.evaluation.rescore import split_rescore_overrides

    try:
        score_overrides = split_rescore_overrides(run_out / "run", list(overrides))
    except (ValueError, OSError) as err:
        return {**previous, "rescore_error": str(err).splitlines()[0]}
    spec = {"kind": "rescore", "system": system, "data": str(data), "run": str(run_out / "run"),
            "out": str(run_out / "rescore"), "score_overrides": score_overrides}
    record = _spawn(spec, run_out / "rescore")
    if record["status"] != "ok":
        return {**previous, "rescore_error": record["error"]}
    updated = {**previous, "rows": record["rows"], "rescore_wall_s": record["wall_s"],
               "rescore_cpu_s": record.get("cpu_s"), "rescore_error": None, "rescore_overrides": score_overrides}
    write_json(run_out / "record.json", updated)
    return updated


def _error_line(out: Path, returncode: int) -> str:
    if (out / "error.json").is_file():
        return read_json(out / "error.json")["error"]
    lines = [ln.strip() for ln in (out / "log.txt").read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else f"child exited with status {returncode} and no output"


def _prepare_bank(data: Path, out: Path, seed: int, backend: str = "procedural",
                  aug_options: dict | None = None) -> tuple[str | None, str]:
    """Build (or resume) the augmentation bank for the systems with aug "bank" (``out/bank`` for the
    procedural backend, ``out/bank-<backend>`` otherwise)."""
    if importlib.util.find_spec("rcmae.augment.bank") is None:
        return None, f"specaugment (rcmae.augment.bank is not installed, so no {backend} bank)"
    name = "bank" if backend == "procedural" else f"bank-{backend}"
    bank = out / name
    spec = {"kind": "bank", "data": str(data), "bank": str(bank), "seed": seed, "out": str(out / f"{name}-build"),
            "backend": backend, "aug_options": dict(aug_options or {})}
    record = _spawn(spec, out / f"{name}-build")
    if record["status"] != "ok":
        return None, f"specaugment (building the {backend} bank failed: {record['error']})"
    return str(bank), f"{backend} bank {bank} (built in {record['wall_s']:.0f} s)"


def seed_stat(values: list[float | None]) -> dict:
    """``{"mean", "std", "n"}`` of the values that exist (``None`` skipped): the sample std over seeds, 0 for one."""
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0, "n": int(arr.size)}


def aggregate_runs(system_records: dict[str, dict]) -> list[dict]:
    """One row per system[:scorer]: per-type and average AUC/pAUC, wall time and peak memory over seeds."""
    rows = []
    for system, rec in system_records.items():
        runs = rec["runs"]
        ok = [r for r in runs if r["status"] == "ok"]
        if not ok:
            rows.append({"row": system, "system": system, "status": "failed", "error": runs[-1]["error"]
                         if runs else rec.get("error")})
            continue
        names = sorted({name for r in ok for name in r["rows"]})
        for name in names:
            res = [r["rows"][name] for r in ok if name in r["rows"]]
            types = sorted({t for x in res for t in x["per_type"]})
            rows.append({
                "row": name,
                "system": system,
                "status": "ok" if len(ok) == len(runs) else "partial",
                "error": next((r["error"] for r in runs if r["status"] != "ok"), None),
                "seeds": [r["seed"] for r in ok if name in r["rows"]],
                "per_type": {t: {m: seed_stat([x["per_type"].get(t, {}).get(m) for x in res]) for m in ("auc", "pauc")}
                             for t in types},
                "average": {m: seed_stat([x["average"][m] for x in res]) for m in ("auc", "pauc")},
                "wall_s": seed_stat([r["wall_s"] for r in ok]),
                "peak_mib": seed_stat([r["peak_mib"] for r in ok]),
            })
            if any(x.get("official") for x in res):
                rows[-1].update(_domain_stats(res))
    return rows


_OFFICIAL_KEYS = ("score", "hmean_source", "hmean_target", "pauc_hmean", "amean_source", "amean_target",
                  "pauc_amean")


def _domain_stats(res: list[dict]) -> dict:
    """DCASE 2021+ rows: the official score and its means, and per type source/target AUC and pAUC, over seeds."""
    types = sorted({t for x in res for t in x.get("domain_per_type", {})})
    return {
        "official": {k: seed_stat([(x.get("official") or {}).get(k) for x in res]) for k in _OFFICIAL_KEYS},
        "dcase2021_score": seed_stat([(x.get("dcase2021") or {}).get("score") for x in res]),
        "domain_per_type": {t: {m: seed_stat([x.get("domain_per_type", {}).get(t, {}).get(m) for x in res])
                                for m in ("auc_source", "auc_target", "pauc")} for t in types},
    }


def render_domain_table(bench: dict) -> list[str]:
    """Markdown lines of the DCASE 2021+ table (per type AUC source/target and pAUC, official score); [] for 2020."""
    rows = [r for r in bench["rows"] if r.get("official")]
    if not rows:
        return []
    types = sorted({t for r in rows for t in r.get("domain_per_type", {})})
    head = ["system"] + [f"{t} {m}" for t in types for m in ("AUC src", "AUC tgt", "pAUC")] + [
        "hmean AUC src", "hmean AUC tgt", "hmean pAUC", "official score", "2021 score"]
    lines = ["", "DCASE 2021-2025 protocol (docs/metrics.md): per type the mean over its sections of AUC (source "
             "normals + all anomalies), AUC (target) and pAUC (all clips); official score = harmonic mean of every "
             "section's AUC (source), AUC (target) and pAUC; 2021 score: each domain scored on its own clips.", "",
             "| " + " | ".join(head) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    for r in rows:
        cells = [r["row"]]
        for t in types:
            cells += [_cell(r["domain_per_type"].get(t, {}).get(m)) for m in ("auc_source", "auc_target", "pauc")]
        off = r["official"]
        cells += [_cell(off["hmean_source"]), _cell(off["hmean_target"]), _cell(off["pauc_hmean"]),
                  _cell(off["score"]), _cell(r["dcase2021_score"])]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return lines


def _cell(stat: dict | None, scale: float = 100.0, digits: int = 2) -> str:
    if not stat or stat["mean"] is None:
        return "-"
    text = f"{stat['mean'] * scale:.{digits}f}"
    if stat["n"] > 1:
        text += f" ± {stat['std'] * scale:.{digits}f}"
    return text


def render_table(bench: dict) -> str:
    """The Markdown report: header lines, one table (AUC/pAUC in %), failures and notes below."""
    rows = bench["rows"]
    types = sorted({t for r in rows for t in r.get("per_type", {})})
    head = ["system"] + [f"{t} {m}" for t in types for m in ("AUC", "pAUC")] + [
        "avg AUC", "avg pAUC", "wall s", "peak MiB"]
    lines = [
        f"# Benchmark on {bench['data']}",
        "",
        f"- preset `{bench['preset']}`, seeds {list(range(bench['repeat']))}, "
        f"overrides {bench['overrides'] or 'none'}",
        f"- machine: {bench['machine']['cpu']}, {bench['machine']['usable_cores']} usable cores, "
        f"GPU {', '.join(bench['machine']['gpu']) or 'none'}, torch {bench['machine']['torch']}",
        f"- date: {bench['date']}; command: `{bench['command']}`",
        f"- rcmae augmentation: {bench['augmentation']}",
        "- AUC/pAUC in % (pAUC: max FPR 0.1, McClish-standardised as in DCASE); per type: mean over its IDs; "
        "avg: mean over types" + ("; cells: mean ± std over seeds" if bench["repeat"] > 1 else ""),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|",
    ]
    for r in rows:
        if r["status"] == "failed":
            cells = [r["row"], "failed"] + ["-"] * (len(head) - 2)
        else:
            cells = [r["row"]]
            for t in types:
                cells += [_cell(r["per_type"].get(t, {}).get("auc")), _cell(r["per_type"].get(t, {}).get("pauc"))]
            cells += [_cell(r["average"]["auc"]), _cell(r["average"]["pauc"]),
                      _cell(r["wall_s"], 1.0, 1), _cell(r["peak_mib"], 1.0, 0)]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    lines += render_domain_table(bench)
    failures = [r for r in rows if r.get("error")]
    if failures:
        lines += ["", "Failures:", ""]
        lines += [f"- `{r['row']}`: {r['error']}" for r in failures]
    lines.append("")
    return "\n".join(lines)


def run_benchmark(
    data: str | os.PathLike,
    out: str | os.PathLike,
    systems: list[str],
    preset: str = "tiny",
    repeat: int = 1,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = True,
    command: str | None = None,
    aug: str = "procedural",
    aug_options: dict | None = None,
    rescore: bool = False,
) -> Path:
    """Run ``systems`` on ``data`` (seeds ``0 .. repeat-1``); write ``out/benchmark.json`` and ``out/table.md``.

    ``aug`` chooses the bank the bank-using arms (``rcmae`` and its ablations) pretrain on:
    ``procedural`` (default), ``audioldm`` (the paper's; ``aug_options["model"]`` names the weights) or
    ``specaugment`` (no bank: every arm pairs clips with time/frequency-masked twins). ``aug_options`` go
    to :func:`rcmae.augment.bank.build_bank` (``model``, ``per_clip``, ``steps``, ``t0``, ``guidance``,
    ``device``, ``allow_download``, ``prompts``, ``limit``). ``rcmae-nodda`` always uses SpecAugment.

    A system whose result for a seed is already in ``out/systems/<system>/seed<k>/record.json``
    with status ok is not run again, so an interrupted benchmark resumes. With ``rescore``, such a finished
    rcmae-kind run is scored again (``evaluate`` only, in a child process, no training) so that scorers added
    since it trained get their rows; its training wall time, memory and CPU stay in the record, the scoring
    ones go to ``rescore_wall_s`` / ``rescore_cpu_s``. ``score.*`` overrides (``--set score.ensemble=[...]``)
    rescore a copy of the run under them (``rescore/run``; the trained run is never edited); an override that
    would change training is refused for that run (``rescore_error``).

    Returns:
        ``out``.
    """
    from tqdm.auto import tqdm

    data = Path(data).resolve()
    out = Path(out).resolve()
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: data folder not found; pass --data a folder such as workspace/data/demo")
    if repeat < 1:
        raise ValueError(f"--repeat must be >= 1, got {repeat}")
    systems = [s.strip() for s in systems if s.strip()]
    if not systems:
        raise ValueError(f"--systems is empty; choose from {', '.join(SYSTEMS)}")
    rc_overrides, base_kw = _split_overrides(list(overrides))
    out.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    if aug not in AUG_BACKENDS:
        raise ValueError(f"--aug {aug!r}: use one of {', '.join(AUG_BACKENDS)}")
    augmentation, bank = "not used", None
    if any(SYSTEMS.get(s, {}).get("aug") == "bank" for s in systems):
        if aug == "specaugment":
            augmentation = "specaugment (--aug specaugment: no bank; every arm pairs clips with masked twins)"
        else:
            bank, augmentation = _prepare_bank(data, out, seed=0, backend=aug, aug_options=aug_options)
    records: dict[str, dict] = {}
    jobs = [(s, seed) for s in systems for seed in range(repeat)]
    for system, seed in tqdm(jobs, desc="benchmark", unit="run", disable=not progress):
        rec = records.setdefault(system, {"about": SYSTEMS.get(system, {}).get("about"), "runs": []})
        if system not in SYSTEMS:
            rec["runs"].append({"seed": seed, "status": "failed", "rows": {}, "wall_s": None, "peak_mib": None,
                                "error": f"unknown system {system!r}; choose from {', '.join(SYSTEMS)}"})
            continue
        entry = SYSTEMS[system]
        run_out = out / "systems" / system / f"seed{seed}"
        if (run_out / "record.json").is_file():
            previous = read_json(run_out / "record.json")
            if previous.get("status") == "ok":
                if rescore and entry["kind"] == "rcmae" and (run_out / "run").is_dir():
                    previous = _rescore(previous, system, data, run_out, [*entry["overrides"], *rc_overrides])
                rec["runs"].append({"seed": seed, **previous})
                continue
        spec = {"kind": entry["kind"], "system": system, "data": str(data), "out": str(run_out), "seed": seed,
                "preset": entry.get("preset", preset)}
        if entry["kind"] == "rcmae":
            arm_aug = bank if entry["aug"] == "bank" and bank else "specaugment"
            rec["aug"] = arm_aug
            # A system with its own preset (margin) takes the same --set overrides: its config has every section
            # (pretrain.epochs shortens both; model.* only matters to rcmae, margin.* only to margin).
            spec.update(aug=arm_aug, overrides=[*entry["overrides"], *rc_overrides],
                        pretrain_epochs=entry.get("pretrain_epochs"))
        else:
            spec["baseline_kw"] = base_kw[system]
        rec["runs"].append({"seed": seed, **_spawn(spec, run_out)})
        if progress and rec["runs"][-1]["status"] != "ok":
            tqdm.write(f"{system} (seed {seed}) failed: {rec['runs'][-1]['error']}")
    bench = {
        "data": str(data),
        "preset": preset,
        "repeat": repeat,
        "overrides": list(overrides),
        "aug": aug,
        "aug_options": dict(aug_options or {}),
        "systems": records,
        "augmentation": augmentation,
        "rows": aggregate_runs(records),
        "machine": machine_info(),
        "date": started.isoformat(timespec="seconds"),
        "wall_s": round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1),
        "command": command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    write_json(out / "benchmark.json", bench)
    atomic_write_text(out / "table.md", render_table(bench))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="rcmae.evaluation.benchmark child process (used by run_benchmark)")
    parser.add_argument("--child", required=True, help="a spec.json written by run_benchmark")
    args = parser.parse_args()
    sys.exit(_child_main(args.child))
