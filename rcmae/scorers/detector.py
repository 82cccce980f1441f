"""`Detector`: a trained run ready to score clips, with every scorer the run supports."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rcmae.data.audio import AudioError, load_audio
from rcmae.data.checks import clip_windows
from rcmae.data.datasets import window_starts
from rcmae.data.features import FeatureStats, LogMel
from rcmae.data.names import parse_attributes, parse_name
from rcmae.files import read_json
from rcmae.models.rcmae import RCMAE
from rcmae.run import config as rconfig
from rcmae.run.checkpoint import model_from_checkpoint
from rcmae.run.folder import RunFolderError, checkpoint_path, read_run_json
from rcmae.run.trainset import TrainData
from rcmae.scorers import (
    RECON_SEED,
    SCORERS,
    Clips,
    EnsembleScorer,
    FrameModels,
    FrameScorer,
    IdProbScorer,
    JointKnnScorer,
    KnnScorer,
    MahaScorer,
    NormalSet,
    NormKnnScorer,
    ReconScorer,
    ReconTopkScorer,
    Scorer,
    ScoringError,
    StatsMahaScorer,
)
from rcmae.scorers.fitting import CLIP_FEATURES, fit_detector, load_rows, training_stamp
from rcmae.scorers.idprob import unit_probs

# The recon scorers' fixed mask stream (kept under its old name).
_RECON_SEED = RECON_SEED
_SPACES = ("pretrain", "finetune")


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
        classes: The classifier's ``(machine_type, name)`` classes in order: machine IDs / sections, or
            section + attribute classes (``finetune.classes``).
        models: ``{"pretrain": RCMAE, "finetune": RCMAE}`` (fine-tuned may be absent).
        thresholds: ``{scorer: {"type/id": threshold}}``.
        references: ``{space: {"z": [n, D], "machine_type": [...], "machine_id": [...]}}`` normal train embeddings.
        device: Where the models run.
        class_units: Each class's ``(machine_type, machine_id)`` unit (``None``: each class is its own unit).
    """

    def __init__(self, run: Path, cfg: rconfig.RunConfig, stats: FeatureStats, classes: list[tuple[str, str]],
                 models: dict[str, RCMAE], thresholds: dict | None = None, references: dict | None = None,
                 device: str | torch.device = "cpu", clipstats: dict | None = None,
                 moments: dict | None = None, bandstats: dict | None = None,
                 class_units: list[tuple[str, str]] | None = None) -> None:
        self.run = Path(run)
        # Per-band mean/std log-mel of the normal training clips ({"z", "machine_type", "machine_id", "path"}).
        self.clipstats = clipstats
        # Richer per-band statistics of the same clips (rcmae.scorers.frames.band_stats; stats_knn, stats_maha).
        self.bandstats = bandstats
        # {scorer: {"type/id": [mean, std]}} of the held-out normal training scores (the ensemble's z-scores);
        # one dict shared with the ensemble, filled in place by fit_run.
        self.moments = moments or {}
        self._memo: dict[tuple, tuple] = {}
        self.cfg = cfg
        self.stats = stats
        self.classes = [tuple(c) for c in classes]
        self.class_index = {c: i for i, c in enumerate(self.classes)}
        self.class_units = None if class_units is None else [tuple(u) for u in class_units]
        # The machine units (type, ID / section) the run knows: thresholds, references and `--machine-id` use them.
        self.units = sorted(set(self.class_units)) if self.class_units is not None else list(self.classes)
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
        self._families = self._build_scorers()
        self.refit()
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
        models = {"pretrain": model_from_checkpoint(pre)[0]}
        fin = checkpoint_path(run, "finetune", "last")
        if cfg.family == "margin":
            # One stage: the classifier is the "finetune" (classifier) space; idprob and knn read it there.
            models = {"finetune": models["pretrain"]}
        elif fin.is_file():
            models["finetune"] = model_from_checkpoint(fin)[0]
        classes = [tuple(c) for c in info.get("classes", [])]
        class_units = [tuple(u) for u in info["class_units"]] if info.get("class_units") else None
        thr_path = run / "thresholds.json"
        thr_json = read_json(thr_path) if thr_path.is_file() else {}
        thresholds = thr_json.get("thresholds", {})
        moments = thr_json.get("moments", {})
        clipstats = load_rows(run / "references" / "clipstats.npz")
        bandstats = load_rows(run / "references" / "bandstats.npz")
        references = {}
        for space in _SPACES:
            path = run / "embeddings" / f"{space}.npz"
            rows = load_rows(path) if path.is_file() and space in models else None
            if rows is not None:  # a damaged file counts as missing: refitted below
                references[space] = rows
        det = cls(run, cfg, stats, classes, models, thresholds, references, device or "cpu", clipstats, moments,
                  bandstats, class_units)
        # Fit once when anything is missing (runs fitted before the joint-space scorers lack clipstats and
        # moments) or stale (trained again since: the stamp of the training stages changed).
        # The margin family reads waveforms: it has no log-mel statistics or frame references to refit.
        log_mel_refs_missing = det.family != "margin" and (
            clipstats is None or bandstats is None or not (run / "references" / "frames.npz").is_file())
        if fit and (not thresholds or set(det._spaces_needed()) - set(references) or log_mel_refs_missing
                    or "moments" not in thr_json
                    or thr_json.get("fitted_on") != training_stamp(info)):
            fit_run(run)
            return cls.load(run, device=device, fit=False)
        return det

    def _spaces_needed(self) -> list[str]:
        return list(self.models)

    def _available(self, scorer: str) -> bool:
        return not self._why_unavailable(scorer)

    def _build_scorers(self) -> dict[str, Scorer]:
        """One scorer object per name (:data:`rcmae.scorers.SCORERS`), sharing this detector's models and memo."""
        sc, spaces, pre = self.cfg.score, list(self.models), self.models.get("pretrain")
        frames = FrameModels(self.run / "references" / "frames.npz")  # one fit for frame_pca and frame_maha
        return {
            "idprob": IdProbScorer(sc, self.run, self.models.get("finetune"), self.classes, self._windows,
                                   self.device, self.class_units, 1 + len(self.cfg.finetune.pseudo_classes)),
            "knn": KnnScorer(sc, self.run, spaces),
            "recon": ReconScorer(sc, self.run, pre, self._windows, self.device),
            "knn_joint": JointKnnScorer(sc, self.run, spaces),
            "maha": MahaScorer(sc, self.run, spaces),
            "recon_topk": ReconTopkScorer(sc, self.run, pre, self._windows, self.device),
            "knn_norm": NormKnnScorer(sc, self.run, lambda: self._families["knn"].space, "cosine", "knn_norm"),
            "stats_knn": NormKnnScorer(sc, self.run, lambda: "bandstats", "euclidean", "stats_knn"),
            "stats_maha": StatsMahaScorer(sc, self.run),
            "frame_pca": FrameScorer(sc, self.run, "pca", frames),
            "frame_maha": FrameScorer(sc, self.run, "maha", frames),
            "ensemble": EnsembleScorer(sc, self.run, lambda: self.cfg.score.ensemble,
                                       lambda name, clips: self._scores(clips.x, clips.machine_types,
                                                                        clips.machine_ids, name, clips.paths,
                                                                        clips.attributes),
                                       self.moments, self._why_unavailable),
        }

    def _why_unavailable(self, scorer: str) -> str:
        if scorer not in SCORERS:
            return f"unknown scorer; choose one of {', '.join(SCORERS)}"
        if self.family == "margin" and scorer in ("recon", "recon_topk", "knn_joint", "maha", "stats_knn",
                                                  "stats_maha", "frame_pca", "frame_maha"):
            return ("the margin classifier has no decoder, log-mel statistics or frame space "
                    "(use idprob, knn, knn_norm or ensemble)")
        if scorer == "ensemble" and self.moments:
            # Fitted, but some member had too few training clips per machine ID for held-out moments.
            lacking = [m for m in self.cfg.score.ensemble if m not in self.moments]
            if lacking:
                return (f"no held-out normal-score moments of {', '.join(lacking)} (too few training clips per "
                        "machine ID)")
        return self._families[scorer].unavailable()

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
    def _class_indices(self, machine_types: Sequence[str], machine_ids: Sequence[str],
                       attributes: Sequence[str] | None = None) -> list[list[int]]:
        return self._families["idprob"].class_indices(machine_types, machine_ids, attributes)

    @torch.no_grad()
    def class_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax over machine-ID classes ``[B, C]`` (mean over crop windows)."""
        model = self.models["finetune"]
        probs = []
        for b in range(0, len(x), self.cfg.score.batch_size):
            xb = x[b : b + self.cfg.score.batch_size].to(self.device)
            # With pseudo-classes: p(unit) summed over the unit's transforms (rcmae.scorers.idprob.unit_probs).
            probs.append(torch.stack([unit_probs(model.classify(model.embed(w)), self._families["idprob"].n_transforms)
                                      for w in self._windows(xb)]).mean(0))
        return torch.cat(probs)

    def _embed_memo(self, x: torch.Tensor, space: str) -> np.ndarray:
        # fit_run and ensemble score the same tensor with several scorers: embed it once per space.
        key = ("embed", space)
        hit = self._memo.get(key)
        if hit is not None and hit[0] is x:
            return hit[1]
        z = self.embed(x, space).float().cpu().numpy()
        self._memo[key] = (x, z)
        return z

    def _feature(self, x: torch.Tensor, name: str) -> np.ndarray:
        """Feature ``name`` of ``x`` for the scorers: an embedding space, ``clipstats`` or ``bandstats`` (memoised)."""
        if name in CLIP_FEATURES:
            hit = self._memo.get((name,))
            if hit is not None and hit[0] is x:
                return hit[1]
            cs = CLIP_FEATURES[name](x).float().cpu().numpy()
            self._memo[(name,)] = (x, cs)
            return cs
        return self._embed_memo(x, name)

    def _normal_set(self) -> NormalSet:
        tables = dict(self.references)
        if self.clipstats is not None:
            tables["clipstats"] = self.clipstats
        if self.bandstats is not None:
            tables["bandstats"] = self.bandstats
        return NormalSet(tables)

    def refit(self, logmels: tuple | None = None) -> None:
        """Fit every scorer on the normal training tables (and their log-mels ``(x, types, ids, paths)``)."""
        normal = self._normal_set()
        normal.logmels = logmels
        for family in self._families.values():
            family.fit(normal)
        self._memo.clear()

    def _scores(self, x: torch.Tensor, machine_types: Sequence[str], machine_ids: Sequence[str], scorer: str,
                paths: Sequence[str] | None = None, attributes: Sequence[str] | None = None) -> np.ndarray:
        """Scores of ``x``; with ``paths`` (training clips), each clip is left out of its own reference set.

        ``attributes`` (the clips' attribute tails) tell ``idprob`` each clip's own section + attribute class.
        """
        key = ("score", scorer)
        hit = self._memo.get(key)
        tag = (tuple(map(str, machine_types)), tuple(map(str, machine_ids)), None if paths is None else tuple(paths),
               None if attributes is None else tuple(map(str, attributes)))
        if hit is not None and hit[0] is x and hit[1] == tag:
            return hit[2]
        clips = Clips(x, machine_types, machine_ids, paths, lambda name: self._feature(x, name), attributes)
        scores = self._families[scorer].score(clips)
        self._memo[key] = (x, tag, scores)
        return scores

    def score_logmels(self, x: torch.Tensor, machine_types: Sequence[str], machine_ids: Sequence[str],
                      scorer: str | None = None, attributes: Sequence[str] | None = None) -> np.ndarray:
        """Scores of normalised log-mels ``x [B, F, T]`` (the one place every score is computed).

        ``attributes``: the clips' DCASE 2022+ attribute tails (``""`` or ``None`` = unknown), read by ``idprob``
        when the run's classes are section + attribute classes.
        """
        scorer = self._scorer(scorer)
        if len(x) == 0:
            return np.empty(0)
        return self._scores(x, machine_types, machine_ids, scorer, attributes=attributes)

    def score_waveforms(self, waves: np.ndarray | torch.Tensor, machine_types: Sequence[str],
                        machine_ids: Sequence[str], scorer: str | None = None,
                        attributes: Sequence[str] | None = None) -> np.ndarray:
        """Scores ``[B]`` of waveforms ``[B, N]`` (16 kHz, the run's clip length)."""
        return self.score_logmels(self.features(waves), machine_types, machine_ids, scorer, attributes)

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
            if p.is_dir():
                found = sorted(f for f in p.rglob("*") if f.suffix.lower() == ".wav" and f.is_file())
                if not found:
                    raise ScoringError(f"{p}: no .wav files in this folder (or below it); give a folder of clips")
                files.extend(found)
            else:
                files.append(p)
        rows = []
        for p in tqdm(files, desc=f"scoring ({scorer})", unit="clip", disable=not progress):
            mtype, mid = _parse_type_id(p)
            mtype, mid = machine_type or mtype, machine_id or mid
            base = {"path": str(p), "machine_type": mtype, "machine_id": mid, "scorer": scorer, "score": None,
                    "threshold": None, "decision": None, "probs": None, "note": None}
            if not p.exists():
                rows.append({**base, "error": "no such file; check the path"})
                continue
            if mtype is None or mid is None:
                rows.append({**base, "error": "machine type/ID not in the path; pass --machine-type and "
                                              "--machine-id"})
                continue
            try:
                wave = load_audio(p, sample_rate=self.cfg.data.sample_rate, duration=None,
                                  channel=self.cfg.data.channel)
                rows.append(self._score_whole(wave, str(p), mtype, mid, scorer, parse_attributes(p)))
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
        return self._score_whole(wave, "<waveform>", str(machine_type), str(machine_id), scorer)

    def _score_whole(self, wave: np.ndarray, path: str, mtype: str, mid: str, scorer: str,
                     attributes: str = "") -> dict:
        """Score a whole clip: run-length windows (``rcmae.data.checks.clip_windows``), highest score kept, noted."""
        sr = self.cfg.data.sample_rate
        windows, note = clip_windows(wave, int(round(self.cfg.data.duration * sr)), sr)
        scores, probs = [], []
        for b in range(0, len(windows), 32):  # long recordings: bounded memory
            x = self.features(windows[b:b + 32])
            scores.append(self.score_logmels(x, [mtype] * len(x), [mid] * len(x), scorer, [attributes] * len(x)))
            probs += self._probs(x)
        scores = np.concatenate(scores)
        best = int(np.argmax(scores))
        row = self._row(path, mtype, mid, scorer, float(scores[best]), probs[best])
        return {**row, "note": note, "windows": len(windows)}


class _WaveformInput(torch.nn.Module):
    """The margin family's "features": the waveform batch itself ``[B, N]`` (the model holds its front-end)."""

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(wave, dtype=torch.float32)


class _IdentityStats:
    """Stands in for :class:`FeatureStats` where the model normalises its own log-mel."""

    @staticmethod
    def apply(x: torch.Tensor) -> torch.Tensor:
        return x


def fit_run(run: str | os.PathLike, train: TrainData | None = None, progress: bool = True) -> dict:
    """Embed the normal training clips and fit per-ID thresholds for every available scorer.

    Writes ``embeddings/{pretrain,finetune}.npz`` (train rows), ``thresholds.json`` and
    ``train_scores.csv``. ``train`` passes log-mels already in memory (the end of training).
    """
    return fit_detector(Detector.load(run, fit=False), train=train, progress=progress)
