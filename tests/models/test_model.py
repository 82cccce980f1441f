"""RC-MAE model: geometry, masking, positions, shapes, stat fusion and parameter counts."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from rcmae.models.rcmae import (
    PRESETS,
    RCMAE,
    ModelConfig,
    Output,
    clip_stats,
    count_parameters,
    model_preset,
    sincos_pos_embed_2d,
)

# Tiny: 32 mel x 40 frames, 8 x 5 patches -> 4 x 8 = 32 tokens, width 32.
TINY = dict(n_mels=32, n_frames=40, patch_f=8, patch_t=5, embed_dim=32, depth=2, heads=2, mlp_ratio=2.0,
            decoder_embed_dim=16, decoder_depth=1, decoder_heads=2, proj_dim=24)


def tiny(**kw) -> RCMAE:
    torch.manual_seed(0)
    return RCMAE(ModelConfig(**{**TINY, **kw}))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------- config
def test_config_defaults_are_the_paper_geometry():
    c = ModelConfig()
    assert c.grid == (8, 64) and c.num_patches == 512 and c.patch_dim == 80
    a = model_preset("audiomae")
    assert (a.n_frames, a.patch_f, a.patch_t) == (1024, 16, 16) and a.grid == (8, 64) and a.num_patches == 512
    assert set(PRESETS) == {"paper", "audiomae"}
    assert model_preset("paper", depth=2).depth == 2


@pytest.mark.parametrize("field,value,match", [
    ("n_mels", 100, "n_mels=100 is not a multiple of patch_f"),
    ("n_frames", 313, "n_frames=313 is not a multiple of patch_t"),
    ("heads", 5, "not divisible by heads"),
    ("embed_dim", 30, "embed_dim=30"),
    ("mask_ratio_max", 1.0, "mask_ratio"),
    ("pool", "max", "pool"),
    ("depth", 0, "depth"),
])
def test_config_validation(field, value, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**{field: value})
    with pytest.raises(ValueError, match="unknown preset"):
        model_preset("huge")


# ------------------------------------------------------------------------------------------------ geometry
def test_patchify_matches_manual_slices_and_round_trips():
    m = tiny()
    x = torch.randn(2, 32, 40, generator=gen())
    p = m.patchify(x)
    assert p.shape == (2, 32, 40)
    grid_t = 8
    for b, i, j in [(0, 0, 0), (1, 2, 3), (0, 3, 7), (1, 1, 0)]:
        manual = x[b, i * 8:(i + 1) * 8, j * 5:(j + 1) * 5].reshape(-1)
        assert torch.equal(p[b, i * grid_t + j], manual)
    assert torch.equal(m.unpatchify(p), x)


def test_pad_frames_pads_zeros_and_crops():
    m = tiny()
    x = torch.randn(2, 32, 33, generator=gen())
    padded = m.pad_frames(x)
    assert padded.shape == (2, 32, 40)
    assert torch.equal(padded[..., :33], x) and torch.count_nonzero(padded[..., 33:]) == 0
    long = torch.randn(1, 32, 50, generator=gen())
    assert torch.equal(m.pad_frames(long), long[..., :40])


def test_input_errors_name_the_problem():
    m = tiny()
    with pytest.raises(ValueError, match="mel bands"):
        m.embed(torch.zeros(1, 16, 40))
    with pytest.raises(ValueError, match=r"\[B, F, T\]"):
        m.embed(torch.zeros(32, 40))
    with pytest.raises(ValueError, match="set_num_classes"):
        m.classify(torch.zeros(1, 24))


# ------------------------------------------------------------------------------------------------- masking
@pytest.mark.parametrize("ratio", [0.5, 0.75, 0.0])
def test_random_masking(ratio):
    x = torch.randn(3, 32, 4, generator=gen(1))
    kept, mask, ids_restore = RCMAE.random_masking(x, ratio, gen(7))
    n_keep = int(32 * (1 - ratio))
    assert kept.shape == (3, n_keep, 4)
    assert mask.shape == (3, 32) and (mask.sum(1) == 32 - n_keep).all()
    for b in range(3):
        visible = [i for i in range(32) if mask[b, i] == 0]
        # The kept tokens are exactly the visible ones (as a set of rows).
        got = sorted(tuple(r) for r in kept[b].tolist())
        want = sorted(tuple(x[b, i].tolist()) for i in visible)
        assert got == want
    # ids_restore inverts the shuffle: shuffle with argsort(ids_restore), gather back with ids_restore.
    ids_shuffle = torch.argsort(ids_restore, dim=1)
    shuffled = torch.gather(x, 1, ids_shuffle.unsqueeze(-1).expand(-1, -1, 4))
    assert torch.equal(torch.gather(shuffled, 1, ids_restore.unsqueeze(-1).expand(-1, -1, 4)), x)
    assert torch.equal(shuffled[:, :n_keep], kept)
    # Same seed, same mask; another seed, another mask.
    assert torch.equal(RCMAE.random_masking(x, ratio, gen(7))[1], mask)
    if ratio > 0:
        assert not torch.equal(RCMAE.random_masking(x, ratio, gen(8))[1], mask)


def test_sample_mask_ratio_range_and_repeatability():
    m = tiny(mask_ratio_min=0.5, mask_ratio_max=0.75)
    g = gen(3)
    ratios = [m.sample_mask_ratio(g) for _ in range(200)]
    assert min(ratios) >= 0.5 and max(ratios) <= 0.75
    assert max(ratios) - min(ratios) > 0.2  # spread over the range, not a constant
    g2 = gen(3)
    assert [m.sample_mask_ratio(g2) for _ in range(200)] == ratios


# ----------------------------------------------------------------------------------------------- positions
def test_sincos_pos_embed_matches_formula():
    dim, grid_f, grid_t = 16, 3, 5
    table = sincos_pos_embed_2d(dim, grid_f, grid_t)
    assert table.shape == (15, 16)
    quarter = dim // 4
    for i, j in [(0, 0), (1, 3), (2, 4), (2, 0)]:
        row = table[i * grid_t + j]
        for k in range(quarter):
            w = 1.0 / 10000 ** (k / quarter)
            assert row[k].item() == pytest.approx(math.sin(i * w), abs=1e-6)
            assert row[quarter + k].item() == pytest.approx(math.cos(i * w), abs=1e-6)
            assert row[2 * quarter + k].item() == pytest.approx(math.sin(j * w), abs=1e-6)
            assert row[3 * quarter + k].item() == pytest.approx(math.cos(j * w), abs=1e-6)


def test_positions_are_fixed_buffers():
    m = tiny()
    names = {n for n, _ in m.named_parameters()}
    assert "pos_embed" not in names and "decoder_pos_embed" not in names
    assert m.pos_embed.shape == (1, 33, 32) and torch.count_nonzero(m.pos_embed[0, 0]) == 0
    assert torch.allclose(m.pos_embed[0, 1:], sincos_pos_embed_2d(32, 4, 8))


# -------------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("geometry,frames_in", [
    (dict(n_mels=128, n_frames=320, patch_f=16, patch_t=5), 313),  # the paper
    (dict(n_mels=128, n_frames=1024, patch_f=16, patch_t=16), 1001),  # Audio-MAE
    ({}, 40),  # tiny
])
def test_output_shapes(geometry, frames_in):
    m = tiny(**geometry, n_classes=3)
    c = m.config
    assert c.num_patches == (512 if geometry else 32)
    x = torch.randn(2, c.n_mels, frames_in, generator=gen())
    latent, mask, ids_restore = m.forward_encoder(x, 0.75, gen(1))
    n_keep = int(c.num_patches * 0.25)
    assert latent.shape == (2, 1 + n_keep, c.embed_dim)
    assert mask.shape == ids_restore.shape == (2, c.num_patches)
    pred = m.forward_decoder(latent, ids_restore)
    assert pred.shape == (2, c.num_patches, c.patch_f * c.patch_t)
    assert m.project(latent).shape == (2, c.proj_dim)
    m.eval()
    out = m(x)
    assert isinstance(out, Output)
    assert out.embedding.shape == (2, c.proj_dim) and out.logits.shape == (2, 3)
    assert m.reconstruction_error(x, 0.6, gen(2), n_masks=2).shape == (2,)


def test_paper_preset_parameter_count():
    c = ModelConfig()
    m = RCMAE(c)

    def block(d: int, hidden: int) -> int:
        # qkv + out projection, MLP, two LayerNorms (weights and biases).
        return (3 * d * d + 3 * d) + (d * d + d) + (d * hidden + hidden) + (hidden * d + d) + 4 * d

    d, dd = c.embed_dim, c.decoder_embed_dim
    encoder = (80 * d + d) + d + c.depth * block(d, 4 * d) + 2 * d  # patch embed, cls, blocks, norm
    decoder = (d * dd + dd) + dd + c.decoder_depth * block(dd, 4 * dd) + 2 * dd + (dd * 80 + 80)
    proj = 2 * d + (d * 512 + 512)
    assert count_parameters(m) == encoder + decoder + proj
    assert 21_000_000 <= encoder <= 24_000_000
    assert count_parameters(m) == 42_997_072
    m.set_num_classes(41)
    assert count_parameters(m) == 42_997_072 + 512 * 41 + 41
    assert m.config.n_classes == 41
    # paper-light: the same with MAE's light decoder (width 256, depth 4, 8 heads).
    from rcmae.run.config import load_config

    assert load_config("paper").model == c
    light = load_config("paper-light").model
    assert (light.decoder_embed_dim, light.decoder_depth, light.decoder_heads) == (256, 4, 8)
    assert count_parameters(RCMAE(light)) == 24_802_640


# ------------------------------------------------------------------------------------------ consistency
def test_zero_mask_ratio_matches_full_embedding():
    m = tiny()
    x = torch.randn(2, 32, 40, generator=gen())
    with torch.no_grad():
        latent, mask, ids_restore = m.forward_encoder(x, 0.0, gen(5))
        assert mask.sum() == 0
        # Attention is permutation-equivariant and mean pooling order-free: shuffling changes nothing.
        assert torch.allclose(m.project(latent), m.embed(x), atol=1e-5)
        # The decoder puts shuffled tokens back: same as decoding the unshuffled sequence.
        latent_in_order = m._encode(m._tokens(x))
        identity = torch.arange(32).expand(2, -1)
        assert torch.allclose(m.forward_decoder(latent, ids_restore), m.forward_decoder(latent_in_order, identity),
                              atol=1e-5)


def test_reconstruction_error_matches_manual_loop():
    m = tiny(norm_pix_loss=True)
    x = torch.randn(2, 32, 40, generator=gen())
    got = m.reconstruction_error(x, 0.5, gen(11), n_masks=3)
    g = gen(11)
    want = np.zeros(2)
    with torch.no_grad():
        for _ in range(3):
            latent, mask, ids_restore = m.forward_encoder(x, 0.5, g)
            pred = m.forward_decoder(latent, ids_restore).double()
            patches = m.patchify(x).double()
            for b in range(2):
                errs = []
                for i in range(32):
                    if mask[b, i]:
                        t = patches[b, i]
                        t = (t - t.mean()) / math.sqrt(float(t.var()) + 1e-6)
                        errs.append(float(((pred[b, i] - t) ** 2).mean()))
                want[b] += np.mean(errs) / 3
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


def test_masked_patch_errors_match_manual_loop():
    m = tiny(norm_pix_loss=True)
    x = torch.randn(2, 32, 40, generator=gen())
    got = m.masked_patch_errors(x, 0.5, gen(12), n_masks=2)
    g = gen(12)
    want: list[list[float]] = [[], []]
    with torch.no_grad():
        for _ in range(2):
            latent, mask, ids_restore = m.forward_encoder(x, 0.5, g)
            pred, patches = m.forward_decoder(latent, ids_restore).double(), m.patchify(x).double()
            for b in range(2):
                for i in range(32):
                    if mask[b, i]:
                        t = patches[b, i]
                        t = (t - t.mean()) / math.sqrt(float(t.var()) + 1e-6)
                        want[b].append(float(((pred[b, i] - t) ** 2).mean()))
    assert got.shape == (2, 2 * 16)
    np.testing.assert_allclose(got.numpy(), np.array(want), rtol=1e-5)
    # Their per-clip mean is the recon score under the same masks.
    np.testing.assert_allclose(got.mean(1).numpy(), m.reconstruction_error(x, 0.5, gen(12), n_masks=2).numpy(),
                               rtol=1e-5)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_fixed_mask_errors_equal_one_clip_at_a_time_under_the_same_noise(norm_pix):
    # The scorers' and the export graph's batched form: every clip under the masks of the rows of `noise`.
    m = tiny(norm_pix_loss=norm_pix)
    x = torch.randn(3, 32, 40, generator=gen())
    noise = torch.rand(4, m.config.num_patches, generator=gen(7))
    with torch.no_grad():
        got = m.fixed_mask_errors(x, 0.5, noise)
        got_patch = m.fixed_mask_errors(x, 0.5, noise, per_patch=True)
        for b in range(3):
            # One clip repeated per mask draws exactly `noise` from the same seed: the existing per-clip forms.
            one = x[b : b + 1].expand(4, -1, -1)
            want = m.reconstruction_error(one, 0.5, gen(7), n_masks=1)
            np.testing.assert_allclose(got[b].numpy(), want.numpy(), rtol=1e-5)
            patches = m.masked_patch_errors(one, 0.5, gen(7)).flatten()
            np.testing.assert_allclose(got_patch[b].numpy(), patches.numpy(), rtol=1e-5)
    assert got.shape == (3, 4) and got_patch.shape == (3, 4 * 16)


def test_training_step_gives_finite_gradients_to_every_part():
    m = tiny(n_classes=2, stat_fusion=True, pool="cls")
    x = torch.randn(4, 32, 37, generator=gen())
    latent, mask, ids_restore = m.forward_encoder(x, m.sample_mask_ratio(gen()), gen(1))
    pred = m.forward_decoder(latent, ids_restore)
    loss = m.forward_loss(x, pred, mask) + m.classify(m.project(latent, x)).logsumexp(1).mean()
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


# -------------------------------------------------------------------------------------------- stat fusion
def test_clip_stats_matches_numpy():
    x = torch.randn(3, 32, 17, generator=gen(), dtype=torch.float64)
    s = clip_stats(x).numpy()
    xn = x.numpy()
    np.testing.assert_allclose(s[:, :32], xn.mean(axis=2), rtol=1e-12)
    np.testing.assert_allclose(s[:, 32:], xn.std(axis=2), rtol=1e-12)


def test_clip_stats_gradient_is_torch_std_s_and_zero_on_a_flat_band():
    # Reference: autograd through torch's own population std, whose backward sets a zero-spread band's
    # gradient to 0. A plain sqrt of the variance would give NaN there (an infinite slope times 0).
    x = torch.randn(3, 6, 9, generator=gen(), dtype=torch.float64)
    x[0, 2] = 0.7  # a flat band
    x[1] = -1.0  # a clip of flat bands
    x.requires_grad_(True)
    weights = torch.randn(3, 12, generator=gen(1), dtype=torch.float64)
    ours = clip_stats(x)
    ref = torch.cat([x.mean(dim=-1), x.std(dim=-1, unbiased=False)], dim=-1)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-15)
    (g_ours,) = torch.autograd.grad((ours * weights).sum(), x)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), x)
    assert torch.isfinite(g_ours).all()
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-12)


def test_stat_fusion_carries_band_level():
    m = tiny(stat_fusion=True)
    with pytest.raises(ValueError, match="stat_fusion"):
        m.project(torch.zeros(1, 5, 32))
    assert m.proj.in_features == 32 + 2 * 32
    # Silence the token pathway: z is then proj(stats) exactly, so raising band 5 by delta must move z by
    # delta * W[:, D + 5] (the band's mean column; its std does not change).
    with torch.no_grad():
        m.proj.weight[:, :32] = 0
    m.eval()
    x = torch.randn(2, 32, 40, generator=gen())
    x2 = x.clone()
    x2[:, 5, :] += 0.8
    # Only the first 33 frames are real: statistics ignore the zero padding up to n_frames.
    z, z2 = m.embed(x[..., :33]), m.embed(x2[..., :33])
    want = 0.8 * m.proj.weight[:, 32 + 5].detach()
    torch.testing.assert_close(z2 - z, want.expand(2, -1), atol=1e-5, rtol=1e-5)
    direct = m.proj(torch.cat([torch.zeros(2, 32), clip_stats(x[..., :33])], dim=1))
    torch.testing.assert_close(z, direct, atol=1e-5, rtol=1e-5)


def test_plain_model_has_no_stat_path():
    m = tiny()
    assert m.proj.in_features == 32
    # The same silencing leaves a plain model's z constant (= the bias) whatever the band levels.
    with torch.no_grad():
        m.proj.weight.zero_()
    x = torch.randn(2, 32, 40, generator=gen())
    x2 = x.clone()
    x2[:, 5, :] += 0.8
    torch.testing.assert_close(m.embed(x), m.embed(x2))


def test_set_num_classes_and_eval_output():
    m = tiny()
    m.eval()
    x = torch.randn(2, 32, 40, generator=gen())
    assert m(x).logits is None
    m.set_num_classes(4)
    out = m(x)
    assert out.logits.shape == (2, 4)
    torch.testing.assert_close(out.logits, out.embedding @ m.head.weight.T + m.head.bias)
    # Train-mode slow path and eval fast path agree (dropout 0).
    m.train()
    torch.testing.assert_close(m.embed(x), out.embedding, atol=1e-5, rtol=1e-5)
    assert dataclasses.replace(m.config).n_classes == 4
    m.set_num_classes(0)
    assert m.head is None
