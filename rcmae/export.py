"""Self-contained detector bundles (``rcmae export``) and the loader the monitor and the demo app share.

A bundle is a folder that scores a waveform with torch alone (TorchScript) or onnxruntime alone (ONNX):

```
BUNDLE/
  detector.pt | detector.onnx   wave [B, N] float32 + unit [B] int64 -> score [B] float64,
                                embedding [B, D] float32, logmel [B, F, T] float32 (dB)
  detector.json                 version, sample rate, clip length, scorer, units (type, ID, threshold), metrics
  thresholds.json               per-unit decision thresholds
  references.npz                the scorer's reference tensors (a readable copy of what the model carries)
  examples/                     a few normal training clips per unit + examples.json (their embeddings)
  MODEL_CARD.md, README.md      data, metrics, limits; a minimal loader
```

The log-mel front-end and the feature normalisation are inside the model (wave in, score out).
Each scorer family contributes one torch module (``forward(x, z, unit) -> score``) and the reference
tensors it needs, built from the run's :class:`rcmae.score.Detector` so that the exported scores equal
``Detector.score`` (tests check it scorer by scorer); a scorer without such a module is refused.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

import rcmae
from rcmae.audio import load_audio, write_wav
from rcmae.datasets import make_generator, window_starts
from rcmae.files import atomic_write_text, read_json, write_json
from rcmae.losses import masked_mse
from rcmae.model import RCMAE, clip_stats

BUNDLE_VERSION = 1
FORMATS = ("torchscript", "onnx")
MODEL_FILES = {"torchscript": "detector.pt", "onnx": "detector.onnx"}
OUTPUTS = ("score", "embedding", "logmel")


class ExportError(ValueError):
    """A run or scorer that cannot be exported, or a folder that is not a bundle; one line."""


# ------------------------------------------------------------------------------------------ torch parts
class WindowEmbedder(nn.Module):
    """``x [B, F, T]`` -> ``z [B, D]``: the mean embedding over the run's crop windows (``Detector.embed``)."""

    def __init__(self, model: RCMAE, n_frames: int, crop: int | None) -> None:
        super().__init__()
        self.model = model
        self.crop = crop or n_frames
        self.starts = window_starts(n_frames, crop) if crop else [0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.model.embed(x[..., s : s + self.crop]) for s in self.starts]).mean(0)


def _mean_k_smallest(d: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Row-wise mean of the ``k[b]`` smallest values of ``d [B, n]`` (other units' rows are ``inf``)."""
    sorted_d = torch.sort(d, dim=1).values
    csum = torch.cumsum(torch.where(torch.isfinite(sorted_d), sorted_d, torch.zeros_like(sorted_d)), dim=1)
    return csum.gather(1, (k - 1)[:, None])[:, 0] / k.to(d.dtype)


class KnnScorer(nn.Module):
    """``knn``: mean cosine distance to the ``k`` nearest normal training embeddings of the same unit."""

    def __init__(self, bank: np.ndarray, units: np.ndarray, n_units: int, k: int) -> None:
        super().__init__()
        bank = np.asarray(bank, dtype=np.float32)
        # Normalised in float32 and compared in float64, as rcmae.score.knn_distances does.
        rn = bank / np.maximum(np.linalg.norm(bank, axis=1, keepdims=True), 1e-12)
        self.register_buffer("bank", torch.from_numpy(rn.astype(np.float64)))
        self.register_buffer("units", torch.from_numpy(np.asarray(units, dtype=np.int64)))
        counts = np.bincount(units, minlength=n_units)
        self.register_buffer("k", torch.from_numpy(np.minimum(k, counts).astype(np.int64)))

    def references(self) -> dict[str, np.ndarray]:
        return {"knn_bank": self.bank.numpy(), "knn_units": self.units.numpy(), "knn_k": self.k.numpy()}

    def forward(self, x: torch.Tensor, z: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        qn = z / torch.clamp(torch.linalg.vector_norm(z, dim=1, keepdim=True), min=1e-12)
        d = 1.0 - qn.double() @ self.bank.T
        d = torch.where(self.units[None, :] == unit[:, None], d, torch.full_like(d, math.inf))
        return _mean_k_smallest(d, self.k[unit])


class JointSpace(nn.Module):
    """The ``knn_joint``/``maha`` space of :func:`rcmae.score.joint_features`, in float64."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, weight: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(np.asarray(mean, dtype=np.float64)))
        self.register_buffer("std", torch.from_numpy(np.maximum(np.asarray(std, dtype=np.float64), 1e-6)))
        self.weight = float(weight)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        z = z.double()
        zn = z / torch.clamp(torch.linalg.vector_norm(z, dim=1, keepdim=True), min=1e-12)
        stats = clip_stats(x).double()
        st = (stats - self.mean) / self.std / math.sqrt(stats.shape[1])
        return torch.cat([zn, self.weight * st], dim=1)


class KnnJointScorer(nn.Module):
    """``knn_joint``: mean Euclidean distance to the ``k`` nearest normal clips of the unit in the joint space."""

    def __init__(self, space: JointSpace, bank: np.ndarray, units: np.ndarray, n_units: int, k: int) -> None:
        super().__init__()
        self.space = space
        self.register_buffer("bank", torch.from_numpy(np.asarray(bank, dtype=np.float64)))
        self.register_buffer("units", torch.from_numpy(np.asarray(units, dtype=np.int64)))
        self.register_buffer("k", torch.from_numpy(np.minimum(k, np.bincount(units, minlength=n_units))))

    def references(self) -> dict[str, np.ndarray]:
        return {"joint_mean": self.space.mean.numpy(), "joint_std": self.space.std.numpy(),
                "joint_bank": self.bank.numpy(), "joint_units": self.units.numpy(), "joint_k": self.k.numpy()}

    def forward(self, x: torch.Tensor, z: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        q = self.space(x, z)
        d = torch.sqrt(((self.bank[None, :, :] - q[:, None, :]) ** 2).sum(-1))
        d = torch.where(self.units[None, :] == unit[:, None], d, torch.full_like(d, math.inf))
        return _mean_k_smallest(d, self.k[unit])


class MahaScorer(nn.Module):
    """``maha``: Mahalanobis distance to the unit's Gaussian (mean, Ledoit-Wolf precision) in the joint space."""

    def __init__(self, space: JointSpace, means: np.ndarray, precisions: np.ndarray) -> None:
        super().__init__()
        self.space = space
        self.register_buffer("means", torch.from_numpy(np.asarray(means, dtype=np.float64)))
        self.register_buffer("precisions", torch.from_numpy(np.asarray(precisions, dtype=np.float64)))

    def references(self) -> dict[str, np.ndarray]:
        return {"joint_mean": self.space.mean.numpy(), "joint_std": self.space.std.numpy(),
                "maha_means": self.means.numpy(), "maha_precisions": self.precisions.numpy()}

    def forward(self, x: torch.Tensor, z: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        d = self.space(x, z) - self.means[unit]
        m = (torch.bmm(self.precisions[unit], d[:, :, None])[:, :, 0] * d).sum(-1)
        return torch.sqrt(torch.clamp(m, min=0.0))


class IdProbScorer(nn.Module):
    """``idprob``: ``-log p(unit | clip)`` of the fine-tuned classifier, averaged over crop windows."""

    def __init__(self, model: RCMAE, n_frames: int, crop: int | None) -> None:
        super().__init__()
        self.embedder = WindowEmbedder(model, n_frames, crop)

    def references(self) -> dict[str, np.ndarray]:
        return {}

    def forward(self, x: torch.Tensor, z: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        e = self.embedder
        per_window = [-torch.log_softmax(e.model.classify(e.model.embed(x[..., s : s + e.crop])).float(), -1)
                      .gather(1, unit[:, None])[:, 0] for s in e.starts]
        return torch.stack(per_window).mean(0).double()


class ReconScorer(nn.Module):
    """``recon`` (and ``recon_topk`` with ``topk``): masked-patch error of the pretrained MAE.

    The masks are the ones the Detector draws from its fixed-seed generator: that noise is carried as a
    buffer, so the exported graph masks the same patches of every window.
    """

    def __init__(self, model: RCMAE, n_frames: int, crop: int | None, noise: torch.Tensor, mask_ratio: float,
                 topk: float | None = None) -> None:
        super().__init__()
        self.embedder = WindowEmbedder(model, n_frames, crop)
        self.register_buffer("noise", noise.float())
        self.mask_ratio = float(mask_ratio)
        self.topk = topk

    def references(self) -> dict[str, np.ndarray]:
        return {"recon_noise": self.noise.numpy()}

    def _window_errors(self, w: torch.Tensor) -> torch.Tensor:
        """Errors of one window ``w [B, F, t]``: per mask ``[B, n]`` (recon) or per masked patch (topk)."""
        model = self.embedder.model
        b, n = w.shape[0], self.noise.shape[0]
        reps = w.repeat_interleave(n, dim=0)
        latent, mask, ids_restore = model.forward_encoder(reps, self.mask_ratio, noise=self.noise.repeat(b, 1))
        pred = model.forward_decoder(latent, ids_restore)
        if self.topk is None:
            return masked_mse(pred, model.target(reps), mask, norm_pix=model.config.norm_pix_loss,
                              reduction="none").float().view(b, n)
        target = model.target(reps)
        if model.config.norm_pix_loss:
            target = (target - target.mean(dim=-1, keepdim=True)) / (target.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5
        per_patch = ((pred - target) ** 2).mean(dim=-1).float()
        return per_patch[mask.bool()].view(b, -1)

    def forward(self, x: torch.Tensor, z: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        e = self.embedder
        errs = [self._window_errors(x[..., s : s + e.crop]) for s in e.starts]
        if self.topk is None:
            return torch.stack([er.mean(1) for er in errs]).mean(0).double()
        flat = torch.cat(errs, dim=1)
        k = max(1, int(math.ceil(self.topk * flat.shape[1])))
        return torch.topk(flat, k, dim=1).values.double().mean(1)


class EnsembleScorer(nn.Module):
    """``ensemble``: mean of its parts, each standardised with the unit's normal training-score moments."""

    def __init__(self, parts: Sequence[nn.Module], moments: np.ndarray) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.register_buffer("moments", torch.from_numpy(np.asarray(moments, dtype=np.float64)))  # [P, C, 2]

    def references(self) -> dict[str, np.ndarray]:
        out = {"ensemble_moments": self.moments.numpy()}
        for part in self.parts:
            out.update(part.references())
        return out

    def forward(self, x: torch.Tensor, z: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        zs = [(part(x, z, unit) - self.moments[p, unit, 0]) / torch.clamp(self.moments[p, unit, 1], min=1e-12)
              for p, part in enumerate(self.parts)]
        return torch.stack(zs).mean(0)


class ExportedDetector(nn.Module):
    """Wave in, score out: log-mel, normalisation, embedding and one scorer in one graph.

    ``forward(wave [B, N] float32, unit [B] int64) -> (score [B] float64, embedding [B, D], logmel [B, F, T])``.
    """

    def __init__(self, logmel: nn.Module, mean: np.ndarray, std: np.ndarray, embedder: WindowEmbedder,
                 scorer: nn.Module) -> None:
        super().__init__()
        self.logmel = logmel
        # float32 like FeatureStats.apply on a float32 tensor.
        self.register_buffer("feat_mean", torch.as_tensor(np.asarray(mean), dtype=torch.float32)[:, None])
        self.register_buffer("feat_std", torch.as_tensor(np.asarray(std), dtype=torch.float32)[:, None])
        self.embedder = embedder
        self.scorer = scorer

    def forward(self, wave: torch.Tensor, unit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        db = self.logmel(wave)
        x = (db - self.feat_mean) / self.feat_std
        z = self.embedder(x)
        return self.scorer(x, z, unit), z, db


# --------------------------------------------------------------------------------- per-scorer builders
def _unit_rows(det, table: dict, units: list[tuple[str, str]]) -> np.ndarray:
    """Unit index of each reference row (``-1`` for rows of units the bundle does not carry)."""
    index = {u: i for i, u in enumerate(units)}
    return np.array([index.get((str(t), str(i)), -1) for t, i in zip(table["machine_type"], table["machine_id"],
                                                                      strict=True)], dtype=np.int64)


def _check_units_covered(rows: np.ndarray, units: list[tuple[str, str]], scorer: str, minimum: int = 1) -> None:
    counts = np.bincount(rows[rows >= 0], minlength=len(units))
    thin = [f"{t}/{i}" for (t, i), c in zip(units, counts, strict=True) if c < minimum]
    if thin:
        raise ExportError(f"{scorer}: unit(s) {', '.join(thin)} have fewer than {minimum} normal training clips in "
                          "the run's references; run `rcmae evaluate --run RUN` to refit, or pick another --scorer")


def _joint(det, weight: float, units) -> tuple[JointSpace, np.ndarray, np.ndarray]:
    if det.clipstats is None or det.references.get(det.knn_space) is None:
        raise ExportError(f"{det.run}: no training references for the joint space; run `rcmae evaluate --run "
                          f"{det.run}` first")
    cs = det.clipstats["z"].astype(np.float64)
    space = JointSpace(cs.mean(0), cs.std(0), weight)
    from rcmae.score import joint_features

    ref = det.references[det.knn_space]
    bank = joint_features(ref["z"], cs, cs.mean(0), cs.std(0), weight)
    return space, bank, _unit_rows(det, ref, units)


def _build_knn(det, units) -> nn.Module:
    ref = det.references.get(det.knn_space)
    if ref is None:
        raise ExportError(f"{det.run}: no training embeddings; run `rcmae evaluate --run {det.run}` first")
    rows = _unit_rows(det, ref, units)
    _check_units_covered(rows, units, "knn")
    keep = rows >= 0
    return KnnScorer(ref["z"][keep], rows[keep], len(units), det.cfg.score.knn_k)


def _build_knn_joint(det, units) -> nn.Module:
    space, bank, rows = _joint(det, det.cfg.score.joint_weight, units)
    _check_units_covered(rows, units, "knn_joint")
    keep = rows >= 0
    return KnnJointScorer(space, bank[keep], rows[keep], len(units), det.cfg.score.knn_k)


def _build_maha(det, units) -> nn.Module:
    from rcmae.score import fit_gaussian

    space, bank, rows = _joint(det, det.cfg.score.maha_weight, units)
    _check_units_covered(rows, units, "maha", minimum=2)
    fits = [fit_gaussian(bank[rows == u]) for u in range(len(units))]
    return MahaScorer(space, np.stack([f[0] for f in fits]), np.stack([f[1] for f in fits]))


def _build_idprob(det, units) -> nn.Module:
    if [tuple(u) for u in units] != [tuple(c) for c in det.classes]:
        raise ExportError(f"idprob: the bundle's units must be the classifier's classes {det.classes}")
    return IdProbScorer(det.models["finetune"], _n_frames(det),
                        det.cfg.pretrain.crop_frames)


def _recon_noise(det) -> torch.Tensor:
    from rcmae.score import _RECON_SEED

    model = det.models["pretrain"]
    # The noise rcmae.model.RCMAE.random_masking draws from the Detector's fixed-seed generator.
    gen = make_generator(_RECON_SEED, device="cpu")
    return torch.rand(det.cfg.score.recon_masks, model.config.num_patches, generator=gen)


def _build_recon(det, units) -> nn.Module:
    return ReconScorer(det.models["pretrain"], _n_frames(det), det.cfg.pretrain.crop_frames, _recon_noise(det),
                       det.cfg.score.recon_mask_ratio)


def _build_recon_topk(det, units) -> nn.Module:
    return ReconScorer(det.models["pretrain"], _n_frames(det), det.cfg.pretrain.crop_frames, _recon_noise(det),
                       det.cfg.score.recon_mask_ratio, topk=det.cfg.score.recon_topk)


def _build_ensemble(det, units) -> nn.Module:
    parts, moments = [], []
    for name in det.cfg.score.ensemble:
        parts.append(build_scorer(det, name, units))
        m = det.moments.get(name, {})
        missing = [f"{t}/{i}" for t, i in units if f"{t}/{i}" not in m]
        if missing:
            raise ExportError(f"ensemble: no training-score moments of {name} for {', '.join(missing)}; "
                              f"run `rcmae evaluate --run {det.run}` after deleting thresholds.json")
        moments.append([m[f"{t}/{i}"] for t, i in units])
    return EnsembleScorer(parts, np.asarray(moments, dtype=np.float64))


# One builder per scorer family: the torch module and the reference tensors it carries.
SCORER_BUILDERS: dict[str, Callable] = {
    "knn": _build_knn,
    "knn_joint": _build_knn_joint,
    "maha": _build_maha,
    "idprob": _build_idprob,
    "recon": _build_recon,
    "recon_topk": _build_recon_topk,
    "ensemble": _build_ensemble,
}


def _n_frames(det) -> int:
    n = int(round(det.cfg.data.duration * det.cfg.data.sample_rate))
    return det.cfg.features.n_frames(n)


def build_scorer(det, scorer: str, units: list[tuple[str, str]]) -> nn.Module:
    """The torch module of ``scorer`` for a loaded Detector, or :class:`ExportError` saying why not."""
    builder = SCORER_BUILDERS.get(scorer)
    if builder is None:
        raise ExportError(f"scorer {scorer} cannot be exported (no torch scoring function for it); "
                          f"export one of {', '.join(s for s in det.scorers if s in SCORER_BUILDERS)} with --scorer")
    if scorer not in det.scorers:
        raise ExportError(f"scorer {scorer} is unavailable for {det.run} ({det._why_unavailable(scorer)}); "
                          f"use --scorer with one of {', '.join(det.scorers)}")
    return builder(det, units)


def build_module(det, scorer: str) -> tuple[ExportedDetector, list[tuple[str, str]]]:
    """The exportable module of one scorer of a Detector and its units (``(machine_type, machine_id)``)."""
    units = [tuple(c) for c in det.classes]
    if not units:
        ref = det.references.get(det.knn_space) or {}
        units = sorted(set(zip(map(str, ref.get("machine_type", [])), map(str, ref.get("machine_id", [])),
                               strict=True)))
    if not units:
        raise ExportError(f"{det.run}: the run lists no machine IDs (run.json classes); finish training first")
    scorer_module = build_scorer(det, scorer, units)
    embedder = WindowEmbedder(det.models[det.knn_space], _n_frames(det), det.cfg.pretrain.crop_frames)
    module = ExportedDetector(det.logmel, det.stats.mean, det.stats.std, embedder, scorer_module).eval()
    return module.cpu(), units


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
    """Per unit, the ``per_unit`` normal training clips nearest (cosine) to the unit's mean embedding."""
    ref = det.references.get(det.knn_space)
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


def export_run(run: str | os.PathLike, out: str | os.PathLike, format: str = "torchscript",  # noqa: A002
               scorer: str | None = None, examples: int = 3, overwrite: bool = False) -> Path:
    """Write a self-contained bundle of one scorer of a run (see the module docstring for its contents).

    Args:
        run: A trained run folder (``rcmae evaluate`` adds its metrics to the model card).
        out: The bundle folder to create.
        format: ``torchscript`` (load with torch alone) or ``onnx`` (load with onnxruntime alone).
        scorer: The scorer to export (default: the run's default scorer).
        examples: Normal training clips per unit copied into ``examples/`` for side-by-side listening.
        overwrite: Replace an existing bundle folder.

    Returns:
        The bundle folder.
    """
    from rcmae.score import Detector

    if format not in FORMATS:
        raise ExportError(f"--format {format!r}: choose torchscript or onnx")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out}: exists and is not empty; pass a new folder or --overwrite")
    det = Detector.load(run)
    scorer = scorer or det.default_scorer
    module, units = build_module(det, scorer)
    n = int(round(det.cfg.data.duration * det.cfg.data.sample_rate))
    picked = _pick_examples(det, units, examples)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        example = (torch.zeros(2, n), torch.zeros(2, dtype=torch.long))
        model_file = MODEL_FILES[format]
        if format == "torchscript":
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
    from rcmae.train import read_run_json

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
    """The bundle's README.md: files, inputs/outputs and a minimal loader that needs no rcmae."""
    onnx = meta["format"] == "onnx"
    loader = LOADER_ONNX if onnx else LOADER_TORCHSCRIPT
    return "\n".join([
        f"# rcmae detector bundle ({meta['format']}, scorer `{meta['scorer']}`)", "",
        "| file | what |", "|---|---|",
        f"| `{meta['model_file']}` | wave `[B, {meta['clip_samples']}]` float32 + unit `[B]` int64 -> score `[B]`, "
        "embedding, log-mel; front-end and normalisation inside |",
        "| `detector.json` | version, sample rate, clip length, scorer, units (type, ID, threshold), metrics |",
        "| `thresholds.json` | per-unit decision thresholds |",
        "| `references.npz` | the scorer's reference tensors (the model carries the same ones) |",
        "| `examples/` | a few normal training clips per unit, with their embeddings in `examples.json` |",
        "| `MODEL_CARD.md` | data, metrics, limits |", "",
        "## Load and score with " + ("onnxruntime" if onnx else "torch") + " alone", "",
        "Read the clip as mono float32 at the bundle's sample rate (e.g. with soundfile), then:", "",
        "```python", loader.strip(), "```", "",
        "`score > threshold` means anomalous. `rcmae monitor --bundle BUNDLE long.wav` scores long recordings; "
        "`rcmae demo-app BUNDLE` opens a demo page.", ""])


LOADER_TORCHSCRIPT = '''
import json, pathlib
import torch

def load_detector(bundle):
    bundle = pathlib.Path(bundle)
    meta = json.loads((bundle / "detector.json").read_text())
    model = torch.jit.load(str(bundle / meta["model_file"]), map_location="cpu").eval()
    units = {(u["machine_type"], u["machine_id"]): u for u in meta["units"]}

    def score(wave, machine_type, machine_id):
        """wave: 1-D float32 samples at meta["sample_rate"]; returns (score, threshold, is_anomalous)."""
        unit = units[(machine_type, machine_id)]
        x = torch.zeros(1, meta["clip_samples"])
        w = torch.as_tensor(wave, dtype=torch.float32)[: meta["clip_samples"]]
        x[0, : w.numel()] = w
        with torch.no_grad():
            s = float(model(x, torch.tensor([unit["index"]]))[0][0])
        thr = unit["threshold"]
        return s, thr, thr is not None and s > thr

    return meta, score
'''

LOADER_ONNX = '''
import json, pathlib
import numpy as np
import onnxruntime

def load_detector(bundle):
    bundle = pathlib.Path(bundle)
    meta = json.loads((bundle / "detector.json").read_text())
    session = onnxruntime.InferenceSession(str(bundle / meta["model_file"]), providers=["CPUExecutionProvider"])
    units = {(u["machine_type"], u["machine_id"]): u for u in meta["units"]}

    def score(wave, machine_type, machine_id):
        """wave: 1-D float32 samples at meta["sample_rate"]; returns (score, threshold, is_anomalous)."""
        unit = units[(machine_type, machine_id)]
        x = np.zeros((1, meta["clip_samples"]), dtype=np.float32)
        w = np.asarray(wave, dtype=np.float32)[: meta["clip_samples"]]
        x[0, : w.size] = w
        s = float(session.run(["score"], {"wave": x, "unit": np.array([unit["index"]], dtype=np.int64)})[0][0])
        thr = unit["threshold"]
        return s, thr, thr is not None and s > thr

    return meta, score
'''


# ------------------------------------------------------------------------------------------ loading
class Bundle:
    """An exported bundle, loaded for scoring (TorchScript with torch, ONNX with onnxruntime).

    Args:
        path: The bundle folder.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        meta_path = self.path / "detector.json"
        if not meta_path.is_file():
            raise ExportError(f"{self.path}: not an rcmae bundle (no detector.json); make one with `rcmae export`")
        self.meta = read_json(meta_path)
        if self.meta.get("version") != BUNDLE_VERSION:
            raise ExportError(f"{meta_path}: bundle version {self.meta.get('version')} is not {BUNDLE_VERSION}; "
                              "re-export it with this rcmae")
        model_path = self.path / self.meta["model_file"]
        if not model_path.is_file():
            raise ExportError(f"{model_path}: the bundle's model file is missing; re-export the bundle")
        self.format = self.meta["format"]
        if self.format == "onnx":
            import onnxruntime

            self._session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
            self._model = None
        else:
            self._model = torch.jit.load(str(model_path), map_location="cpu").eval()
        self.sample_rate = int(self.meta["sample_rate"])
        self.clip_samples = int(self.meta["clip_samples"])
        self.scorer = self.meta["scorer"]
        self.units = [(u["machine_type"], u["machine_id"]) for u in self.meta["units"]]
        self._unit = {(u["machine_type"], u["machine_id"]): u for u in self.meta["units"]}
        ex = self.path / "examples" / "examples.json"
        self.examples = read_json(ex) if ex.is_file() else []

    def unit_index(self, machine_type: str, machine_id: str) -> int:
        """The model's unit input for a machine; one clear line when the bundle does not know it."""
        unit = self._unit.get((str(machine_type), str(machine_id)))
        if unit is None:
            known = ", ".join(f"{t}/{i}" for t, i in self.units)
            raise ExportError(f"machine {machine_type} id {machine_id} is not in the bundle {self.path} (known: "
                              f"{known}); pass the right --machine-type/--machine-id")
        return int(unit["index"])

    def threshold(self, machine_type: str, machine_id: str) -> float | None:
        """The unit's decision threshold (``None`` when none was fitted)."""
        return self._unit[(str(machine_type), str(machine_id))]["threshold"]

    def fit_length(self, wave: np.ndarray) -> np.ndarray:
        """Zero-pad or cut a 1-D waveform to the bundle's clip length (as ``rcmae.audio.load_audio`` does)."""
        wave = np.asarray(wave, dtype=np.float32)
        return np.pad(wave[: self.clip_samples], (0, max(0, self.clip_samples - wave.size)))

    def run(self, waves: np.ndarray, units: Sequence[int]) -> dict[str, np.ndarray]:
        """Raw model outputs ``{"score", "embedding", "logmel"}`` for waves ``[B, clip_samples]``."""
        waves = np.ascontiguousarray(waves, dtype=np.float32)
        unit = np.asarray(units, dtype=np.int64)
        if waves.ndim != 2 or waves.shape[1] != self.clip_samples:
            raise ExportError(f"bundle input must be [B, {self.clip_samples}] samples, got {waves.shape}")
        if self._model is not None:
            with torch.no_grad():
                res = self._model(torch.from_numpy(waves), torch.from_numpy(unit))
            return {k: v.numpy() for k, v in zip(OUTPUTS, res, strict=True)}
        res = self._session.run(list(OUTPUTS), {"wave": waves, "unit": unit})
        return dict(zip(OUTPUTS, res, strict=True))

    def score_waveforms(self, waves: np.ndarray, machine_types: Sequence[str],
                        machine_ids: Sequence[str]) -> np.ndarray:
        """Scores ``[B]`` of waves ``[B, clip_samples]`` (``Detector.score_waveforms``'s signature)."""
        units = [self.unit_index(t, i) for t, i in zip(machine_types, machine_ids, strict=True)]
        return self.run(waves, units)["score"].astype(np.float64)

    def score(self, wave: np.ndarray, machine_type: str, machine_id: str) -> dict:
        """One clip: ``{"score", "threshold", "decision", "embedding", "logmel"}``."""
        out = self.run(self.fit_length(wave)[None], [self.unit_index(machine_type, machine_id)])
        s = float(out["score"][0])
        thr = self.threshold(machine_type, machine_id)
        return {"machine_type": str(machine_type), "machine_id": str(machine_id), "scorer": self.scorer,
                "score": s, "threshold": thr,
                "decision": None if thr is None else ("anomaly" if s > thr else "normal"),
                "embedding": out["embedding"][0], "logmel": out["logmel"][0]}

    def nearest_examples(self, embedding: np.ndarray, machine_type: str, machine_id: str, k: int = 3) -> list[dict]:
        """The bundle's example clips of a unit, nearest first (cosine distance of the embeddings)."""
        rows = [r for r in self.examples if (r["machine_type"], r["machine_id"]) == (machine_type, machine_id)]
        if not rows:
            return []
        z = np.asarray([r["embedding"] for r in rows], dtype=np.float64)
        q = np.asarray(embedding, dtype=np.float64)
        d = 1.0 - (z / np.linalg.norm(z, axis=1, keepdims=True)) @ (q / max(np.linalg.norm(q), 1e-12))
        order = np.argsort(d, kind="stable")[:k]
        return [{**rows[o], "path": str(self.path / rows[o]["file"]), "distance": float(d[o])} for o in order]
