"""`export_run`: a run's detector as a self-contained bundle (a graph spec of arrays by default, or ONNX or
TorchScript; examples, metadata)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import logging
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

import rcmae
from rcmae.data.audio import load_audio, write_wav
from rcmae.deploy.bundle import (
    BUNDLE_VERSION,
    FORMATS,
    GRAPH_ARRAYS,
    LOADER_GRAPH,
    LOADER_ONNX,
    LOADER_TORCHSCRIPT,
    MANIFEST,
    MODEL_FILES,
    OUTPUTS,
    ExportError,
    file_hashes,
)
from rcmae.deploy.graph.build import build_graph
from rcmae.deploy.graph.heads import ExportContext, ExportedDetector
from rcmae.deploy.graph.spec import encode
from rcmae.files import atomic_write_text, check_replaceable, read_json, write_json
from rcmae.scorers import ScoringError

# Exported instead of a default scorer whose graph cannot be built for the run (a family without a builder, a
# unit with too few training clips for its references, an ensemble without moments), in order; said on stderr.
EXPORT_FALLBACKS = ("maha", "knn", "idprob")


# ------------------------------------------------------------------------------------------ the graph
def _n_frames(det) -> int:
    n = int(round(det.cfg.data.duration * det.cfg.data.sample_rate))
    return det.cfg.features.n_frames(n)


def build_module(det, scorer: str) -> tuple[ExportedDetector, list[tuple[str, str]]]:
    """The exportable module of one scorer of a Detector and its units (``(machine_type, machine_id)``).

    The scorer's torch graph comes from its family's builder (:mod:`rcmae.deploy.graph`); a scorer that is
    unavailable for the run or has no graph raises one clear line.
    """
    name = det._scorer(scorer)
    if det.family == "margin":
        # Its front-end (log-mel + Tgram) and normalisation live inside the classifier: no graph is built for it.
        raise ExportError(f"{det.run}: runs of the margin family cannot be exported yet; export an RC-MAE run "
                          "(presets tiny, paper, paper-light, audiomae) or score this run with `rcmae score`")
    units = list(det.units)
    if not units:
        ref = det.references.get(det.knn_space) or {}
        units = sorted(set(zip(map(str, ref.get("machine_type", [])), map(str, ref.get("machine_id", [])),
                               strict=True)))
    if not units:
        raise ExportError(f"{det.run}: the run lists no machine IDs (run.json classes); finish training first")
    families = det._families
    ctx = ExportContext(units, det.models, _n_frames(det), det.cfg.pretrain.crop_frames, families.__getitem__)
    graph = build_graph(families[name], ctx)
    module = ExportedDetector(det.logmel, det.stats.mean, det.stats.std, ctx.embedder(det.knn_space), graph)
    return module.cpu().eval(), units


# ----------------------------------------------------------------------------------------- writing
def _trace(module: nn.Module, example: tuple[torch.Tensor, torch.Tensor]) -> torch.jit.ScriptModule:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints that are constants by design
        return torch.jit.trace(module, example, check_trace=False)


def _export_onnx(module: nn.Module, example: tuple[torch.Tensor, torch.Tensor], path: Path) -> None:
    try:
        import onnx  # noqa: F401
    except ImportError as err:
        raise ExportError("--format onnx needs the onnx and onnxruntime packages (pip install -r requirements.txt)"
                          ) from err
    # The dynamo exporter (torch.export + onnxscript) translates torch.stft to ONNX's STFT (opset 17+); the
    # older TorchScript-based exporter refuses complex STFT output. Grad stays on so that the transformer
    # layers take their plain path: their fused inference kernel has no ONNX translation.
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.enable_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        torch.onnx.export(module, example, str(path), input_names=["wave", "unit"], output_names=list(OUTPUTS),
                          dynamic_shapes={"wave": {0: batch}, "unit": {0: batch}}, opset_version=18, dynamo=True,
                          external_data=False, verbose=False)


def _pick_examples(det, units, per_unit: int) -> list[dict]:
    """Per unit, the ``per_unit`` normal training clips nearest (cosine) to the unit's mean embedding (a
    training-free run's embedding is the clip's band statistics)."""
    ref = det.references.get(det.knn_space) if det.models else det.bandstats
    if ref is None or per_unit <= 0:
        return []
    out = []
    for t, i in units:
        rows = np.flatnonzero((ref["machine_type"] == t) & (ref["machine_id"] == i))
        if not rows.size:
            continue
        z = ref["z"][rows].astype(np.float64)
        zn = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
        centre = zn.mean(0)
        order = np.argsort(-(zn @ centre), kind="stable")[:per_unit]
        out += [{"machine_type": t, "machine_id": i, "source": str(ref["path"][rows[o]]), "row": int(rows[o])}
                for o in order]
    return out


def export_run(run: str | os.PathLike, out: str | os.PathLike, format: str = "graph",  # noqa: A002
               scorer: str | None = None, examples: int = 3, overwrite: bool = False) -> Path:
    """Write a self-contained bundle of one scorer of a run (see the module docstring for its contents).

    Args:
        run: A trained run folder (``rcmae evaluate`` adds its metrics to the model card).
        out: The bundle folder to create.
        format: ``graph`` (the default: a JSON spec plus arrays that rcmae rebuilds; data, it cannot run
            code), ``onnx`` (data too; loads with onnxruntime alone) or ``torchscript`` (loads with torch alone,
            but it is code: loading it needs ``trust``).
        scorer: The scorer to export (default: the run's default scorer).
        examples: Normal training clips per unit copied into ``examples/`` for side-by-side listening.
        overwrite: Replace an existing bundle folder.

    Returns:
        The bundle folder.
    """
    from rcmae.scorers.detector import Detector

    if format not in FORMATS:
        raise ExportError(f"--format {format!r}: choose {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out}: exists and is not empty; pass a new folder or --overwrite")
    a, b = out.resolve(), Path(run).resolve()
    if a == b or a in b.parents or b in a.parents:
        raise ExportError(f"{out}: is the run folder {run}, or inside or around it; export to a folder of its own")
    try:
        check_replaceable(out, "detector.json", "bundle")
    except ValueError as err:
        raise ExportError(str(err)) from None
    det = Detector.load(run)
    det.ensure_fitted([scorer or det.default_scorer])  # its thresholds and moments travel in the bundle
    if scorer is None:
        scorer = det.default_scorer
        try:
            module, units = build_module(det, scorer)
        except ScoringError as err:
            # Said, never silent: the bundle's detector.json names the scorer it carries.
            fallback = next(s for s in EXPORT_FALLBACKS if s in det.scorers)
            print(f"export: the run's default scorer cannot be exported ({err}); exporting {fallback} "
                  "instead (pass --scorer to choose)", file=sys.stderr)
            scorer = fallback
            module, units = build_module(det, scorer)
    else:
        module, units = build_module(det, scorer)
    n = int(round(det.cfg.data.duration * det.cfg.data.sample_rate))
    picked = _pick_examples(det, units, examples)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        example = (torch.zeros(2, n), torch.zeros(2, dtype=torch.long))
        model_file = MODEL_FILES[format]
        if format == "graph":
            spec, arrays = encode(module)
            write_json(tmp / model_file, spec)
            np.savez(tmp / GRAPH_ARRAYS, **arrays)
        elif format == "torchscript":
            _trace(module, example).save(str(tmp / model_file))
        else:
            _export_onnx(module, example, tmp / model_file)
        refs = module.scorer.references()
        np.savez(tmp / "references.npz", **refs)
        thresholds = {f"{t}/{i}": det.threshold(scorer, t, i) for t, i in units}
        write_json(tmp / "thresholds.json", {"scorer": scorer, "method": det.cfg.score.threshold,
                                             "q": det.cfg.score.threshold_q, "thresholds": thresholds})
        example_rows = _write_examples(det, module, picked, tmp, n)
        meta = _detector_json(det, run, scorer, format, model_file, units, thresholds, n, refs, example_rows)
        write_json(tmp / "detector.json", meta)
        atomic_write_text(tmp / "MODEL_CARD.md", model_card(meta))
        atomic_write_text(tmp / "README.md", bundle_readme(meta))
        # Last: the sha256 of every file, which Bundle checks before it reads anything else.
        write_json(tmp / MANIFEST, {"sha256": file_hashes(tmp)})
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_examples(det, module: ExportedDetector, picked: list[dict], folder: Path, n: int) -> list[dict]:
    rows = []
    for k, ex in enumerate(picked):
        try:
            wave = load_audio(ex["source"], sample_rate=det.cfg.data.sample_rate, duration=det.cfg.data.duration,
                              channel=det.cfg.data.channel)
        except (OSError, ValueError):
            continue  # the training clip moved: the bundle carries fewer examples rather than failing
        name = f"examples/{ex['machine_type']}_id_{ex['machine_id']}_{k:02d}.wav"
        write_wav(folder / name, wave, det.cfg.data.sample_rate)
        with torch.no_grad():
            z = module(torch.from_numpy(wave[None]), torch.zeros(1, dtype=torch.long))[1][0]
        rows.append({"file": name, "machine_type": ex["machine_type"], "machine_id": ex["machine_id"],
                     "source": ex["source"], "embedding": [float(v) for v in z]})
    if rows:
        write_json(folder / "examples" / "examples.json", rows)
    return rows


def _metrics(run: Path, scorer: str) -> dict | None:
    path = run / "eval" / f"results.{scorer}.json"
    if not path.is_file():
        return None
    res = read_json(path)
    return {"data": res.get("data"), "average": res.get("average"), "per_id": res.get("per_id")}


def _detector_json(det, run, scorer, format, model_file, units, thresholds, n, refs, example_rows) -> dict:  # noqa: A002
    from rcmae.run.folder import read_run_json

    info = read_run_json(run)
    types = sorted({t for t, _ in units})
    return {
        "version": BUNDLE_VERSION,
        "rcmae_version": rcmae.__version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "format": format,
        "model_file": model_file,
        "sample_rate": int(det.cfg.data.sample_rate),
        "clip_seconds": float(det.cfg.data.duration),
        "clip_samples": n,
        "channel": det.cfg.data.channel,
        "scorer": scorer,
        "higher_is_anomalous": True,
        "inputs": {"wave": "float32 [batch, clip_samples], mono, sample_rate Hz, zero-padded or cut to the clip",
                   "unit": "int64 [batch], the index of the machine (see units)"},
        "outputs": {"score": "float64 [batch]", "embedding": "float32 [batch, D]",
                    "logmel": "float32 [batch, n_mels, frames], dB"},
        "units": [{"index": k, "machine_type": t, "machine_id": i, "threshold": thresholds[f"{t}/{i}"]}
                  for k, (t, i) in enumerate(units)],
        "machine_types": types,
        "machine_ids": {mt: [i for t, i in units if t == mt] for mt in types},
        "threshold": {"method": det.cfg.score.threshold, "q": det.cfg.score.threshold_q},
        "front_end": asdict(det.cfg.features),
        "references": {k: list(v.shape) for k, v in refs.items()},
        # DCASE 2021+ runs: some unit keeps source and target references and scores the minimum over them.
        "domain_banks": any(k.endswith("_unit_banks") and v.shape[1] > 1 for k, v in refs.items()),
        "examples": [{k: v for k, v in r.items() if k != "embedding"} for r in example_rows],
        "metrics": _metrics(Path(run), scorer),
        "run": {"id": Path(run).resolve().name, "preset": info.get("preset"), "data": info.get("data"),
                "n_train": info.get("n_train"), "created": info.get("created"), "git_commit": info.get("git_commit"),
                "overrides": info.get("overrides", [])},
    }


def model_card(meta: dict) -> str:
    """The bundle's MODEL_CARD.md: what it detects, on what data, how well, and where it stops."""
    m = meta.get("metrics")
    lines = [f"# Model card: rcmae detector `{meta['run']['id']}` (scorer `{meta['scorer']}`)", "",
             "## What it does",
             f"Scores {meta['clip_seconds']:g} s mono clips at {meta['sample_rate']} Hz of the machines below; higher "
             "is more anomalous. A clip whose score exceeds its machine's threshold is flagged as anomalous.", "",
             "## Data",
             f"- Trained on the normal clips of `{meta['run']['data']}` ({meta['run']['n_train']} clips), "
             f"preset `{meta['run']['preset']}`, rcmae {meta['rcmae_version']}, commit "
             f"`{meta['run']['git_commit']}`.",
             f"- Overrides: {', '.join(meta['run']['overrides']) or 'none'}.",
             *(["- Domains: a machine trained on source and target clips (DCASE 2021+) keeps references of each "
                "domain; a clip's score is the smaller of its two scores (the scorer's domain banks)."]
               if meta.get("domain_banks") else []),
             "- Thresholds: per machine, the "
             f"{meta['threshold']['method']} {meta['threshold']['q']} quantile of the normal training scores.", "",
             "| machine type | machine ID | threshold | AUC | pAUC |", "|---|---|---:|---:|---:|"]
    per_id = {(r["machine_type"], r["machine_id"]): r for r in (m or {}).get("per_id") or []}
    for u in meta["units"]:
        r = per_id.get((u["machine_type"], u["machine_id"]))
        thr = "n/a" if u["threshold"] is None else f"{u['threshold']:.4f}"
        auc = f"{r['auc']:.3f} | {r['pauc']:.3f}" if r else "n/a | n/a"
        lines.append(f"| {u['machine_type']} | {u['machine_id']} | {thr} | {auc} |")
    lines += ["", "## Metrics"]
    if m and m.get("average"):
        lines.append(f"Average over machine types on `{m['data']}`: AUC {m['average']['auc']:.3f}, "
                     f"pAUC {m['average']['pauc']:.3f} (pAUC at FPR <= 0.1).")
    else:
        lines.append("Not evaluated: run `rcmae evaluate --run RUN` before exporting to record AUC/pAUC here.")
    lines += ["", "## Limits",
              "- It knows only the machines above: a clip of another machine or ID gets a meaningless score.",
              "- It learned from normal sounds only; it flags what differs from them, which includes a new "
              "microphone, position, room or operating condition as much as a fault.",
              "- Thresholds come from training clips: expect to re-tune them on your own normal recordings.",
              "- Metrics measured on the data named above (the synthetic demo data, if that is what it was) say "
              "little about a real plant.", ""]
    return "\n".join(lines)


def bundle_readme(meta: dict) -> str:
    """The bundle's README.md: files, inputs/outputs and a minimal loader (ONNX and TorchScript need no rcmae)."""
    fmt = meta["format"]
    loader = {"onnx": LOADER_ONNX, "torchscript": LOADER_TORCHSCRIPT}.get(fmt, LOADER_GRAPH)
    with_what = {"onnx": "onnxruntime alone", "torchscript": "torch alone (TorchScript is code: load only a bundle "
                 "you trust)"}.get(fmt, "rcmae (the graph is data: a JSON spec and arrays, no code)")
    model_rows = ([f"| `{meta['model_file']}` + `{GRAPH_ARRAYS}` | the detector as data: rcmae's graph classes and "
                   "their constructor arguments (JSON), arrays without pickle; wave `[B, "
                   f"{meta['clip_samples']}]` float32 + unit `[B]` int64 -> score `[B]`, embedding, log-mel; "
                   "front-end and normalisation inside |"] if fmt == "graph" else
                  [f"| `{meta['model_file']}` | wave `[B, {meta['clip_samples']}]` float32 + unit `[B]` int64 -> "
                   "score `[B]`, embedding, log-mel; front-end and normalisation inside |"])
    return "\n".join([
        f"# rcmae detector bundle ({fmt}, scorer `{meta['scorer']}`)", "",
        "| file | what |", "|---|---|",
        *model_rows,
        "| `detector.json` | version, sample rate, clip length, scorer, units (type, ID, threshold), metrics |",
        "| `thresholds.json` | per-unit decision thresholds |",
        "| `references.npz` | the scorer's reference tensors (the model carries the same ones) |",
        "| `examples/` | a few normal training clips per unit, with their embeddings in `examples.json` |",
        "| `MODEL_CARD.md` | data, metrics, limits |",
        "| `manifest.json` | sha256 of every other file; a bundle that does not match it is refused |", "",
        f"## Load and score with {with_what}", "",
        "Read the clip as mono float32 at the bundle's sample rate (e.g. with soundfile), then:", "",
        "```python", loader.strip(), "```", "",
        "`score > threshold` means anomalous. `rcmae monitor --bundle BUNDLE long.wav` scores long recordings; "
        "`rcmae demo-app BUNDLE` opens a demo page.", ""])
