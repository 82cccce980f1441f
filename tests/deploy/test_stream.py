"""The streaming monitor's front-end: shared frames of overlapping windows, against each window's own log-mel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rcmae.data.features import LogMel, LogMelConfig
from rcmae.deploy.monitor import sliding_windows
from rcmae.deploy.stream import frame_layout, window_batches, window_logmels

CONFIGS = {
    "paper": LogMelConfig(),
    "top_db": LogMelConfig(top_db=40.0),
    "no_centre": LogMelConfig(center=False),
    "reflect": LogMelConfig(pad_mode="reflect"),
    "magnitude_odd_hop": LogMelConfig(power=1.0, n_fft=512, win_length=400, hop_length=160),
    "reflect_hop_300": LogMelConfig(hop_length=300, pad_mode="reflect"),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("window", [160000, 16000, 1025])
def test_window_logmels_equal_each_windows_own_logmel(name, window):
    lm = LogMel(CONFIGS[name])
    rng = np.random.default_rng(7)
    y = (0.1 * rng.standard_normal(16000 * 14) + 0.3 * np.sin(np.arange(16000 * 14) * 0.05)).astype(np.float32)
    # Several phases modulo the hop (16000 = 31.25 hops of 512), one window alone in its phase, the stretch's end.
    starts = [s for s in (0, 16000, 32000, 48000, 64000, 71111, len(y) - window) if s + window <= len(y)]
    got = window_logmels(lm, y, starts, window)
    ref = lm(np.stack([y[s : s + window] for s in starts]))
    assert got.shape == ref.shape
    # float32 rounding on the dB scale; a frame off by one hop differs by several dB.
    assert (got - ref).abs().max().item() <= 1e-5 * ref.abs().max().item() + 1e-4


def test_frame_layout_by_hand():
    # 160000 samples, n_fft 1024, hop 512, centred: 313 frames; frame 0 reads [-512, 512) and frame 312 reads
    # [159232, 160256): both reach into the padding, frames 1..311 do not.
    assert frame_layout(LogMel(), 160000) == (313, 1, 311)
    assert frame_layout(LogMel(LogMelConfig(center=False)), 160000) == (311, 0, 310)


def test_window_logmels_refuses_windows_outside_the_stretch():
    with pytest.raises(ValueError, match="do not fit a stretch"):
        window_logmels(LogMel(), np.zeros(2000, np.float32), [1500], 1024)


def _direct_windows(y: np.ndarray, window: int, hop: int) -> list[tuple[int, np.ndarray]]:
    """The schedule written out: starts 0, hop, ... while a window fits, then one ending at the end; a recording
    shorter than a window is one zero-padded window at 0."""
    if len(y) == 0:
        return []
    if len(y) < window:
        return [(0, np.pad(y, (0, window - len(y))))]
    starts = list(range(0, len(y) - window + 1, hop))
    if starts[-1] + window < len(y):
        starts.append(len(y) - window)
    return [(s, y[s : s + window]) for s in starts]


@pytest.mark.parametrize("total", [0, 500, 16000, 16001, 45_500, 80_000])
@pytest.mark.parametrize("hop,block,batch", [(4000, 7000, 3), (1000, 16000, 64), (20000, 3000, 2), (3333, 900, 1)])
def test_window_batches_hold_the_windows_of_the_recording(total, hop, block, batch):
    window = 16000
    y = np.random.default_rng(total).standard_normal(total).astype(np.float32)
    blocks = [y[i : i + block] for i in range(0, total, block)]
    ref = _direct_windows(y, window, hop)
    got = []
    for starts, stretch, offset in window_batches(iter(blocks), window, hop, batch):
        assert 1 <= len(starts) <= batch
        got += [(s, stretch[s - offset : s - offset + window]) for s in starts]
    assert [s for s, _ in got] == [s for s, _ in ref]
    for (_, a), (_, b) in zip(got, ref, strict=True):
        assert a.shape == (window,) and np.array_equal(a, b)
    # The window-by-window form is the same schedule, one window at a time.
    one = [(s, w.copy()) for s, w in sliding_windows(iter(blocks), window, hop)]
    assert [s for s, _ in one] == [s for s, _ in ref]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(one, ref, strict=True))


def test_window_logmels_on_a_batch_stream_equal_the_windows_of_a_recording():
    lm = LogMel()
    y = np.random.default_rng(3).standard_normal(16000 * 23 + 123).astype(np.float32)
    blocks = [y[i : i + 37_000] for i in range(0, len(y), 37_000)]
    for starts, stretch, offset in window_batches(iter(blocks), 160000, 16000, 5):
        got = window_logmels(lm, stretch, [s - offset for s in starts], 160000)
        ref = lm(np.stack([y[s : s + 160000] for s in starts]))
        assert torch.allclose(got, ref, atol=1e-3, rtol=0)
