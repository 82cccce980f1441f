"""SpecAugment masking: the vectorised version against a per-example loop that applies the same draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rcmae.augment.specaugment import SpecAugmentConfig, draw_masks, spec_augment


def _loop_reference(x: torch.Tensor, draws, mask_value: str) -> torch.Tensor:
    """Slow and obvious: slice assignment per example and per mask."""
    out = x.clone()
    for b in range(x.shape[0]):
        fill = float(x[b].double().mean()) if mask_value == "mean" else 0.0
        for start, width in zip(draws.freq_start[b].tolist(), draws.freq_width[b].tolist(), strict=True):
            out[b, start:start + width, :] = fill
        for start, width in zip(draws.time_start[b].tolist(), draws.time_width[b].tolist(), strict=True):
            out[b, :, start:start + width] = fill
    return out


@pytest.mark.parametrize("mask_value", ["mean", "zero"])
@pytest.mark.parametrize("cfg", [SpecAugmentConfig(), SpecAugmentConfig(freq_masks=3, freq_width=5, time_masks=1,
                                                                         time_width=7)])
def test_matches_loop_reference_with_the_same_draws(cfg, mask_value):
    cfg.mask_value = mask_value
    x = torch.randn(6, 64, 80, generator=torch.Generator().manual_seed(1)) * 10 - 40
    draws = draw_masks(tuple(x.shape), cfg, torch.Generator().manual_seed(7))
    expected = _loop_reference(x, draws, mask_value)
    got = spec_augment(x, cfg, torch.Generator().manual_seed(7))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # Something was masked, and the input itself was left alone.
    assert (got != x).any()
    assert not torch.equal(x, got)


def test_deterministic_for_a_seed_and_different_for_another():
    x = torch.randn(4, 128, 313)
    a = spec_augment(x, generator=torch.Generator().manual_seed(3))
    b = spec_augment(x, generator=torch.Generator().manual_seed(3))
    c = spec_augment(x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_each_example_gets_its_own_masks():
    x = torch.zeros(8, 128, 313) + 1.0
    out = spec_augment(x, SpecAugmentConfig(mask_value="zero"), torch.Generator().manual_seed(0))
    masked = out == 0
    # Masked frequency rows (all frames zero) differ between examples.
    rows = [tuple(torch.nonzero(masked[b].all(dim=1)).flatten().tolist()) for b in range(8)]
    assert len(set(rows)) > 1


def test_draws_are_uniform_over_widths_and_positions():
    cfg = SpecAugmentConfig(freq_masks=1, freq_width=4, time_masks=1, time_width=3)
    n_freq, n_time = 10, 6
    d = draw_masks((20000, n_freq, n_time), cfg, torch.Generator().manual_seed(0))
    fw, fs = d.freq_width.flatten().numpy(), d.freq_start.flatten().numpy()
    assert fw.min() == 0 and fw.max() == 4
    assert np.all(fs >= 0) and np.all(fs + fw <= n_freq)
    # Width uniform on 0..4: each value about 1/5 of the draws.
    np.testing.assert_allclose(np.bincount(fw, minlength=5) / fw.size, 0.2, atol=0.02)
    # Given width w, the start is uniform on 0..F-w: for w = 4, seven positions.
    starts = fs[fw == 4]
    np.testing.assert_allclose(np.bincount(starts, minlength=7) / starts.size, 1 / 7, atol=0.03)
    tw, ts = d.time_width.flatten().numpy(), d.time_start.flatten().numpy()
    assert tw.max() == 3 and np.all(ts + tw <= n_time)


def test_masked_fraction_matches_expectation_hand_computed():
    # One frequency mask of width 0..2 over F = 4, no time mask: E[width] = 1 -> 1/4 of the cells.
    cfg = SpecAugmentConfig(freq_masks=1, freq_width=2, time_masks=0, time_width=0, mask_value="zero")
    out = spec_augment(torch.ones(40000, 4, 3), cfg, torch.Generator().manual_seed(0))
    assert abs(float((out == 0).float().mean()) - 0.25) < 0.01


def test_mean_fill_is_the_examples_mean_and_2d_input_works():
    x = torch.arange(12.0).reshape(3, 4)  # [F, T], mean 5.5
    cfg = SpecAugmentConfig(freq_masks=1, freq_width=3, time_masks=0, time_width=0)
    out = spec_augment(x, cfg, torch.Generator().manual_seed(3))  # seed 3 masks rows 1-2 (checked below)
    assert out.shape == x.shape
    changed = out != x
    assert changed.any()
    assert torch.all(out[changed] == 5.5)
    assert torch.equal(out[0], x[0])


@pytest.mark.parametrize("kwargs, field", [({"freq_width": 200}, "freq_width"), ({"time_width": 400}, "time_width")])
def test_widths_larger_than_the_spectrogram_are_refused(kwargs, field):
    with pytest.raises(ValueError, match=field):
        spec_augment(torch.zeros(1, 128, 313), SpecAugmentConfig(**kwargs))


def test_bad_config_is_refused_with_the_field_name():
    with pytest.raises(ValueError, match="mask_value"):
        SpecAugmentConfig(mask_value="noise")
    with pytest.raises(ValueError, match="freq_masks"):
        SpecAugmentConfig(freq_masks=-1)
    with pytest.raises(ValueError, match=r"\[B, F, T\]"):
        spec_augment(torch.zeros(2, 1, 128, 313))
