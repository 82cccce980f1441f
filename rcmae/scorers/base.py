"""The scorer interface: what every scorer family fits on, what it scores, and how thresholds are set.

A scorer is fitted on the *normal training clips per machine unit* (:class:`NormalSet`: one table per
feature, ``{"z", "machine_type", "machine_id", "path"}``) and scores a batch of clips (:class:`Clips`:
normalised log-mels plus their units, with memoised features). When the batch *is* the training clips
(``Clips.paths`` set), each clip is left out of its own reference set, so that normal scores for
thresholds and normalisers are held out: leave-one-out, i.e. ``n``-fold cross-fitting per unit.

Decision thresholds are generic (:func:`fit_threshold` of a unit's held-out normal scores), so a scorer only
implements :meth:`Scorer.fit` and :meth:`Scorer.score`. Scorers import numpy and torch only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import scipy.stats
import torch


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


def decide(score: float | None, threshold: float | None) -> str | None:
    """The decision for a score: ``invalid`` when it is not a finite number (NaN/inf: overflowing or broken
    audio is never called normal), ``None`` without a threshold, else ``anomaly`` above it or ``normal``."""
    if score is None or not np.isfinite(score):
        return "invalid"
    if threshold is None:
        return None
    return "anomaly" if score > threshold else "normal"


INVALID_REASON = ("the score is not a finite number (NaN or inf): the audio overflows or holds non-finite samples; "
                  "check the recording (levels within +-1 full scale)")


def fit_unit_thresholds(scores: np.ndarray, machine_types: Sequence[str], machine_ids: Sequence[str],
                        method: str = "gamma", q: float = 0.9) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Per unit (``"type/id"``): the decision threshold and the ``[mean, std]`` of held-out normal scores.

    Args:
        scores: Held-out scores of normal training clips ``[n]``.
        machine_types, machine_ids: Their units.
        method, q: As :func:`fit_threshold`.

    Returns:
        ``(thresholds, moments)``, both keyed ``"type/id"``; ``std`` is the population std.
    """
    scores = np.asarray(scores, dtype=np.float64)
    units = list(zip(map(str, machine_types), map(str, machine_ids), strict=True))
    thresholds, moments = {}, {}
    for key in sorted(set(units)):
        sel = [n for n, u in enumerate(units) if u == key]
        thresholds[f"{key[0]}/{key[1]}"] = fit_threshold(scores[sel], method, q)
        moments[f"{key[0]}/{key[1]}"] = [float(np.mean(scores[sel])), float(np.std(scores[sel]))]
    return thresholds, moments


class NormalSet:
    """The normal training clips of every unit, as feature tables (what scorers are fitted on).

    Args:
        tables: ``{feature: {"z": [n, D], "machine_type": [n], "machine_id": [n], "path": [n]}}``; features are
            embedding spaces (``pretrain``, ``finetune``), ``clipstats`` and ``bandstats`` (per-band statistics).
        logmels: ``(x, machine_types, machine_ids, paths)`` of the normal training clips, or ``None``.
    """

    def __init__(self, tables: dict[str, dict] | None = None, logmels: tuple | None = None) -> None:
        self.tables = dict(tables or {})
        # (x [n, F, T], machine_types, machine_ids, paths) of the normal training clips, when in memory (fit_run):
        # scorers that model frames fit on them; otherwise they read what they saved in the run folder.
        self.logmels = logmels

    def get(self, feature: str) -> dict | None:
        """The table of ``feature``, or ``None``."""
        return self.tables.get(feature)

    def rows(self, feature: str, machine_type: str, machine_id: str, what: str) -> np.ndarray:
        """Row indices of one unit in the ``feature`` table (``what`` names the scorer in the error)."""
        table = self.tables[feature]
        sel = (table["machine_type"] == machine_type) & (table["machine_id"] == machine_id)
        if not sel.any():
            raise ScoringError(f"machine {machine_type} id {machine_id} was not in this run's training data ({what}: "
                               "no normal training clips); pass the right --machine-type/--machine-id or train on it")
        return np.flatnonzero(sel)

    def rows_and_exclusions(self, feature: str, clips: Clips, what: str) -> tuple[list[np.ndarray], list[int | None]]:
        """Per clip: its unit's reference rows, and the row to leave out (the clip itself) or ``None``."""
        table = self.tables[feature]
        refs, excl = [], []
        for n, (t, i) in enumerate(zip(clips.machine_types, clips.machine_ids, strict=True)):
            rows = self.rows(feature, str(t), str(i), what)
            refs.append(rows)
            own = np.flatnonzero(table["path"][rows] == clips.paths[n]) if clips.paths is not None else np.empty(0)
            excl.append(int(own[0]) if own.size else None)
        return refs, excl


class Clips:
    """A batch of clips to score: normalised log-mels, their units, and memoised features.

    Args:
        x: Normalised log-mels ``[B, F, T]``.
        machine_types, machine_ids: The unit of each clip.
        paths: The clips' paths when they are the training clips themselves (each is then left out of its own
            references), else ``None``.
        features: ``feature name -> [B, D]`` for this batch (memoised by the caller: embeddings, clip statistics).
        attributes: The clips' DCASE 2022+ attribute tails (``""`` = unknown), or ``None`` (all unknown); only
            ``idprob`` with section + attribute classes reads them.
    """

    def __init__(self, x: torch.Tensor, machine_types: Sequence[str], machine_ids: Sequence[str],
                 paths: Sequence[str] | None, features: Callable[[str], np.ndarray],
                 attributes: Sequence[str] | None = None) -> None:
        self.x = x
        self.machine_types = list(machine_types)
        self.machine_ids = list(machine_ids)
        self.paths = None if paths is None else list(paths)
        self._features = features
        self.attributes = None if attributes is None else [str(a) for a in attributes]

    def __len__(self) -> int:
        return len(self.x)

    def feature(self, name: str) -> np.ndarray:
        """Feature ``name`` of the batch ``[B, D]`` (an embedding space, ``clipstats``, ...)."""
        return self._features(name)


class Scorer(ABC):
    """One scorer family: fit on the normal clips per unit, score clips (higher = more anomalous).

    Subclasses read their settings from ``cfg`` (the run's ``score`` section) at scoring time, so a changed
    setting takes effect without refitting.

    Args:
        cfg: The run's score configuration (``rcmae.run.config.ScoreConfig``).
        run: The run folder (named in error messages).
    """

    name: str = ""

    def __init__(self, cfg, run: Path) -> None:
        self.cfg = cfg
        self.run = Path(run)
        self.normal = NormalSet()

    def unavailable(self) -> str:
        """Why this scorer cannot score this run (``""`` when it can)."""
        return ""

    def fit(self, normal: NormalSet) -> None:
        """Fit on the normal training clips per unit (the default keeps them as references)."""
        self.normal = normal

    @abstractmethod
    def score(self, clips: Clips) -> np.ndarray:
        """Anomaly scores ``[B]`` (float64) of ``clips``."""
