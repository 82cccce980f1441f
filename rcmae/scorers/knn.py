"""Nearest-neighbour scorers: ``knn`` (cosine, on an embedding space) and ``knn_joint`` (Euclidean, joint space).

``knn``: mean cosine distance to the ``score.knn_k`` nearest normal training clips of the same unit, in the
``score.knn_space`` embedding. ``knn_joint``: Euclidean kNN in :func:`joint_features` space, the unit-norm
embedding next to the clip's per-band mean/std log-mel (standardised with the training clips), which the
encoder's LayerNorm and pooling lose.

On DCASE 2021+ data both keep separate source and target reference sets per unit and score a clip by the
smaller of its two kNN distances (``score.domain_banks``, :mod:`rcmae.scorers.domains`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rcmae.scorers.base import Clips, Scorer, ScoringError
from rcmae.scorers.domains import domain_banks


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
    per-band mean/std log-mel of a clip (``rcmae.models.rcmae.clip_stats``), ``mean``/``std`` those of the
    training clips.
    """
    z = np.asarray(z, dtype=np.float64)
    zn = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    st = (np.asarray(stats, dtype=np.float64) - mean) / np.maximum(std, 1e-6) / np.sqrt(stats.shape[1])
    return np.concatenate([zn, weight * st], axis=1)


def min_over_domains(distance, q: np.ndarray, table: dict, refs: np.ndarray, rows: Sequence[np.ndarray],
                     exclude: Sequence[int | None]) -> np.ndarray:
    """Per query, the minimum of ``distance(q[i:i+1], [refs[bank]])`` over its unit's domain banks.

    Args:
        distance: ``knn_distances``-like ``(queries [1, D], [references]) -> [1]`` with k bound.
        q: Queries ``[B, D]``.
        table: The reference feature table (its ``path`` gives each row's domain).
        refs: Reference vectors for every table row ``[n, D]``.
        rows: Per query, its unit's row indices.
        exclude: Per query, a position within its rows to leave out (leave-one-out), or ``None``.
    """
    out = np.empty(len(q), dtype=np.float64)
    for i, (r, e) in enumerate(zip(rows, exclude, strict=True)):
        out[i] = min(float(distance(q[i : i + 1], [refs[b]])[0]) for b in domain_banks(table, r, e))
    return out


class EmbeddingScorer(Scorer):
    """A scorer on the ``score.knn_space`` embedding (``pretrain`` when the run is not fine-tuned).

    Args:
        cfg, run: As :class:`Scorer`.
        spaces: The embedding spaces the run has (``pretrain``, ``finetune``).
    """

    def __init__(self, cfg, run, spaces: Sequence[str]) -> None:
        super().__init__(cfg, run)
        self.spaces = tuple(spaces)

    @property
    def space(self) -> str:
        """The embedding space scored (``score.knn_space``, or ``pretrain`` when that one is missing)."""
        space = self.cfg.knn_space
        return space if space in self.spaces else "pretrain"


class KnnScorer(EmbeddingScorer):
    """``knn``: mean cosine distance to the ``score.knn_k`` nearest normal clips of the unit."""

    name = "knn"

    def score(self, clips: Clips) -> np.ndarray:
        table = self.normal.get(self.space)
        if table is None:
            raise ScoringError(f"{self.run}: no training embeddings for knn; run `rcmae evaluate --run {self.run}`")
        rows, excl = self.normal.rows_and_exclusions(self.space, clips, "knn")
        if getattr(self.cfg, "domain_banks", True):
            k = self.cfg.knn_k
            return min_over_domains(lambda q, refs: knn_distances(q, refs, k), clips.feature(self.space), table,
                                    table["z"], rows, excl if clips.paths is not None else [None] * len(rows))
        return knn_distances(clips.feature(self.space), [table["z"][r] for r in rows], self.cfg.knn_k,
                             exclude=excl if clips.paths is not None else None)


def joint_space(scorer: EmbeddingScorer, clips: Clips, weight: float) -> tuple[np.ndarray, np.ndarray]:
    """``(queries, references)`` of ``clips`` in the joint space (:func:`joint_features`) of ``scorer``'s run."""
    cstats = scorer.normal.get("clipstats")
    if cstats is None:
        raise ScoringError(f"{scorer.run}: no references/clipstats.npz; run `rcmae evaluate --run {scorer.run}`")
    ref = scorer.normal.get(scorer.space)
    if ref is None:
        raise ScoringError(f"{scorer.run}: no training embeddings; run `rcmae evaluate --run {scorer.run}`")
    if not np.array_equal(ref["path"], cstats["path"]):
        raise ScoringError(f"{scorer.run}: embeddings and clipstats come from different clips; "
                           f"run `rcmae evaluate --run {scorer.run}` after deleting thresholds.json")
    cs = cstats["z"].astype(np.float64)
    mu, sd = cs.mean(0), cs.std(0)
    q = joint_features(clips.feature(scorer.space), clips.feature("clipstats").astype(np.float64), mu, sd, weight)
    return q, joint_features(ref["z"], cs, mu, sd, weight)


class JointKnnScorer(EmbeddingScorer):
    """``knn_joint``: Euclidean kNN in the joint space weighted by ``score.joint_weight``."""

    name = "knn_joint"

    def score(self, clips: Clips) -> np.ndarray:
        q, ref_joint = joint_space(self, clips, self.cfg.joint_weight)
        rows, excl = self.normal.rows_and_exclusions(self.space, clips, "knn_joint")
        if getattr(self.cfg, "domain_banks", True):
            k = self.cfg.knn_k
            return min_over_domains(lambda v, refs: knn_euclidean(v, refs, k), q, self.normal.get(self.space),
                                    ref_joint, rows, excl)
        return knn_euclidean(q, [ref_joint[r] for r in rows], self.cfg.knn_k, exclude=excl)


def standardise(table: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std (floored at 1e-6) of ``table`` (all units' normal clips, or ``rows`` of it)."""
    t = np.asarray(table, dtype=np.float64) if rows is None else np.asarray(table, dtype=np.float64)[rows]
    return t.mean(0), np.maximum(t.std(0), 1e-6)


class NormKnnScorer(Scorer):
    """kNN distance z-scored per unit with the mean/std of the unit's held-out normal scores.

    The normalisers come from leave-one-out scores of the unit's normal training clips (each clip against
    the others, i.e. ``n``-fold held-out); under a per-unit AUC this is rank-identical to the raw distance,
    but it puts every unit (and every member of an ensemble) on one scale: thresholds and pooled metrics
    (DCASE 2021+ sections pooled over domains) need that.

    Args:
        cfg, run: As :class:`Scorer`.
        feature: ``() -> feature name`` (an embedding space or ``bandstats``), read at fit/score time.
        metric: ``cosine`` (embeddings) or ``euclidean`` (standardised statistics).
        name: The scorer's name.
    """

    def __init__(self, cfg, run, feature, metric: str, name: str) -> None:
        super().__init__(cfg, run)
        self.feature, self.metric, self.name = feature, metric, name
        self.moments: dict[str, tuple[float, float]] = {}
        self._scale: tuple[np.ndarray, np.ndarray] | None = None

    def _table(self) -> dict:
        table = self.normal.get(self.feature())
        if table is None:
            raise ScoringError(f"{self.run}: no training {self.feature()} for {self.name}; "
                               f"run `rcmae evaluate --run {self.run}`")
        return table

    def _prepare(self, v: np.ndarray) -> np.ndarray:
        if self.metric == "cosine":
            return v
        mean, std = self._scale
        return (np.asarray(v, dtype=np.float64) - mean) / std

    def _raw(self, q: np.ndarray, refs: list[np.ndarray], excl) -> np.ndarray:
        dist = knn_distances if self.metric == "cosine" else knn_euclidean
        return dist(self._prepare(q), [self._prepare(r) for r in refs], self.cfg.knn_k, exclude=excl)

    def fit(self, normal) -> None:
        super().fit(normal)
        self.moments = {}
        table = normal.get(self.feature())
        if table is None:
            return
        self._scale = standardise(table["z"])
        units = sorted(set(zip(table["machine_type"], table["machine_id"], strict=True)))
        for t, i in units:
            rows = np.flatnonzero((table["machine_type"] == t) & (table["machine_id"] == i))
            if len(rows) < 2:
                continue  # no held-out score: this unit cannot be normalised (score() says so)
            z = table["z"][rows]
            held = self._raw(z, [z] * len(rows), list(range(len(rows))))
            self.moments[f"{t}/{i}"] = (float(held.mean()), float(held.std()))

    def score(self, clips: Clips) -> np.ndarray:
        table = self._table()
        rows, excl = self.normal.rows_and_exclusions(self.feature(), clips, self.name)
        raw = self._raw(clips.feature(self.feature()), [table["z"][r] for r in rows],
                        excl if clips.paths is not None else None)
        out = np.empty(len(raw))
        for n, (t, i) in enumerate(zip(clips.machine_types, clips.machine_ids, strict=True)):
            mom = self.moments.get(f"{t}/{i}")
            if mom is None:
                raise ScoringError(f"{self.name}: machine {t} id {i} has fewer than 2 normal training clips; "
                                   "its scores cannot be normalised (add clips or use knn)")
            out[n] = (raw[n] - mom[0]) / max(mom[1], 1e-12)
        return out
