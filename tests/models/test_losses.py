"""Each loss against a slow, obvious Python loop over the batch (float64), plus degenerate batches."""

from __future__ import annotations

import math

import pytest
import torch

from rcmae.models.losses import finetune_loss, info_nce, masked_mse, pretrain_loss, supcon, variance_covariance

DT = torch.float64


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    na = math.sqrt(sum(float(v) ** 2 for v in a))
    nb = math.sqrt(sum(float(v) ** 2 for v in b))
    return sum(float(u) * float(v) for u, v in zip(a, b, strict=True)) / (na * nb)


def ref_masked_mse(pred, target, mask, norm_pix=False, per_clip=False):
    b_n, l_n, p_n = pred.shape
    total, count = 0.0, 0
    clips = []
    for b in range(b_n):
        c_total, c_count = 0.0, 0
        for i in range(l_n):
            if mask[b, i] != 1:
                continue
            t = [float(v) for v in target[b, i]]
            if norm_pix:
                m = sum(t) / p_n
                var = sum((v - m) ** 2 for v in t) / (p_n - 1)
                t = [(v - m) / math.sqrt(var + 1e-6) for v in t]
            err = sum((float(pred[b, i, k]) - t[k]) ** 2 for k in range(p_n)) / p_n
            c_total += err
            c_count += 1
        clips.append(c_total / c_count if c_count else 0.0)
        total += c_total
        count += c_count
    return clips if per_clip else total / count


def ref_info_nce(za, zg, tau, symmetric=False):
    n = za.shape[0]

    def one_way(a, g):
        loss = 0.0
        for i in range(n):
            den = sum(math.exp(_cos(a[i], g[j]) / tau) for j in range(n))
            loss += -math.log(math.exp(_cos(a[i], g[i]) / tau) / den)
        return loss / n

    fwd = one_way(za, zg)
    return 0.5 * (fwd + one_way(zg, za)) if symmetric else fwd


def ref_vcr(z, eps=1e-4):
    n, d = z.shape
    means = [sum(float(z[i, j]) for i in range(n)) / n for j in range(d)]
    v = 0.0
    for j in range(d):
        var = sum((float(z[i, j]) - means[j]) ** 2 for i in range(n)) / (n - 1)
        v += max(0.0, 1.0 - math.sqrt(var + eps))
    v /= d
    c = 0.0
    for j in range(d):
        for k in range(d):
            if j == k:
                continue
            cov = sum((float(z[i, j]) - means[j]) * (float(z[i, k]) - means[k]) for i in range(n)) / (n - 1)
            c += cov**2
    return v, c / d


def ref_supcon(z, labels, tau):
    n = z.shape[0]
    losses = []
    for i in range(n):
        pos = [p for p in range(n) if p != i and int(labels[p]) == int(labels[i])]
        if not pos:
            continue
        den = sum(math.exp(_cos(z[i], z[a]) / tau) for a in range(n) if a != i)
        li = -sum(math.log(math.exp(_cos(z[i], z[p]) / tau) / den) for p in pos) / len(pos)
        losses.append(li)
    return sum(losses) / len(losses) if losses else 0.0


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


# ------------------------------------------------------------------------------------------------ masked_mse
@pytest.mark.parametrize("norm_pix", [False, True])
def test_masked_mse_matches_loop(gen, norm_pix):
    pred = torch.randn(3, 7, 5, generator=gen, dtype=DT)
    target = torch.randn(3, 7, 5, generator=gen, dtype=DT) * 2 + 1
    mask = (torch.rand(3, 7, generator=gen) < 0.6).to(DT)
    mask[0, 0] = 1  # at least one masked patch
    got = masked_mse(pred, target, mask, norm_pix=norm_pix)
    assert got.ndim == 0
    assert got.item() == pytest.approx(ref_masked_mse(pred, target, mask, norm_pix), rel=1e-12)
    per = masked_mse(pred, target, mask, norm_pix=norm_pix, reduction="none")
    assert per.tolist() == pytest.approx(ref_masked_mse(pred, target, mask, norm_pix, per_clip=True), rel=1e-12)


def test_masked_mse_ignores_visible_patches(gen):
    pred = torch.zeros(1, 4, 2, dtype=DT)
    target = torch.tensor([[[1.0, 1.0], [100.0, 100.0], [3.0, 1.0], [50.0, 0.0]]], dtype=DT)
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.0]], dtype=DT)
    # Hand computed: patch 0 -> 1, patch 2 -> (9 + 1) / 2 = 5; mean = 3.
    assert masked_mse(pred, target, mask).item() == pytest.approx(3.0)
    # No masked patch: 0, not NaN.
    assert masked_mse(pred, target, torch.zeros(1, 4, dtype=DT)).item() == 0.0


def test_masked_mse_shape_errors():
    with pytest.raises(ValueError, match="mask"):
        masked_mse(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="pred"):
        masked_mse(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5), torch.zeros(2, 3))


# -------------------------------------------------------------------------------------------------- info_nce
@pytest.mark.parametrize("n", [2, 6])
@pytest.mark.parametrize("symmetric", [False, True])
def test_info_nce_matches_loop(gen, n, symmetric):
    za = torch.randn(n, 5, generator=gen, dtype=DT)
    zg = za + 0.5 * torch.randn(n, 5, generator=gen, dtype=DT)
    got = info_nce(za, zg, tau=0.05, symmetric=symmetric).item()
    assert got == pytest.approx(ref_info_nce(za, zg, 0.05, symmetric), rel=1e-10)


def test_info_nce_is_one_directional_by_default(gen):
    za = torch.randn(5, 4, generator=gen, dtype=DT)
    zg = torch.randn(5, 4, generator=gen, dtype=DT)
    assert info_nce(za, zg).item() != pytest.approx(info_nce(zg, za).item())
    assert info_nce(za, zg, symmetric=True).item() == pytest.approx(info_nce(zg, za, symmetric=True).item())


def test_info_nce_identical_embeddings_is_log_n():
    z = torch.ones(8, 3, dtype=DT, requires_grad=True)
    loss = info_nce(z, z.detach().clone())
    assert loss.item() == pytest.approx(math.log(8))
    loss.backward()
    assert torch.isfinite(z.grad).all()


# --------------------------------------------------------------------------------------- variance_covariance
@pytest.mark.parametrize("n", [2, 9])
def test_variance_covariance_matches_loop(gen, n):
    z = torch.randn(n, 6, generator=gen, dtype=DT) * torch.tensor([0.1, 0.5, 1.0, 2.0, 3.0, 0.01], dtype=DT)
    v, c = variance_covariance(z, parts=True)
    rv, rc = ref_vcr(z)
    assert v.item() == pytest.approx(rv, rel=1e-10, abs=1e-14)
    assert c.item() == pytest.approx(rc, rel=1e-10)
    assert variance_covariance(z).item() == pytest.approx(rv + rc, rel=1e-10)


def test_variance_covariance_identical_embeddings():
    z = torch.full((5, 4), 0.7, dtype=DT, requires_grad=True)
    v, c = variance_covariance(z, eps=1e-4, parts=True)
    # var = 0 -> std = sqrt(1e-4) = 0.01 -> hinge 0.99 in every dimension; no covariance.
    assert v.item() == pytest.approx(0.99)
    assert c.item() == 0.0
    (v + c).backward()
    assert torch.isfinite(z.grad).all()


def test_variance_covariance_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        variance_covariance(torch.zeros(1, 3))


# ---------------------------------------------------------------------------------------------- pretrain_loss
def test_pretrain_loss_combines_parts(gen):
    za = torch.randn(4, 6, generator=gen, dtype=DT)
    zg = torch.randn(4, 6, generator=gen, dtype=DT)
    pred = torch.randn(4, 5, 3, generator=gen, dtype=DT)
    target = torch.randn(4, 5, 3, generator=gen, dtype=DT)
    mask = torch.tensor([[1, 0, 1, 0, 1]] * 4, dtype=DT)
    rv_a, rc_a = ref_vcr(za)
    rv_g, rc_g = ref_vcr(zg)
    r_vcr = 0.5 * (rv_a + rc_a + rv_g + rc_g)
    r_nce = ref_info_nce(za, zg, 0.05)
    r_mae = ref_masked_mse(pred, target, mask)
    out = pretrain_loss(za, zg, pred, target, mask)
    assert out["vcr"].item() == pytest.approx(r_vcr, rel=1e-10)
    assert out["info_nce"].item() == pytest.approx(r_nce, rel=1e-10)
    assert out["mae"].item() == pytest.approx(r_mae, rel=1e-10)
    assert out["loss"].item() == pytest.approx(0.3 * r_nce + 0.3 * r_vcr + 0.4 * r_mae, rel=1e-10)
    out = pretrain_loss(za, zg, pred, target, mask, w_nce=1.0, w_vcr=0.0, w_mae=2.0, tau=0.2)
    assert out["loss"].item() == pytest.approx(ref_info_nce(za, zg, 0.2) + 2.0 * r_mae, rel=1e-10)


# ---------------------------------------------------------------------------------------------------- supcon
@pytest.mark.parametrize("labels", [[0, 0, 1, 1, 2, 2, 0], [0, 1, 1, 1, 2, 3, 3], [5, 5]])
def test_supcon_matches_loop(gen, labels):
    y = torch.tensor(labels)
    z = torch.randn(len(labels), 5, generator=gen, dtype=DT, requires_grad=True)
    loss = supcon(z, y, tau=0.1)
    assert loss.item() == pytest.approx(ref_supcon(z.detach(), y, 0.1), rel=1e-10, abs=1e-12)
    loss.backward()
    assert torch.isfinite(z.grad).all()


def test_supcon_batch_of_two_same_class_is_zero():
    z = torch.tensor([[1.0, 2.0], [-3.0, 0.5]], dtype=DT)
    # One positive and it is also the whole denominator: -log(1) = 0.
    assert supcon(z, torch.tensor([1, 1])).item() == pytest.approx(0.0, abs=1e-12)


def test_supcon_identical_embeddings_is_log_n_minus_1():
    z = torch.ones(6, 4, dtype=DT, requires_grad=True)
    loss = supcon(z, torch.tensor([0, 0, 0, 1, 1, 1]))
    assert loss.item() == pytest.approx(math.log(5))
    loss.backward()
    assert torch.isfinite(z.grad).all()


def test_supcon_all_singletons_is_zero_with_grad():
    z = torch.randn(4, 3, dtype=DT, requires_grad=True)
    loss = supcon(z, torch.arange(4))
    assert loss.item() == 0.0
    loss.backward()
    assert z.grad is not None and torch.equal(z.grad, torch.zeros_like(z))


def test_supcon_excludes_singleton_anchor(gen):
    z = torch.randn(5, 3, generator=gen, dtype=DT)
    y = torch.tensor([0, 0, 1, 1, 9])  # class 9 has one sample: it is a negative, never an anchor
    full = supcon(z, y)
    assert torch.isfinite(full)
    assert full.item() == pytest.approx(ref_supcon(z, y, 0.1), rel=1e-10)


def test_losses_gradcheck(gen):
    za = torch.randn(4, 3, generator=gen, dtype=DT, requires_grad=True)
    zg = torch.randn(4, 3, generator=gen, dtype=DT, requires_grad=True)
    y = torch.tensor([0, 1, 0, 2])
    assert torch.autograd.gradcheck(lambda a, g: info_nce(a, g, tau=0.5, symmetric=True), (za, zg))
    assert torch.autograd.gradcheck(lambda a: variance_covariance(a), (za,))
    assert torch.autograd.gradcheck(lambda a: supcon(a, y, tau=0.5), (za,))


# --------------------------------------------------------------------------------------------- finetune_loss
def test_finetune_loss_matches_loop(gen):
    z = torch.randn(6, 4, generator=gen, dtype=DT)
    logits = torch.randn(6, 3, generator=gen, dtype=DT)
    y = torch.tensor([0, 1, 2, 0, 1, 1])
    ce = 0.0
    for i in range(6):
        row = [float(v) for v in logits[i]]
        ce += -(row[int(y[i])] - math.log(sum(math.exp(v) for v in row)))
    ce /= 6
    out = finetune_loss(z, logits, y, w_scl=0.5, w_ce=2.0, tau=0.2)
    assert out["ce"].item() == pytest.approx(ce, rel=1e-10)
    assert out["loss"].item() == pytest.approx(0.5 * ref_supcon(z, y, 0.2) + 2.0 * ce, rel=1e-10)
