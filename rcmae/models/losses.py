"""RC-MAE losses as pure functions of tensors (Zahedi et al. 2023, equations 2-9).

Batch sizes are always taken from the tensors. Shapes: ``N`` samples, ``D`` embedding width, ``B`` clips,
``L`` patches, ``P`` values per patch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as nnf
from torch import Tensor

__all__ = [
    "masked_mse", "info_nce", "variance_covariance", "pretrain_loss", "supcon", "finetune_loss", "cosine_logits",
    "arcface_logits", "adacos_scale", "mixup", "mixup_cross_entropy",
]


def _check_2d(name: str, z: Tensor) -> None:
    if z.ndim != 2:
        raise ValueError(f"{name}: expected a [N, D] tensor, got shape {tuple(z.shape)}")


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor, norm_pix: bool = False,
               reduction: str = "mean") -> Tensor:
    """Mean squared error over the masked patches only (equation 2).

    Args:
        pred: Reconstructed patches ``[B, L, P]``.
        target: True patches ``[B, L, P]``.
        mask: ``[B, L]``, 1 = masked (scored), 0 = visible (ignored).
        norm_pix: Normalise each target patch by its own mean and variance (``(t - mean) / sqrt(var + 1e-6)``,
            unbiased variance, as MAE's ``norm_pix_loss``).
        reduction: ``"mean"``: one scalar, the mean over all masked patches of the batch (each patch's MSE is
            the mean over its ``P`` values); ``"none"``: ``[B]``, the same mean per clip.

    A batch (or clip) with no masked patch gives 0 rather than NaN.
    """
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"masked_mse: pred {tuple(pred.shape)} and target {tuple(target.shape)} must both be "
                         "[B, L, P]")
    if mask.shape != pred.shape[:2]:
        raise ValueError(f"masked_mse: mask {tuple(mask.shape)} must be [B, L] = {tuple(pred.shape[:2])}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"masked_mse: reduction={reduction!r}; use 'mean' or 'none'")
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    mask = mask.to(per_patch.dtype)
    if reduction == "none":
        return (per_patch * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


def info_nce(z_a: Tensor, z_aug: Tensor, tau: float = 0.05, symmetric: bool = False) -> Tensor:
    """InfoNCE between clips and their augmented twins (equation 3).

    For anchor ``i``: ``-log(exp(s(a_i, g_i) / tau) / sum_j exp(s(a_i, g_j) / tau))`` with ``s`` the cosine
    similarity, ``g_i = z_aug[i]`` the positive and the other ``z_aug[j]`` the negatives; the mean over anchors.
    The paper's equation is one-directional (anchors from ``z_a`` only); ``symmetric=True`` averages it with
    the same loss with the roles of ``z_a`` and ``z_aug`` swapped.

    Args:
        z_a: Embeddings of the clips ``[N, D]``.
        z_aug: Embeddings of their augmented versions ``[N, D]``, row ``i`` pairs with ``z_a[i]``.
        tau: Temperature.
        symmetric: Average both directions.

    Returns:
        A scalar.
    """
    _check_2d("info_nce", z_a)
    if z_a.shape != z_aug.shape:
        raise ValueError(f"info_nce: z_a {tuple(z_a.shape)} and z_aug {tuple(z_aug.shape)} must have the same shape")
    if tau <= 0:
        raise ValueError(f"info_nce: tau={tau} must be > 0")
    logits = nnf.normalize(z_a, dim=1) @ nnf.normalize(z_aug, dim=1).T / tau  # [N, N], positives on the diagonal
    labels = torch.arange(z_a.shape[0], device=z_a.device)
    loss = nnf.cross_entropy(logits, labels)
    if symmetric:
        loss = 0.5 * (loss + nnf.cross_entropy(logits.T, labels))
    return loss


def variance_covariance(z: Tensor, eps: float = 1.0e-4,
                        parts: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Variance-covariance regularisation of one branch (equations 4-7, VICReg).

    ``v = mean_j relu(1 - sqrt(Var(z_j) + eps))`` (unbiased variance over the batch);
    ``C = (z - mean)^T (z - mean) / (N - 1)``; ``c = sum_{i != j} C_ij^2 / D``.

    Args:
        z: Embeddings ``[N, D]`` with ``N >= 2``.
        eps: Added to the variance before the square root.
        parts: Return ``(v, c)`` instead of ``v + c``.

    Returns:
        ``v + c`` (a scalar), or the tuple ``(v, c)``.
    """
    _check_2d("variance_covariance", z)
    n, d = z.shape
    if n < 2:
        raise ValueError(f"variance_covariance: needs a batch of at least 2 embeddings, got N={n}")
    zc = z - z.mean(dim=0)
    cov = zc.T @ zc / (n - 1)
    std = torch.sqrt(torch.diagonal(cov) + eps)
    v = torch.relu(1.0 - std).mean()
    off = cov - torch.diag_embed(torch.diagonal(cov))
    c = (off**2).sum() / d
    return (v, c) if parts else v + c


def pretrain_loss(z_a: Tensor, z_aug: Tensor, pred: Tensor, target: Tensor, mask: Tensor, *,
                  w_nce: float = 0.3, w_vcr: float = 0.3, w_mae: float = 0.4, tau: float = 0.05,
                  eps: float = 1.0e-4, norm_pix: bool = False, symmetric: bool = False) -> dict[str, Tensor]:
    """The pretraining objective: ``w_nce * InfoNCE + w_vcr * VCR + w_mae * MAE`` (paper: 0.3, 0.3, 0.4).

    VCR is the mean of :func:`variance_covariance` over the two branches. When both branches are
    reconstructed, concatenate their ``pred``/``target``/``mask`` along the batch dimension.

    Args:
        z_a: Clip embeddings ``[N, D]``.
        z_aug: Augmented-twin embeddings ``[N, D]``.
        pred: Reconstructed patches ``[B, L, P]``.
        target: True patches ``[B, L, P]``.
        mask: ``[B, L]``, 1 = masked.
        w_nce: Weight of InfoNCE.
        w_vcr: Weight of the variance-covariance term.
        w_mae: Weight of the masked reconstruction.
        tau: InfoNCE temperature.
        eps: Variance epsilon of the VCR.
        norm_pix: Per-patch normalised reconstruction targets.
        symmetric: Symmetric InfoNCE.

    Returns:
        ``{"loss", "info_nce", "vcr", "variance", "covariance", "mae"}``, all scalars; ``loss`` is the total.
    """
    nce = info_nce(z_a, z_aug, tau=tau, symmetric=symmetric)
    v_a, c_a = variance_covariance(z_a, eps=eps, parts=True)
    v_g, c_g = variance_covariance(z_aug, eps=eps, parts=True)
    variance, covariance = 0.5 * (v_a + v_g), 0.5 * (c_a + c_g)
    vcr = variance + covariance
    mae = masked_mse(pred, target, mask, norm_pix=norm_pix)
    total = w_nce * nce + w_vcr * vcr + w_mae * mae
    return {"loss": total, "info_nce": nce, "vcr": vcr, "variance": variance, "covariance": covariance, "mae": mae}


def supcon(z: Tensor, labels: Tensor, tau: float = 0.1) -> Tensor:
    """Supervised contrastive loss (equation 9, Khosla et al. 2020, the "L_out" form).

    ``z`` is L2-normalised inside. For anchor ``i`` with positives ``P(i) = {p != i : y_p = y_i}``:
    ``loss_i = -1/|P(i)| sum_{p in P(i)} log(exp(s_ip / tau) / sum_{a != i} exp(s_ia / tau))``.
    Anchors with no positive in the batch are excluded (the reference SupContrast code gives NaN there):
    the result is the mean of ``loss_i`` over anchors that have a positive, and a zero that still carries
    a gradient path when no anchor has one.

    Args:
        z: Embeddings ``[N, D]``.
        labels: Integer class labels ``[N]``.
        tau: Temperature.

    Returns:
        A scalar.
    """
    _check_2d("supcon", z)
    n = z.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"supcon: labels {tuple(labels.shape)} must be [N] = ({n},)")
    if tau <= 0:
        raise ValueError(f"supcon: tau={tau} must be > 0")
    zn = nnf.normalize(z, dim=1)
    sim = zn @ zn.T / tau
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    # The anchor itself is left out of every denominator; a finite fill keeps gradients clean.
    log_den = torch.logsumexp(sim.masked_fill(self_mask, torch.finfo(sim.dtype).min), dim=1, keepdim=True)
    log_prob = sim - log_den
    pos = (labels.unsqueeze(0) == labels.unsqueeze(1)) & ~self_mask
    n_pos = pos.sum(dim=1)
    has_pos = n_pos > 0
    if not bool(has_pos.any()):
        return z.sum() * 0.0
    per_anchor = torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    return -(per_anchor[has_pos] / n_pos[has_pos]).mean()


def finetune_loss(z: Tensor, logits: Tensor, labels: Tensor, *, w_scl: float = 1.0, w_ce: float = 1.0,
                  tau: float = 0.1, label_smoothing: float = 0.0) -> dict[str, Tensor]:
    """The fine-tuning objective: ``w_scl * SupCon(z) + w_ce * cross-entropy(logits)`` (defaults 1 and 1).

    Args:
        z: Embeddings ``[N, D]``.
        logits: Machine-ID logits ``[N, C]``.
        labels: Class indices ``[N]``.
        w_scl: Weight of SupCon (0 skips it).
        w_ce: Weight of the cross-entropy.
        tau: SupCon temperature.
        label_smoothing: Cross-entropy label smoothing (0 = the paper's plain CE).

    Returns:
        ``{"loss", "supcon", "ce"}``, all scalars.
    """
    scl = supcon(z, labels, tau=tau) if w_scl else z.sum() * 0.0
    ce = nnf.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    return {"loss": w_scl * scl + w_ce * ce, "supcon": scl, "ce": ce}


# ------------------------------------------------------------------------------- angular-margin classification
def cosine_logits(z: Tensor, weight: Tensor) -> Tensor:
    """Cosine of the angle between each embedding and each class centre: ``[N, D] x [C, D] -> [N, C]``."""
    _check_2d("cosine_logits", z)
    _check_2d("cosine_logits weight", weight)
    return nnf.normalize(z, dim=1) @ nnf.normalize(weight, dim=1).T


def arcface_logits(cosine: Tensor, labels: Tensor, scale: float | Tensor = 30.0, margin: float = 0.5) -> Tensor:
    """ArcFace logits (Deng et al. 2019): ``s * cos(theta_y + m)`` for the true class, ``s * cos(theta_j)`` else.

    Where ``theta_y + m`` would pass pi (the cosine would turn back up), the true-class cosine gets the
    linear fallback ``cos(theta_y) - m * sin(m)`` instead, so the logit stays monotonic in the angle
    (the ``th``/``mm`` rule of the reference implementations).

    Args:
        cosine: ``[N, C]`` cosines (:func:`cosine_logits`).
        labels: Class indices ``[N]``.
        scale: ``s`` (a float, or a 0-d tensor such as AdaCos's adaptive scale).
        margin: Additive angular margin ``m`` in radians (0 = a normalised softmax).

    Returns:
        Logits ``[N, C]`` for a cross-entropy.
    """
    _check_2d("arcface_logits", cosine)
    if labels.shape != cosine.shape[:1]:
        raise ValueError(f"arcface_logits: labels {tuple(labels.shape)} must be [N] = ({cosine.shape[0]},)")
    if margin < 0:
        raise ValueError(f"arcface_logits: margin={margin} must be >= 0")
    cos_y = cosine.gather(1, labels[:, None]).clamp(-1.0 + 1e-7, 1.0 - 1e-7)
    theta = torch.acos(cos_y)
    shifted = torch.where(theta + margin < math.pi, torch.cos(theta + margin), cos_y - margin * math.sin(margin))
    onehot = nnf.one_hot(labels, cosine.shape[1]).to(torch.bool)
    return scale * torch.where(onehot, shifted.to(cosine.dtype).expand_as(cosine), cosine)


def adacos_scale(cosine: Tensor, labels: Tensor, scale: float | Tensor) -> Tensor:
    """AdaCos's dynamic scale (Zhang et al. 2019, equation 15), from one batch; no gradient flows through it.

    ``s = log(B_avg) / cos(min(pi/4, theta_med))`` with ``B_avg`` the batch mean of
    ``sum_{j != y_i} exp(s_old * cos theta_ij)`` and ``theta_med`` the median true-class angle.

    Args:
        cosine: ``[N, C]`` cosines.
        labels: Class indices ``[N]``.
        scale: The current scale ``s_old``.

    Returns:
        The new scale, a 0-d tensor.
    """
    with torch.no_grad():
        cosine = cosine.detach().double().clamp(-1.0 + 1e-7, 1.0 - 1e-7)
        onehot = nnf.one_hot(labels, cosine.shape[1]).to(torch.bool)
        s_old = torch.as_tensor(scale, dtype=torch.float64, device=cosine.device)
        b_avg = torch.where(onehot, torch.zeros_like(cosine), torch.exp(s_old * cosine)).sum(dim=1).mean()
        theta_med = torch.median(torch.acos(cosine.gather(1, labels[:, None])))
        theta_med = torch.clamp(theta_med, max=math.pi / 4)
        return (torch.log(b_avg) / torch.cos(theta_med)).float()


def mixup(x: Tensor, lam: float, perm: Tensor) -> Tensor:
    """Mixup of a batch with a permutation of itself: ``lam * x + (1 - lam) * x[perm]`` (any trailing shape)."""
    if perm.shape != x.shape[:1]:
        raise ValueError(f"mixup: perm {tuple(perm.shape)} must be [N] = ({x.shape[0]},)")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"mixup: lam={lam} must be in [0, 1]")
    return lam * x + (1.0 - lam) * x[perm]


def mixup_cross_entropy(logits_a: Tensor, logits_b: Tensor, labels_a: Tensor, labels_b: Tensor, lam: float,
                        label_smoothing: float = 0.0) -> Tensor:
    """``lam * CE(logits_a, y_a) + (1 - lam) * CE(logits_b, y_b)``.

    Two logit sets because a margin head puts its margin on a different class for each label set; for a
    plain linear head pass the same logits twice.
    """
    ce_a = nnf.cross_entropy(logits_a, labels_a, label_smoothing=label_smoothing)
    ce_b = nnf.cross_entropy(logits_b, labels_b, label_smoothing=label_smoothing)
    return lam * ce_a + (1.0 - lam) * ce_b
