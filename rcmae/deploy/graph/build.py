"""From a fitted scorer to its export graph: one builder per scorer family."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from rcmae.data.datasets import make_generator
from rcmae.deploy.graph.gaussian import GaussianBanks, MahaGraph, StatsMahaGraph, fit_bank_gaussians
from rcmae.deploy.graph.heads import EnsembleGraph, ExportContext, FrameGraph, IdProbGraph, ReconGraph
from rcmae.deploy.graph.knn import Banks, JointKnnGraph, JointSpace, KnnGraph, NormKnnGraph
from rcmae.scorers.base import Scorer, ScoringError
from rcmae.scorers.frames import FrameModels
from rcmae.scorers.knn import joint_features
from rcmae.scorers.recon import RECON_SEED


# --------------------------------------------------------------------------------------------- builders
def _table(scorer, feature: str) -> dict:
    table = scorer.normal.get(feature)
    if table is None:
        raise ScoringError(f"{scorer.run}: no training {feature} references for {scorer.name}; "
                           f"run `rcmae evaluate --run {scorer.run}` first")
    return table


def _joint(scorer, ctx: ExportContext, weight: float) -> tuple[JointSpace, np.ndarray, np.ndarray]:
    ref, cstats = _table(scorer, scorer.space), _table(scorer, "clipstats")
    cs = cstats["z"].astype(np.float64)
    mu, sd = cs.mean(0), cs.std(0)
    return JointSpace(mu, sd, weight), joint_features(ref["z"], cs, mu, sd, weight), ctx.unit_rows(ref)


def build_knn(scorer, ctx: ExportContext) -> nn.Module:
    ref = _table(scorer, scorer.space)
    rows = ctx.unit_rows(ref)
    ctx.check_covered(rows, "knn")
    return KnnGraph(ref["z"], Banks.of(scorer, ref, rows, len(ctx.units)), scorer.cfg.knn_k)


def build_knn_joint(scorer, ctx: ExportContext) -> nn.Module:
    space, bank, rows = _joint(scorer, ctx, scorer.cfg.joint_weight)
    ctx.check_covered(rows, "knn_joint")
    banks = Banks.of(scorer, _table(scorer, scorer.space), rows, len(ctx.units))
    return JointKnnGraph(space, bank, banks, scorer.cfg.knn_k)


def build_maha(scorer, ctx: ExportContext) -> nn.Module:
    space, bank, rows = _joint(scorer, ctx, scorer.cfg.maha_weight)
    ctx.check_covered(rows, "maha", minimum=2)
    banks = Banks.of(scorer, _table(scorer, scorer.space), rows, len(ctx.units))
    return MahaGraph(space, GaussianBanks(*fit_bank_gaussians(bank, banks), banks, "maha"))


def build_stats_maha(scorer, ctx: ExportContext) -> nn.Module:
    table = _table(scorer, scorer.feature)
    mean, std = scorer._scale
    ref = (np.asarray(table["z"], dtype=np.float64) - mean) / std
    rows = ctx.unit_rows(table)
    ctx.check_covered(rows, "stats_maha", minimum=2)
    banks = Banks.of(scorer, table, rows, len(ctx.units))
    # A training-free run embeds a clip by these same band statistics (ExportContext.embedder): reuse them.
    return StatsMahaGraph(mean, std, GaussianBanks(*fit_bank_gaussians(ref, banks), banks, "stats_maha"),
                          embedded=not ctx.models)


def build_norm_knn(scorer, ctx: ExportContext) -> nn.Module:
    table = _table(scorer, scorer.feature())
    rows = ctx.unit_rows(table)
    missing = [f"{t}/{i}" for t, i in ctx.units if f"{t}/{i}" not in scorer.moments]
    if missing:
        raise ScoringError(f"{scorer.name}: unit(s) {', '.join(missing)} have fewer than 2 normal training clips "
                           "(no held-out moments); export another --scorer")
    # These scorers pool the domains (rcmae.scorers.knn.NormKnnScorer): one bank per unit.
    banks = Banks.of(scorer, table, rows, len(ctx.units), by_domain=False)
    moments = np.array([scorer.moments[f"{t}/{i}"] for t, i in ctx.units], dtype=np.float64)
    scale = None if scorer.metric == "cosine" else scorer._scale
    bank = table["z"] if scale is None else (np.asarray(table["z"], dtype=np.float64) - scale[0]) / scale[1]
    return NormKnnGraph(scorer.name, bank, banks, scorer.cfg.knn_k, moments, scale)


def build_frames(scorer, ctx: ExportContext) -> nn.Module:
    models = []
    for t, i in ctx.units:
        model = scorer.frames.models.get(f"{t}/{i}")
        if model is None:
            raise ScoringError(f"{scorer.name}: no frame model of {t}/{i} in {scorer.frames.path}; "
                               f"run `rcmae evaluate --run {scorer.run}` to refit, or export another --scorer")
        models.append(model)
    keep = scorer.cfg.frame_components if scorer.kind == "pca" else None
    # One bank per domain mean of a unit (DCASE 2021+ with score.domain_banks at fit time), else its mean.
    means = [m.domain_means if len(m.domain_means) else m.mean[None] for m in models]
    banks = Banks([np.empty(0)] * sum(map(len, means)), [u for u, m in enumerate(means) for _ in m], len(models))
    return FrameGraph(scorer.kind, np.concatenate(means), np.stack([m.eigvec[:, :keep] for m in models]),
                      np.stack([m.eigval[:keep] for m in models]), banks, FrameModels.context)


def build_idprob(scorer, ctx: ExportContext) -> nn.Module:
    # Per unit, the classes the scorer pools over for a clip without attributes (one clear line for a unit the
    # classifier does not know): one index per unit, or a list when a unit has section + attribute classes.
    sets = scorer.class_indices([t for t, _ in ctx.units], [i for _, i in ctx.units])
    members = np.zeros((len(ctx.units), len(scorer.classes)), dtype=bool)
    for u, classes in enumerate(sets):
        members[u, np.atleast_1d(classes)] = True
    return IdProbGraph(scorer.model, ctx.n_frames, ctx.crop, members, getattr(scorer.cfg, "idprob_pool", "max"),
                       scorer.n_transforms, scorer.cfg.idprob_pseudo, scorer.cfg.idprob_windows)


def _recon_noise(scorer) -> torch.Tensor:
    # The noise RCMAE.random_masking draws from the scorer's fixed-seed generator: the same masks.
    gen = make_generator(RECON_SEED, device="cpu")
    return torch.rand(scorer.cfg.recon_masks, scorer.model.config.num_patches, generator=gen)


def build_recon(scorer, ctx: ExportContext) -> nn.Module:
    return ReconGraph(scorer.model, ctx.n_frames, ctx.crop, _recon_noise(scorer), scorer.cfg.recon_mask_ratio)


def build_recon_topk(scorer, ctx: ExportContext) -> nn.Module:
    return ReconGraph(scorer.model, ctx.n_frames, ctx.crop, _recon_noise(scorer), scorer.cfg.recon_mask_ratio,
                      topk=scorer.cfg.recon_topk)


def build_ensemble(scorer, ctx: ExportContext) -> nn.Module:
    parts, moments = [], []
    for name in scorer.members():
        parts.append(build_graph(ctx.family(name), ctx))
        m = scorer.moments.get(name, {})
        missing = [f"{t}/{i}" for t, i in ctx.units if f"{t}/{i}" not in m]
        if missing:
            raise ScoringError(f"ensemble: no training-score moments of {name} for {', '.join(missing)}; "
                               f"run `rcmae evaluate --run {scorer.run}` after deleting thresholds.json")
        moments.append([m[f"{t}/{i}"] for t, i in ctx.units])
    return EnsembleGraph(parts, np.asarray(moments, dtype=np.float64))


# Scorer name -> builder. A family missing here cannot be exported (build_graph says so).
BUILDERS: dict[str, Callable[[Scorer, ExportContext], nn.Module]] = {
    "knn": build_knn,
    "knn_joint": build_knn_joint,
    "maha": build_maha,
    "idprob": build_idprob,
    "recon": build_recon,
    "recon_topk": build_recon_topk,
    "knn_norm": build_norm_knn,
    "stats_knn": build_norm_knn,
    "stats_maha": build_stats_maha,
    "frame_pca": build_frames,
    "frame_maha": build_frames,
    "ensemble": build_ensemble,
}


def build_graph(scorer: Scorer, ctx: ExportContext) -> nn.Module:
    """The torch graph of a fitted scorer, or :class:`ScoringError` naming why it cannot be exported."""
    builder = BUILDERS.get(scorer.name)
    if builder is None:
        raise ScoringError(f"scorer {scorer.name} cannot be exported: it has no torch graph "
                           f"(exportable: {', '.join(BUILDERS)}); export another --scorer")
    return builder(scorer, ctx)
