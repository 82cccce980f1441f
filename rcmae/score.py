"""Scoring a clip with a trained run: one path for ``rcmae evaluate``, ``rcmae score``, the API and the UI.

:class:`Detector` loads a run folder (config, feature statistics, weights, classes, thresholds,
normal training embeddings) and scores log-mels with one of these scorers:

- ``idprob``: ``-log softmax(logits)[true class]`` of the fine-tuned machine-ID classifier (the paper);
- ``knn``: mean cosine distance to the ``k`` nearest normal training clips of the same machine ID;
- ``recon``: masked-reconstruction error of the pretrained MAE, averaged over fixed random masks;
- ``knn_joint``: Euclidean kNN in a joint space, the unit-norm embedding next to the clip's per-band
  mean/std log-mel (standardised with the training clips), which the encoder's LayerNorm and pooling lose;
- ``maha``: Mahalanobis distance to a Gaussian (Ledoit-Wolf covariance) of the machine ID's normal clips in
  that joint space, weighted by ``score.maha_weight``;
- ``recon_topk``: mean of the highest ``score.recon_topk`` fraction of masked-patch errors (local anomalies);
- ``ensemble``: mean of the ``score.ensemble`` scorers, each standardised per machine ID with the mean and
  std of its normal training scores.

Per machine ID a threshold is fitted on the normal training scores (gamma 0.9 quantile, the DCASE
2021+ convention, or a percentile); decision = score > threshold.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats
import torch
from tqdm.auto import tqdm

from rcmae import config as rconfig
from rcmae.audio import AudioError, load_audio
from rcmae.data import index_dataset, parse_name
from rcmae.datasets import compute_logmels, make_generator, window_starts
from rcmae.features import FeatureStats, LogMel
from rcmae.files import atomic_write_text, read_json, write_json
from rcmae.metrics import evaluate_scores, write_results
from rcmae.model import RCMAE, clip_stats
from rcmae.train import (
    RunFolderError,
    TrainData,
    _model_from_checkpoint,
    checkpoint_path,
    read_run_json,
    update_run_json,
)

SCORERS = ("idprob", "knn", "recon", "knn_joint", "maha", "recon_topk", "ensemble")
# Fixed stream for the recon masks: a clip gets the same masks wherever and however it is scored.
_RECON_SEED = 20231
_SPACES = ("pretrain", "finetune")


class ScoringError(ValueError):
    """A clip or scorer that cannot be scored as asked; the message is one line."""


def fit_threshold(normal_scores: Sequence[float] | np.ndarray, method: str = "gamma", q: float = 0.9) -> float:
    """Decision threshold from normal scores: the ``q`` quantile of a fitted gamma, or the ``q`` percentile.

    Args:
        normal_scores: Scores of normal (training) clips.
        method: ``"gamma"`` (``scipy.stats.gamma.fit``, then ``ppf(q)``) or ``"percentile"`` (``np.quantile``).
        q: Quantile in (0, 1).
    """
    s = np.asarray(normal_scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise ValueError("fit_threshold: no finite normal scores to fit a threshold on")
    if not 0.0 < q < 1.0:
        raise ValueError(f"fit_threshold: q={q} must be in (0, 1) (score.threshold_q)")
    if method == "percentile":
        return float(np.quantile(s, q))
    if method != "gamma":
        raise ValueError(f"fit_threshold: method {method!r} unknown; use gamma or percentile (score.threshold)")
    if s.size < 3 or np.ptp(s) <= 1e-12 * max(1.0, abs(s.mean())):
        # A gamma cannot be fitted to (nearly) constant or too few scores: the largest one is the honest bound.
        return float(s.max())
    params = scipy.stats.gamma.fit(s)
    thr = float(scipy.stats.gamma.ppf(q, *params))
    return thr if np.isfinite(thr) else float(np.quantile(s, q))


def _parse_type_id(path: str | os.PathLike) -> tuple[str | None, str | None]:
    """Machine type (the folder above train/ or test/) and ID (from the DCASE name) of a clip path."""
    p = Path(path)
    parsed = parse_name(p)
    mid = parsed["machine_id"] if parsed else None
    if mid is None:
        m = re.search(r"id_(\d\d)", p.name)
        mid = m.group(1) if m else None
    mtype = p.parent.parent.name if p.parent.name.lower() in ("train", "test") and p.parent.parent.name else None
    return mtype, mid


class Detector:
    """A trained run, ready to score clips.

    Build it with :meth:`Detector.load`. ``scorers`` lists what the run supports (``idprob`` needs a
    fine-tuned classifier over at least two machine IDs); ``default_scorer`` is the config's choice,
    or ``knn`` when that is unavailable.

    Args:
        run: The run folder.
        cfg: The run's configuration.
        stats: Feature statistics of its training data.
        classes: ``(machine_type, machine_id)`` classes in classifier order.
        models: ``{"pretrain": RCMAE, "finetune": RCMAE}`` (fine-tuned may be absent).
        thresholds: ``{scorer: {"type/id": threshold}}``.
        references: ``{space: {"z": [n, D], "machine_type": [...], "machine_id": [...]}}`` normal train embeddings.
        device: Where the models run.
    """

    def __init__(self, run: Path, cfg: rconfig.RunConfig, stats: FeatureStats, classes: list[tuple[str, str]],
                 models: dict[str, RCMAE], thresholds: dict | None = None, references: dict | None = None,
                 device: str | torch.device = "cpu", clipstats: dict | None = None,
                 moments: dict | None = None) -> None:
        self.run = Path(run)
        # Per-band mean/std log-mel of the normal training clips ({"z", "machine_type", "machine_id", "path"}).
        self.clipstats = clipstats
        # {scorer: {"type/id": [mean, std]}} of the normal training scores (for ``ensemble``).
        self.moments = moments or {}
        self._maha_cache: dict[tuple, object] = {}
        self._memo: dict[tuple, tuple] = {}
        self.cfg = cfg
        self.stats = stats
        self.classes = [tuple(c) for c in classes]
        self.class_index = {c: i for i, c in enumerate(self.classes)}
        self.models = {k: m.to(device).eval() for k, m in models.items()}
        self.thresholds = thresholds or {}
        self.references = references or {}
        self.device = torch.device(device)
        self.family = cfg.family
        if self.family == "margin":
            # The margin classifier computes its own log-mel and Tgram from the waveform: its input is the clip.
            self.logmel, self.stats = _WaveformInput().to(self.device), _IdentityStats()
        else:
            self.logmel = LogMel(cfg.features).to(self.device)
        self.notes: list[str] = []
        self.scorers = [s for s in SCORERS if self._available(s)]
        default = cfg.score.default_scorer
        if default not in self.scorers:
            fallback = "knn"
            self.notes.append(f"default scorer {default} is unavailable for this run "
                              f"({self._why_unavailable(default)}); using {fallback}")
            default = fallback
        self.default_scorer = default

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def load(cls, run: str | os.PathLike, device: str | torch.device | None = None, fit: bool = True) -> Detector:
        """Load a run folder (fine-tuned weights when present, else pretrained).

        Args:
            run: The run folder.
            device: ``cpu`` (default) or e.g. ``cuda:0``.
            fit: When thresholds or train embeddings are missing, compute them from the run's data.
        """
        run = Path(run)
        if not run.is_dir():
            raise FileNotFoundError(f"{run}: run folder not found; pass --run a folder made by rcmae pretrain")
        info = read_run_json(run)
        cfg = rconfig.load_config(run / "config.yaml")
        stats = FeatureStats.load(run / "stats.json")
        pre = checkpoint_path(run, "pretrain", "last")
        if not pre.is_file():
            raise RunFolderError(f"{run}: no checkpoints/{pre.name}; pretrain the run first")
        models = {"pretrain": _model_from_checkpoint(pre)[0]}
        fin = checkpoint_path(run, "finetune", "last")
        if cfg.family == "margin":
            # One stage: the classifier is the "finetune" (classifier) space; idprob and knn read it there.
            models = {"finetune": models["pretrain"]}
        elif fin.is_file():
            models["finetune"] = _model_from_checkpoint(fin)[0]
        classes = [tuple(c) for c in info.get("classes", [])]
        thr_path = run / "thresholds.json"
        thr_json = read_json(thr_path) if thr_path.is_file() else {}
        thresholds = thr_json.get("thresholds", {})
        moments = thr_json.get("moments", {})
        clipstats = _load_rows(run / "references" / "clipstats.npz")
        references = {}
        for space in _SPACES:
            path = run / "embeddings" / f"{space}.npz"
            if path.is_file() and space in models:
                references[space] = _load_rows(path)
        det = cls(run, cfg, stats, classes, models, thresholds, references, device or "cpu", clipstats, moments)
        # Runs fitted before the joint-space scorers lack clipstats and moments: fit them once.
        if fit and (not thresholds or set(det._spaces_needed()) - set(references)
                    or (clipstats is None and det.family != "margin") or "moments" not in thr_json):
            fit_run(run)
            return cls.load(run, device=device, fit=False)
        return det

    def _spaces_needed(self) -> list[str]:
        return list(self.models)

    def _available(self, scorer: str) -> bool:
        return not self._why_unavailable(scorer)

    def _why_unavailable(self, scorer: str) -> str:
        if self.family == "margin" and scorer in ("recon", "recon_topk", "knn_joint", "maha"):
            return "the margin classifier has no decoder or band-statistics space (use idprob, knn or ensemble)"
        if scorer == "idprob":
            if len(self.classes) < 2:
                return "a single machine ID: no classes to tell apart"
            if "finetune" not in self.models or self.models["finetune"].head is None:
                return "the run is not fine-tuned"
        if scorer not in SCORERS:
            return f"unknown scorer; choose one of {', '.join(SCORERS)}"
        if scorer == "ensemble":
            missing = [c for c in self.cfg.score.ensemble if self._why_unavailable(c)]
            if missing:
                return f"its part(s) {', '.join(missing)} are unavailable (score.ensemble)"
        return ""

    def _scorer(self, scorer: str | None) -> str:
        scorer = scorer or self.default_scorer
        if scorer not in SCORERS:
            raise ScoringError(f"unknown scorer {scorer!r}; choose one of {', '.join(SCORERS)}")
        if scorer not in self.scorers:
            raise ScoringError(f"scorer {scorer} is unavailable for {self.run} ({self._why_unavailable(scorer)}); "
                               f"use one of {', '.join(self.scorers)}")
        return scorer

    @property
    def knn_space(self) -> str:
        """The embedding space of the knn scorer (``finetune`` falls back to ``pretrain`` when not fine-tuned)."""
        space = self.cfg.score.knn_space
        return space if space in self.models else "pretrain"

    # ---------------------------------------------------------------------------------------- features
    def features(self, waves: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Normalised log-mels ``[B, F, T]`` of waveforms ``[B, N]``."""
        with torch.no_grad():
            x = self.logmel(torch.as_tensor(np.asarray(waves), dtype=torch.float32).to(self.device))
            return self.stats.apply(x).float()

    def _windows(self, x: torch.Tensor) -> list[torch.Tensor]:
        crop = self.cfg.pretrain.crop_frames
        if crop is None:
            return [x]
        return [x[..., s : s + crop] for s in window_starts(x.shape[-1], crop)]

    @torch.no_grad()
    def embed(self, x: torch.Tensor, space: str = "finetune") -> torch.Tensor:
        """Embeddings ``z [B, D]`` of normalised log-mels (mean over crop windows when the run trains on crops)."""
        model = self.models[space if space in self.models else "pretrain"]
        out = []
        for b in range(0, len(x), self.cfg.score.batch_size):
            xb = x[b : b + self.cfg.score.batch_size].to(self.device)
            out.append(torch.stack([model.embed(w) for w in self._windows(xb)]).mean(0))
        return torch.cat(out) if out else torch.empty(0)

    # ----------------------------------------------------------------------------------------- scorers
    def _class_indices(self, machine_types: Sequence[str], machine_ids: Sequence[str]) -> list[int]:
        out = []
        for t, i in zip(machine_types, machine_ids, strict=True):
            key = (str(t), str(i))
            if key not in self.class_index:
                known = ", ".join(f"{a}/{b}" for a, b in self.classes)
                raise ScoringError(f"machine {t} id {i} was not in this run's training data (known: {known}); "
                                   "pass the right --machine-type/--machine-id or train on it")
            out.append(self.class_index[key])
        return out

    @torch.no_grad()
    def class_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax over machine-ID classes ``[B, C]`` (mean over crop windows)."""
        model = self.models["finetune"]
        probs = []
        for b in range(0, len(x), self.cfg.score.batch_size):
            xb = x[b : b + self.cfg.score.batch_size].to(self.device)
            probs.append(torch.stack([torch.softmax(model.classify(model.embed(w)).float(), -1)
                                      for w in self._windows(xb)]).mean(0))
        return torch.cat(probs)

    @torch.no_grad()
    def _idprob(self, x: torch.Tensor, machine_types, machine_ids) -> np.ndarray:
        idx = torch.tensor(self._class_indices(machine_types, machine_ids), device=self.device)
        model = self.models["finetune"]
        out = []
        for b in range(0, len(x), self.cfg.score.batch_size):
            xb = x[b : b + self.cfg.score.batch_size].to(self.device)
            ib = idx[b : b + self.cfg.score.batch_size]
            # float64: a confident classifier's float32 -log p is exactly 0 (p rounds to 1) for most clips, and
            # those ties flatten the ranking (bench/results/idprob.md).
            per_window = [-torch.log_softmax(model.classify(model.embed(w)).double(), -1).gather(1, ib[:, None])[:, 0]
                          for w in self._windows(xb)]
            out.append(torch.stack(per_window).mean(0))
        return torch.cat(out).cpu().numpy().astype(np.float64)

    def _reference(self, mtype: str, mid: str) -> np.ndarray:
        ref = self.references.get(self.knn_space)
        if ref is None:
            raise ScoringError(f"{self.run}: no training embeddings for knn; run `rcmae evaluate --run {self.run}`")
        sel = (ref["machine_type"] == mtype) & (ref["machine_id"] == mid)
        if not sel.any():
            raise ScoringError(f"machine {mtype} id {mid} has no normal training clips in {self.run}; "
                               "pass the right --machine-type/--machine-id or train on it")
        return ref["z"][sel]

    def _knn(self, x: torch.Tensor, machine_types, machine_ids, paths=None) -> np.ndarray:
        z = self._embed_memo(x, self.knn_space)
        refs = [self._reference(str(t), str(i)) for t, i in zip(machine_types, machine_ids, strict=True)]
        excl = None
        if paths is not None:
            _, excl = self._refs_and_exclusions(self.references[self.knn_space], machine_types, machine_ids, paths,
                                                "knn")
        return knn_distances(z, refs, self.cfg.score.knn_k, exclude=excl)

    @torch.no_grad()
    def _recon(self, x: torch.Tensor) -> np.ndarray:
        model = self.models["pretrain"]
        n = self.cfg.score.recon_masks
        out = np.empty(len(x), dtype=np.float64)
        for row in range(len(x)):
            errs = []
            for w in self._windows(x[row : row + 1].to(self.device)):
                # The clip repeated once per mask, drawn from a fixed stream: per-clip, batch-independent.
                gen = make_generator(_RECON_SEED, device=self.device)
                reps = w.expand(n, -1, -1)
                errs.append(model.reconstruction_error(reps, self.cfg.score.recon_mask_ratio, gen, n_masks=1).mean())
            out[row] = float(torch.stack(errs).mean())
        return out

    def _embed_memo(self, x: torch.Tensor, space: str) -> np.ndarray:
        # fit_run and ensemble score the same tensor with several scorers: embed it once per space.
        key = ("embed", space)
        hit = self._memo.get(key)
        if hit is not None and hit[0] is x:
            return hit[1]
        z = self.embed(x, space).float().cpu().numpy()
        self._memo[key] = (x, z)
        return z

    def _rows_of(self, table: dict, mtype: str, mid: str, what: str) -> np.ndarray:
        sel = (table["machine_type"] == mtype) & (table["machine_id"] == mid)
        if not sel.any():
            raise ScoringError(f"machine {mtype} id {mid} was not in this run's training data ({what}: no normal "
                               "training clips); pass the right --machine-type/--machine-id or train on it")
        return np.flatnonzero(sel)

    def _refs_and_exclusions(self, table: dict, machine_types, machine_ids, paths, what: str):
        refs, excl = [], []
        for n, (t, i) in enumerate(zip(machine_types, machine_ids, strict=True)):
            rows = self._rows_of(table, str(t), str(i), what)
            refs.append(rows)
            own = np.flatnonzero(table["path"][rows] == paths[n]) if paths is not None else np.empty(0, int)
            excl.append(int(own[0]) if own.size else None)
        return refs, excl

    def joint_space(self, x: torch.Tensor, weight: float) -> tuple[np.ndarray, np.ndarray, dict]:
        """``(queries, references, reference table)`` in the joint space (:func:`joint_features`) of ``x``."""
        if self.clipstats is None:
            raise ScoringError(f"{self.run}: no references/clipstats.npz; run `rcmae evaluate --run {self.run}`")
        ref = self.references.get(self.knn_space)
        if ref is None:
            raise ScoringError(f"{self.run}: no training embeddings; run `rcmae evaluate --run {self.run}`")
        if not np.array_equal(ref["path"], self.clipstats["path"]):
            raise ScoringError(f"{self.run}: embeddings and clipstats come from different clips; "
                               f"run `rcmae evaluate --run {self.run}` after deleting thresholds.json")
        cs = self.clipstats["z"].astype(np.float64)
        mu, sd = cs.mean(0), cs.std(0)
        q = joint_features(self._embed_memo(x, self.knn_space), clip_stats(x).double().cpu().numpy(), mu, sd, weight)
        return q, joint_features(ref["z"], cs, mu, sd, weight), ref

    def _joint(self, x: torch.Tensor, machine_types, machine_ids, paths=None) -> np.ndarray:
        q, ref_joint, ref = self.joint_space(x, self.cfg.score.joint_weight)
        rows, excl = self._refs_and_exclusions(ref, machine_types, machine_ids, paths, "knn_joint")
        return knn_euclidean(q, [ref_joint[r] for r in rows], self.cfg.score.knn_k, exclude=excl)

    def _maha(self, x: torch.Tensor, machine_types, machine_ids, paths=None) -> np.ndarray:
        w = self.cfg.score.maha_weight
        q, ref_joint, ref = self.joint_space(x, w)
        rows, excl = self._refs_and_exclusions(ref, machine_types, machine_ids, paths, "maha")
        out = np.empty(len(q))
        for n, (r, e) in enumerate(zip(rows, excl, strict=True)):
            # One Gaussian per machine ID (per left-out clip when fitting thresholds), reused across calls.
            key = (self.knn_space, w, int(r[0]), len(r), e)
            model = self._maha_cache.get(key)
            if model is None:
                model = fit_gaussian(np.delete(ref_joint[r], e, axis=0) if e is not None else ref_joint[r])
                self._maha_cache[key] = model
            out[n] = mahalanobis(q[n : n + 1], *model)[0]
        return out

    @torch.no_grad()
    def _recon_topk(self, x: torch.Tensor) -> np.ndarray:
        model = self.models["pretrain"]
        out = np.empty(len(x), dtype=np.float64)
        for row in range(len(x)):
            errs = []
            for w in self._windows(x[row : row + 1].to(self.device)):
                gen = make_generator(_RECON_SEED, device=self.device)  # the recon scorer's masks
                errs.append(model.masked_patch_errors(w.expand(self.cfg.score.recon_masks, -1, -1),
                                                      self.cfg.score.recon_mask_ratio, gen).flatten())
            out[row] = topk_mean(torch.cat(errs).cpu().numpy(), self.cfg.score.recon_topk)
        return out

    def _ensemble(self, x: torch.Tensor, machine_types, machine_ids, paths=None) -> np.ndarray:
        parts = []
        for name in self.cfg.score.ensemble:
            moments = self.moments.get(name)
            if moments is None:
                raise ScoringError(f"{self.run}: no training-score moments of {name} for the ensemble; "
                                   f"run `rcmae evaluate --run {self.run}` after deleting thresholds.json")
            s = self._scores(x, machine_types, machine_ids, name, paths)
            mean_std = np.array([moments.get(f"{t}/{i}", [np.nan, np.nan])
                                 for t, i in zip(machine_types, machine_ids, strict=True)], dtype=np.float64)
            if np.isnan(mean_std).any():
                raise ScoringError(f"ensemble: a machine ID has no training-score moments of {name}; "
                                   "train on it or pick another scorer")
            parts.append((s - mean_std[:, 0]) / np.maximum(mean_std[:, 1], 1e-12))
        return np.mean(parts, axis=0)

    def _scores(self, x: torch.Tensor, machine_types: Sequence[str], machine_ids: Sequence[str], scorer: str,
                paths: Sequence[str] | None = None) -> np.ndarray:
        """Scores of ``x``; with ``paths`` (training clips), each clip is left out of its own reference set."""
        key = ("score", scorer)
        hit = self._memo.get(key)
        tag = (tuple(map(str, machine_types)), tuple(map(str, machine_ids)), None if paths is None else tuple(paths))
        if hit is not None and hit[0] is x and hit[1] == tag:
            return hit[2]
        if scorer == "idprob":
            scores = self._idprob(x, machine_types, machine_ids)
        elif scorer == "knn":
            scores = self._knn(x, machine_types, machine_ids, paths)
        elif scorer == "knn_joint":
            scores = self._joint(x, machine_types, machine_ids, paths)
        elif scorer == "maha":
            scores = self._maha(x, machine_types, machine_ids, paths)
        elif scorer == "recon_topk":
            scores = self._recon_topk(x)
        elif scorer == "ensemble":
            scores = self._ensemble(x, machine_types, machine_ids, paths)
        else:
            scores = self._recon(x)
        self._memo[key] = (x, tag, scores)
        return scores

    def score_logmels(self, x: torch.Tensor, machine_types: Sequence[str], machine_ids: Sequence[str],
                      scorer: str | None = None) -> np.ndarray:
        """Scores of normalised log-mels ``x [B, F, T]`` (the one place every score is computed)."""
        scorer = self._scorer(scorer)
        if len(x) == 0:
            return np.empty(0)
        return self._scores(x, machine_types, machine_ids, scorer)

    def score_waveforms(self, waves: np.ndarray | torch.Tensor, machine_types: Sequence[str],
                        machine_ids: Sequence[str], scorer: str | None = None) -> np.ndarray:
        """Scores ``[B]`` of waveforms ``[B, N]`` (16 kHz, the run's clip length)."""
        return self.score_logmels(self.features(waves), machine_types, machine_ids, scorer)

    def threshold(self, scorer: str, machine_type: str, machine_id: str) -> float | None:
        """The fitted decision threshold of a machine ID (``None`` when not fitted)."""
        return self.thresholds.get(scorer, {}).get(f"{machine_type}/{machine_id}")

    def _row(self, path: str, mtype: str, mid: str, scorer: str, score: float, probs: dict | None) -> dict:
        thr = self.threshold(scorer, mtype, mid)
        return {"path": path, "machine_type": mtype, "machine_id": mid, "scorer": scorer, "score": float(score),
                "threshold": thr, "decision": None if thr is None else ("anomaly" if score > thr else "normal"),
                "probs": probs, "error": None}

    def _probs(self, x: torch.Tensor) -> list[dict | None]:
        if "idprob" not in self.scorers:
            return [None] * len(x)
        p = self.class_probs(x).cpu().numpy()
        return [{f"{t}/{i}": float(v) for (t, i), v in zip(self.classes, row, strict=True)} for row in p]

    def score_paths(self, paths: Sequence[str | os.PathLike], scorer: str | None = None,
                    machine_type: str | None = None, machine_id: str | None = None,
                    progress: bool = False) -> list[dict]:
        """Score wav files (folders are expanded to their ``*.wav``); a bad file gets ``error``, never a crash.

        Returns:
            One dict per clip: ``path, machine_type, machine_id, scorer, score, threshold, decision, probs, error``.
        """
        scorer = self._scorer(scorer)
        files: list[Path] = []
        for p in paths:
            p = Path(p)
            files.extend(sorted(p.rglob("*.wav")) if p.is_dir() else [p])
        rows = []
        for p in tqdm(files, desc=f"scoring ({scorer})", unit="clip", disable=not progress):
            mtype, mid = _parse_type_id(p)
            mtype, mid = machine_type or mtype, machine_id or mid
            base = {"path": str(p), "machine_type": mtype, "machine_id": mid, "scorer": scorer, "score": None,
                    "threshold": None, "decision": None, "probs": None}
            if mtype is None or mid is None:
                rows.append({**base, "error": "machine type/ID not in the path; pass --machine-type and "
                                              "--machine-id"})
                continue
            try:
                wave = load_audio(p, sample_rate=self.cfg.data.sample_rate, duration=self.cfg.data.duration,
                                  channel=self.cfg.data.channel)
                x = self.features(wave[None])
                score = self.score_logmels(x, [mtype], [mid], scorer)[0]
                rows.append(self._row(str(p), mtype, mid, scorer, score, self._probs(x)[0]))
            except (AudioError, ScoringError, FileNotFoundError) as err:
                rows.append({**base, "error": str(err)})
        return rows

    def score(self, wav_or_path: str | os.PathLike | np.ndarray | torch.Tensor, scorer: str | None = None,
              machine_type: str | None = None, machine_id: str | None = None) -> dict:
        """Score one clip (a path, or a 16 kHz waveform with ``machine_type`` and ``machine_id``).

        Returns:
            A dict like one :meth:`score_paths` row. Raises :class:`ScoringError` / ``AudioError`` on bad input.
        """
        scorer = self._scorer(scorer)
        if isinstance(wav_or_path, str | os.PathLike):
            row = self.score_paths([wav_or_path], scorer, machine_type, machine_id)[0]
            if row["error"]:
                raise ScoringError(f"{wav_or_path}: {row['error']}")
            return row
        if machine_type is None or machine_id is None:
            raise ScoringError("score(waveform): pass machine_type and machine_id (a waveform has no file name)")
        wave = np.asarray(wav_or_path, dtype=np.float32)
        if wave.ndim != 1 or wave.size == 0 or not np.isfinite(wave).all():
            raise ScoringError(f"score(waveform): expected a finite 1-D waveform, got shape {wave.shape}")
        n = int(round(self.cfg.data.duration * self.cfg.data.sample_rate))
        wave = np.pad(wave[:n], (0, max(0, n - wave.size)))
        x = self.features(wave[None])
        score = self.score_logmels(x, [machine_type], [machine_id], scorer)[0]
        return self._row("<waveform>", str(machine_type), str(machine_id), scorer, score, self._probs(x)[0])


class _WaveformInput(torch.nn.Module):
    """The margin family's "features": the waveform batch itself ``[B, N]`` (the model holds its front-end)."""

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(wave, dtype=torch.float32)


class _IdentityStats:
    """Stands in for :class:`FeatureStats` where the model normalises its own log-mel."""

    @staticmethod
    def apply(x: torch.Tensor) -> torch.Tensor:
        return x


def knn_distances(z: np.ndarray, references: Sequence[np.ndarray], k: int = 1,
                  exclude: Sequence[int | None] | None = None) -> np.ndarray:
    """Mean cosine distance of each ``z[i]`` to its ``k`` nearest rows of ``references[i]``.

    Args:
        z: Query embeddings ``[B, D]``.
        references: One ``[n_i, D]`` array per query (the normal train embeddings of its machine ID).
        k: Neighbours averaged (capped at the reference size).
        exclude: Per query, a reference row to leave out (leave-one-out threshold fitting), or ``None``.
    """
    out = np.empty(len(z), dtype=np.float64)
    for i, (q, ref) in enumerate(zip(z, references, strict=True)):
        qn = q / max(np.linalg.norm(q), 1e-12)
        rn = ref / np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-12)
        d = 1.0 - rn.astype(np.float64) @ qn.astype(np.float64)
        if exclude is not None and exclude[i] is not None:
            d = np.delete(d, exclude[i])
        if d.size == 0:
            raise ScoringError("knn: a machine ID with a single training clip has no neighbour to compare with")
        kk = min(k, d.size)
        out[i] = float(np.sort(d)[:kk].mean())
    return out


def knn_euclidean(q: np.ndarray, references: Sequence[np.ndarray], k: int = 1,
                  exclude: Sequence[int | None] | None = None) -> np.ndarray:
    """Mean Euclidean distance of each ``q[i]`` to its ``k`` nearest rows of ``references[i]``.

    Args:
        q: Query vectors ``[B, D]``.
        references: One ``[n_i, D]`` array per query.
        k: Neighbours averaged (capped at the reference size).
        exclude: Per query, a reference row to leave out (leave-one-out), or ``None``.
    """
    out = np.empty(len(q), dtype=np.float64)
    for i, (v, ref) in enumerate(zip(q, references, strict=True)):
        d = np.sqrt(((np.asarray(ref, dtype=np.float64) - np.asarray(v, dtype=np.float64)) ** 2).sum(axis=1))
        if exclude is not None and exclude[i] is not None:
            d = np.delete(d, exclude[i])
        if d.size == 0:
            raise ScoringError("knn_joint: a machine ID with a single training clip has no neighbour to compare with")
        out[i] = float(np.sort(d)[: min(k, d.size)].mean())
    return out


def joint_features(z: np.ndarray, stats: np.ndarray, mean: np.ndarray, std: np.ndarray,
                   weight: float = 1.0) -> np.ndarray:
    """The ``knn_joint`` space: ``[z / |z|, weight * (stats - mean) / std / sqrt(dim)]``.

    Both blocks have a comparable (unit-order) norm, so neither drowns the other; ``stats`` are the
    per-band mean/std log-mel of a clip (``rcmae.model.clip_stats``), ``mean``/``std`` those of the training clips.
    """
    z = np.asarray(z, dtype=np.float64)
    zn = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    st = (np.asarray(stats, dtype=np.float64) - mean) / np.maximum(std, 1e-6) / np.sqrt(stats.shape[1])
    return np.concatenate([zn, weight * st], axis=1)


def fit_gaussian(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and precision matrix of ``z [n, D]`` with a Ledoit-Wolf shrunk covariance (few clips, many dims)."""
    from sklearn.covariance import ledoit_wolf

    z = np.asarray(z, dtype=np.float64)
    if len(z) < 2:
        raise ScoringError("maha: a machine ID needs at least 2 normal training clips for a covariance")
    cov, _ = ledoit_wolf(z)
    # The shrunk covariance is well conditioned: a plain inverse is ~10x faster than the estimator's pinvh,
    # which matters for the leave-one-out fits (one per training clip).
    return z.mean(axis=0), np.linalg.inv(cov)


def mahalanobis(z: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Mahalanobis distances ``sqrt((z - mean) P (z - mean))`` of the rows of ``z``."""
    d = np.asarray(z, dtype=np.float64) - mean
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, precision, d), 0.0))


def topk_mean(errors: np.ndarray, fraction: float) -> float:
    """Mean of the largest ``ceil(fraction * n)`` values (at least one) of ``errors``."""
    errors = np.asarray(errors, dtype=np.float64).ravel()
    k = max(1, int(np.ceil(fraction * errors.size)))
    return float(np.partition(errors, errors.size - k)[errors.size - k :].mean())


def _load_rows(path: Path) -> dict | None:
    """The train rows of an ``embeddings/*.npz``-schema file, or ``None`` when it does not exist."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as npz:
        train = npz["split"] == "train"
        return {"z": npz["z"][train].astype(np.float32), "machine_type": npz["machine_type"][train].astype(str),
                "machine_id": npz["machine_id"][train].astype(str), "path": npz["path"][train].astype(str)}


# --------------------------------------------------------------------------------- run-level fitting/evaluation
def _save_embeddings(path: Path, z: np.ndarray, paths, types, ids, split: str, labels, keep_other: bool) -> None:
    """Write/merge ``embeddings/<space>.npz`` rows of one split (rows of the other split are kept)."""
    cols = {"z": np.asarray(z, dtype=np.float32), "path": np.asarray(paths, dtype=str),
            "machine_type": np.asarray(types, dtype=str), "machine_id": np.asarray(ids, dtype=str),
            "split": np.asarray([split] * len(paths), dtype=str), "label": np.asarray(labels, dtype=str)}
    if keep_other and path.is_file():
        with np.load(path, allow_pickle=False) as old:
            other = old["split"] != split
            if other.any() and old["z"].shape[1] == cols["z"].shape[1]:
                cols = {k: np.concatenate([old[k][other], v]) for k, v in cols.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, **cols)
    os.replace(tmp, path)


def fit_run(run: str | os.PathLike, train: TrainData | None = None, progress: bool = True) -> dict:
    """Embed the normal training clips and fit per-ID thresholds for every available scorer.

    Writes ``embeddings/{pretrain,finetune}.npz`` (train rows), ``thresholds.json`` and
    ``train_scores.csv``. ``train`` passes log-mels already in memory (the end of training).
    """
    run = Path(run)
    det = Detector.load(run, fit=False)
    cfg = det.cfg
    if train is None and det.family == "margin":
        from rcmae.margin_train import load_train_waves

        train = load_train_waves(read_run_json(run)["data"], cfg, progress=progress)
    elif train is None:
        from rcmae.train import load_train_data

        info = read_run_json(run)
        train, _ = load_train_data(info["data"], cfg, stats=det.stats, progress=progress)
    types, ids = train.machine_types, train.machine_ids
    for space in det.models:
        z = det.embed(train.x, space).float().cpu().numpy()
        _save_embeddings(run / "embeddings" / f"{space}.npz", z, train.paths, types, ids, "train",
                         ["normal"] * len(z), keep_other=False)  # the weights changed: old test rows are stale
        det.references[space] = {"z": z, "machine_type": np.asarray(types), "machine_id": np.asarray(ids),
                                 "path": np.asarray(train.paths)}
    if det.family != "margin":  # band statistics of log-mels (the margin family's inputs are waveforms)
        cs = clip_stats(train.x).float().cpu().numpy()
        _save_embeddings(run / "references" / "clipstats.npz", cs, train.paths, types, ids, "train",
                         ["normal"] * len(cs), keep_other=False)
        det.clipstats = {"z": cs, "machine_type": np.asarray(types), "machine_id": np.asarray(ids),
                         "path": np.asarray(train.paths)}
    thresholds: dict[str, dict[str, float]] = {}
    moments: dict[str, dict[str, list[float]]] = {}
    det.moments = moments
    rows = []
    paths = list(map(str, train.paths))
    for scorer in det.scorers:
        try:
            # Leave-one-out (knn, knn_joint, maha): a training clip is not its own reference.
            scores = det._scores(train.x, types, ids, scorer, paths)
        except ScoringError as err:
            print(f"{scorer}: {err}; its threshold is not fitted", file=sys.stderr)
            continue
        thresholds[scorer], moments[scorer] = {}, {}
        for key in sorted(set(zip(types, ids, strict=True))):
            sel = [n for n, ti in enumerate(zip(types, ids, strict=True)) if ti == key]
            thresholds[scorer][f"{key[0]}/{key[1]}"] = fit_threshold(scores[sel], cfg.score.threshold,
                                                                     cfg.score.threshold_q)
            moments[scorer][f"{key[0]}/{key[1]}"] = [float(np.mean(scores[sel])), float(np.std(scores[sel]))]
        rows += [{"path": p, "machine_type": t, "machine_id": i, "scorer": scorer, "score": float(s)}
                 for p, t, i, s in zip(train.paths, types, ids, scores, strict=True)]
    write_json(run / "thresholds.json", {"method": cfg.score.threshold, "q": cfg.score.threshold_q,
                                         "scorers": det.scorers, "default_scorer": det.default_scorer,
                                         "thresholds": thresholds, "moments": moments})
    frame = pd.DataFrame(rows, columns=["path", "machine_type", "machine_id", "scorer", "score"])
    atomic_write_text(run / "train_scores.csv", frame.to_csv(index=False))
    for note in det.notes:
        print(note, flush=True)
    update_run_json(run, scorers=det.scorers, default_scorer=det.default_scorer, notes=det.notes)
    return thresholds


def evaluate_run(run: str | os.PathLike, data: str | os.PathLike | None = None, scorer: str | None = None,
                 progress: bool = True) -> dict[str, dict]:
    """Score every labelled test clip with every scorer (or one) and write ``eval/``.

    Writes ``eval/results.json`` and challenge CSVs for the default scorer, ``eval/results.<scorer>.json``
    and ``eval/<scorer>/`` (results + CSVs) for each, ``eval/scores.csv`` (every clip, score, threshold,
    decision), and adds the test rows to ``embeddings/{pretrain,finetune}.npz``.

    Returns:
        ``{scorer: results dict}`` (the ``rcmae.metrics.evaluate_scores`` schema).
    """
    run = Path(run)
    det = Detector.load(run)
    info = read_run_json(run)
    data = Path(data) if data is not None else Path(info["data"])
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: data folder not found; pass --data")
    index = index_dataset(data)
    test = index[(index["split"] == "test") & index["label"].isin(["normal", "anomaly"])].reset_index(drop=True)
    if test.empty:
        raise FileNotFoundError(f"{data}: no labelled test clips (<type>/test/normal_*, anomaly_*); pass --data")
    known = set(det.class_index) if det.classes else set()
    unknown = test[[(t, i) not in known for t, i in zip(test["machine_type"], test["machine_id"], strict=True)]]
    if len(unknown):
        print(f"evaluate: skipping {len(unknown)} test clips of machine IDs not in the run's training data",
              file=sys.stderr)
        test = test.drop(unknown.index).reset_index(drop=True)
    if test.empty:
        raise ValueError(f"{data}: none of its test clips belong to the run's machine IDs; evaluate on the right data")
    scorers = [det._scorer(scorer)] if scorer else list(det.scorers)
    x, kept, report = compute_logmels(list(test["path"]), det.logmel, det.cfg.data.sample_rate,
                                      det.cfg.data.duration, channel=det.cfg.data.channel, progress=progress,
                                      desc="test log-mels", transform=det.stats.apply)
    if report.skipped:
        print(report.summary(), file=sys.stderr)
    test = test.set_index("path").loc[kept].reset_index()
    types, ids = list(test["machine_type"].astype(str)), list(test["machine_id"].astype(str))
    out_dir = run / "eval"
    results: dict[str, dict] = {}
    scores_table = test[["path", "machine_type", "machine_id", "label"]].copy()
    skipped: dict[str, str] = {}
    for name in scorers:
        try:
            scores = det.score_logmels(x, types, ids, name)
        except ScoringError as err:
            # One scorer that cannot work on this run (e.g. too few clips for a covariance) must not
            # cost the user the others: report it and go on.
            skipped[name] = str(err)
            print(f"evaluate: scorer {name} skipped: {err}", file=sys.stderr)
            continue
        table = test.assign(score=scores)
        res = evaluate_scores(table, system=f"rcmae-{name}", data=str(data))
        write_results(res, table, out_dir / name, name="results.json")
        write_json(out_dir / f"results.{name}.json", res)
        if name == det.default_scorer:
            write_results(res, table, out_dir, name="results.json")
        thr = [det.threshold(name, t, i) for t, i in zip(types, ids, strict=True)]
        scores_table[f"score_{name}"] = scores
        scores_table[f"threshold_{name}"] = thr
        scores_table[f"decision_{name}"] = [None if h is None else ("anomaly" if s > h else "normal")
                                            for s, h in zip(scores, thr, strict=True)]
        results[name] = res
    if not results:
        raise ScoringError(f"{run}: no scorer could score this run ({'; '.join(skipped.values())})")
    if det.default_scorer not in results:
        stand_in = next(iter(results))
        print(f"evaluate: the default scorer {det.default_scorer} was skipped; eval/results.json holds {stand_in}",
              file=sys.stderr)
        write_results(results[stand_in], test.assign(score=scores_table[f"score_{stand_in}"]), out_dir,
                      name="results.json")
    atomic_write_text(out_dir / "scores.csv", scores_table.to_csv(index=False))
    for space in det.models:
        z = det.embed(x, space).float().cpu().numpy()
        _save_embeddings(run / "embeddings" / f"{space}.npz", z, list(test["path"]), types, ids, "test",
                         list(test["label"]), keep_other=True)
    update_run_json(run, evaluated={"data": str(data.resolve()), "scorers": list(results),
                                    "default_scorer": det.default_scorer, "skipped_scorers": skipped,
                                    "average": {k: v["average"] for k, v in results.items()}})
    return results
