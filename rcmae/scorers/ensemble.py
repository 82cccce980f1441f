"""``ensemble``: the mean of member scorers, each z-scored per unit with its held-out normal scores.

A member's per-unit ``[mean, std]`` (the *moments*) come from its held-out (leave-one-out) scores of the
normal training clips, never from test clips; the members are weighted equally, so no anomaly is needed to
fit anything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from rcmae.scorers.base import Clips, Scorer, ScoringError


def zscore(scores: np.ndarray, machine_types: Sequence[str], machine_ids: Sequence[str],
           moments: dict[str, list[float]], what: str) -> np.ndarray:
    """``(score - mean) / std`` with the ``"type/id"`` moments of each clip's unit.

    Raises:
        ScoringError: A unit without moments (``what`` names the member).
    """
    mean_std = np.array([moments.get(f"{t}/{i}", [np.nan, np.nan])
                         for t, i in zip(machine_types, machine_ids, strict=True)], dtype=np.float64)
    if np.isnan(mean_std).any():
        raise ScoringError(f"ensemble: a machine ID has no training-score moments of {what}; "
                           "train on it or pick another scorer")
    return (np.asarray(scores, dtype=np.float64) - mean_std[:, 0]) / np.maximum(mean_std[:, 1], 1e-12)


class EnsembleScorer(Scorer):
    """Equal-weight mean of the ``members``' per-unit z-scores.

    Args:
        cfg, run: As :class:`Scorer`.
        members: Member scorer names.
        score_of: ``(member, clips) -> scores`` (the detector's memoised scoring path).
        moments: ``{member: {"type/id": [mean, std]}}`` of held-out normal scores (shared, filled by fitting).
        unavailable_member: ``member -> reason`` (``""`` when usable).
    """

    name = "ensemble"

    def __init__(self, cfg, run, members: Callable[[], Sequence[str]],
                 score_of: Callable[[str, Clips], np.ndarray], moments: dict,
                 unavailable_member: Callable[[str], str]) -> None:
        super().__init__(cfg, run)
        self.members, self.score_of, self.moments = members, score_of, moments
        self.unavailable_member = unavailable_member

    def unavailable(self) -> str:
        missing = [c for c in self.members() if self.unavailable_member(c)]
        if missing:
            return f"its part(s) {', '.join(missing)} are unavailable (score.ensemble)"
        return ""

    def score(self, clips: Clips) -> np.ndarray:
        parts = []
        for name in self.members():
            moments = self.moments.get(name)
            if moments is None:
                raise ScoringError(f"{self.run}: no training-score moments of {name} for the ensemble; "
                                   f"run `rcmae evaluate --run {self.run}` after deleting thresholds.json")
            parts.append(zscore(self.score_of(name, clips), clips.machine_types, clips.machine_ids, moments, name))
        return np.mean(parts, axis=0)
