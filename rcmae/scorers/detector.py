"""`Detector`: a trained run ready to score clips, with every scorer the run supports."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rcmae.data.audio import AudioError, load_audio
from rcmae.data.checks import clip_windows
from rcmae.data.datasets import window_starts
from rcmae.data.features import FeatureStats, LogMel
from rcmae.data.index import DatasetLayoutError
from rcmae.data.names import expand_wavs, machine_of_path, parse_attributes
from rcmae.files import read_json
from rcmae.models.margin import IdentityStats, WaveformInput
from rcmae.models.rcmae import RCMAE
from rcmae.run import config as rconfig
from rcmae.run.checkpoint import model_from_checkpoint
from rcmae.run.folder import RunFolderError, checkpoint_path, read_run_json
from rcmae.run.trainset import TrainData
from rcmae.scorers import (
    INVALID_REASON,
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
    decide,
)
from rcmae.scorers.fitting import (
    CLIP_FEATURES,
    TRAINING_FREE,
    fit_detector,
    load_rows,
    stale_scorers,
    with_members,
)
from rcmae.scorers.idprob import unit_probs

_SPACES = ("pretrain", "finetune")


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
                 class_units: list[tuple[str, str]] | None = None, fitted: dict | None = None,
                 fitted_refs: dict | None = None, failed: dict | None = None) -> None:
        self.run = Path(run)
        # Per scorer, the stamp it was fitted under (rcmae.scorers.fitting.fit_stamp); per reference, its stamp.
        self.fitted = dict(fitted or {})
        self.fitted_refs = dict(fitted_refs or {})
        # Scorers whose last fit failed, with the reason (too few clips...): an ensemble of them is unavailable.
        self.failed: dict[str, str] = dict(failed or {})
        # Fit a scorer on first use when it is not current (Detector.load(fit=False) turns this off).
        self.autofit = True
        self._current: set[str] = set()
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
            self.logmel, self.stats = WaveformInput().to(self.device), IdentityStats()
        else:
            self.logmel = LogMel(cfg.features).to(self.device)
        self._families = self._build_scorers()
        self.refit()
        self.notes: list[str] = []
        self.scorers = [s for s in SCORERS if self._available(s)]
        default = cfg.score.default_scorer
        if default not in self.scorers:
            fallback = "knn" if "knn" in self.scorers else next(iter(self.scorers), "knn")
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
        if info.get("training_free") and not pre.is_file():
            models = {}  # made by `rcmae fit`: the training-free scorers only, no network
        elif not pre.is_file():
            raise RunFolderError(f"{run}: no checkpoints/{pre.name}; pretrain the run first")
        else:
            models = {"pretrain": model_from_checkpoint(pre)[0]}
        fin = checkpoint_path(run, "finetune", "last")
        if not models:
            pass
        elif cfg.family == "margin":
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
                  bandstats, class_units, thr_json.get("fitted"), thr_json.get("references"), thr_json.get("failed"))
        det.autofit = fit
        # The default scorer (with an ensemble's members) is fitted at once, so the run is usable; every other
        # scorer is fitted on first use. A scorer is refitted only when stale: its data, front-end or network
        # changed since (rcmae.scorers.fitting.fit_stamp); thresholds.json of older runs has no stamps.
        if fit and stale_scorers(det, [det.default_scorer], info):
            fit_detector(det, scorers=[det.default_scorer])
            det = cls.load(run, device=device, fit=False)  # rebuilt on what was fitted (no second fit)
            det.autofit = True
        return det

    def ensure_fitted(self, scorers: Sequence[str], progress: bool = True) -> None:
        """Fit ``scorers`` (and an ensemble's members) now where they are not current (:func:`fit_detector`)."""
        wanted = [s for s in scorers if s not in self._current]
        if not wanted or not self.autofit:
            return
        if stale_scorers(self, wanted):
            fit_detector(self, scorers=wanted, progress=progress)
        self._current.update(with_members(self, wanted))

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
        if not self.models and scorer not in (*TRAINING_FREE, "ensemble"):
            return "a training-free run (rcmae fit) has no network; pretrain a run for it"
        if not self.models and scorer == "ensemble":
            lacking = [m for m in self.cfg.score.ensemble if m not in TRAINING_FREE]
            if lacking:
                return f"its members {', '.join(lacking)} need a network, which a training-free run has not"
        if self.family == "margin" and scorer in ("recon", "recon_topk", "knn_joint", "maha", "stats_knn",
                                                  "stats_maha", "frame_pca", "frame_maha"):
            return ("the margin classifier has no decoder, log-mel statistics or frame space "
                    "(use idprob, knn, knn_norm or ensemble)")
        if scorer == "ensemble":
            # A member that could not be fitted (e.g. too few training clips per machine ID for held-out moments).
            lacking = [m for m in self.cfg.score.ensemble if m in self.failed]
            if lacking:
                return (f"no held-out normal-score moments of {', '.join(lacking)} ({self.failed[lacking[0]]})")
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
        self.ensure_fitted([scorer])
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
        decision = decide(score, thr)
        if decision == "invalid":  # never "normal"; null in JSON (NaN is not JSON), and the reason names the clip
            return {"path": path, "machine_type": mtype, "machine_id": mid, "scorer": scorer, "score": None,
                    "threshold": thr, "decision": "invalid", "probs": None,
                    "error": f"{Path(path).name}: {INVALID_REASON}"}
        return {"path": path, "machine_type": mtype, "machine_id": mid, "scorer": scorer, "score": float(score),
                "threshold": thr, "decision": decision, "probs": probs, "error": None}

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
        self.ensure_fitted([scorer])
        try:
            files = expand_wavs(paths)
        except DatasetLayoutError as err:
            raise ScoringError(str(err)) from None
        rows: list[dict | None] = [None] * len(files)
        n_clip = int(round(self.cfg.data.duration * self.cfg.data.sample_rate))
        batch: list[tuple[int, np.ndarray, str, str, str]] = []  # clips of the run's length, scored together

        def flush() -> None:
            try:
                x = self.features(np.stack([b[1] for b in batch]))
                scores = self.score_logmels(x, [b[2] for b in batch], [b[3] for b in batch], scorer,
                                            [b[4] for b in batch])
                for (k, _, mtype, mid, _), score, probs in zip(batch, scores, self._probs(x), strict=True):
                    rows[k] = {**self._row(str(files[k]), mtype, mid, scorer, float(score), probs), "note": None,
                               "windows": 1}
            except ScoringError as err:  # every clip of the batch says why (known machines are checked before)
                for k, _, mtype, mid, _ in batch:
                    rows[k] = _error_row(files[k], mtype, mid, scorer, str(err))
            batch.clear()

        for k, p in enumerate(tqdm(files, desc=f"scoring ({scorer})", unit="clip", disable=not progress)):
            mtype, mid = machine_of_path(p)
            mtype, mid = machine_type or mtype, machine_id or mid
            if not p.exists():
                rows[k] = _error_row(p, mtype, mid, scorer, "no such file; check the path")
            elif not p.is_file():  # a FIFO or device named .wav would block the reader forever
                rows[k] = _error_row(p, mtype, mid, scorer, "not a regular file (a pipe or device?); give a .wav file")
            elif mtype is None or mid is None:
                rows[k] = _error_row(p, mtype, mid, scorer, "its machine type/ID is in neither its folders nor its "
                                                            "name; say which machine it records (type and ID)")
            elif (mtype, mid) not in self.units:
                known = ", ".join(f"{t}/{i}" for t, i in self.units)
                rows[k] = _error_row(p, mtype, mid, scorer, f"machine {mtype}/{mid} was not in this run's training "
                                                            f"data (it knows {known}); say which machine it records")
            if rows[k] is not None:
                continue
            try:
                wave = load_audio(p, sample_rate=self.cfg.data.sample_rate, duration=None,
                                  channel=self.cfg.data.channel)
                if len(wave) == n_clip:
                    batch.append((k, wave, mtype, mid, parse_attributes(p)))
                    if len(batch) == self.cfg.score.batch_size:
                        flush()
                else:  # another length: scored window by window, and said so in the note
                    rows[k] = self._score_whole(wave, str(p), mtype, mid, scorer, parse_attributes(p))
            except (AudioError, ScoringError, FileNotFoundError) as err:
                rows[k] = _error_row(p, mtype, mid, scorer, str(err))
        if batch:
            flush()
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


def _error_row(path, mtype: str | None, mid: str | None, scorer: str, error: str) -> dict:
    """A :meth:`Detector.score_paths` row of a clip that could not be scored, and why."""
    return {"path": str(path), "machine_type": mtype, "machine_id": mid, "scorer": scorer, "score": None,
            "threshold": None, "decision": None, "probs": None, "note": None, "error": error}


def fit_run(run: str | os.PathLike, train: TrainData | None = None, progress: bool = True,
            scorers: Sequence[str] | None = None) -> dict:
    """Fit held-out thresholds of a run's scorers that are not current (all of them, or ``scorers``).

    Writes ``embeddings/{pretrain,finetune}.npz`` (train rows), ``references/``, ``thresholds.json`` and
    ``train_scores.csv``. ``train`` passes log-mels already in memory (the end of training). After a training
    stage the CLI fits the default scorer only; every other scorer is fitted on first use (``rcmae evaluate``
    fits them all), and only when its data, front-end or network changed (docs/scorers.md).
    """
    return fit_detector(Detector.load(run, fit=False), train=train, progress=progress,
                        scorers=None if scorers is None else list(scorers))
