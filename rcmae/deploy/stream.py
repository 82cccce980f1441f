"""Log-mels of overlapping windows without recomputing shared frames (the streaming monitor).

A window of ``N`` samples starting at sample ``s`` has log-mel frames centred at ``s + t * hop_length``. With the
paper's front-end (``n_fft`` 1024, hop 512, centred, zero padding) frame ``t`` reads samples
``[s + t * hop - n_fft/2, s + t * hop + n_fft/2)``. Every frame that does not reach into the window's padding
(all but the first and the last) is therefore a frame of the *recording*, on the grid of start samples congruent
to ``s`` modulo the hop. Windows whose starts share that phase share their interior frames.

:func:`window_logmels` computes, for a batch of windows in one stretch of samples, one STFT per phase over the
stretch (:meth:`rcmae.data.features.LogMel.frames_db`) and the few edge frames per window from the window's own
ends, and assembles each window's ``[F, T]`` log-mel. It equals ``LogMel(window)`` to float32 rounding
(tests/deploy/test_stream.py). At a 1 s hop and a 10 s window the monitor computes each recording frame once per
phase (4 phases, as 16,000 samples are 31.25 hops) instead of once per window it lies in (10): 2.5x fewer frames.

:func:`window_batches` cuts a stream of sample blocks into batches of window starts and the stretch holding them,
holding one batch's stretch at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from rcmae.data.features import LogMel


def frame_layout(logmel: LogMel, window: int) -> tuple[int, int, int]:
    """``(T, first, last)``: the window's frame count and its interior frames ``first..last`` (inclusive), whose
    samples all lie inside the window (with ``center=False`` every frame is interior)."""
    c = logmel.config
    n_frames = c.n_frames(window)
    if not c.center:
        return n_frames, 0, n_frames - 1
    half = c.n_fft // 2
    first = -(-half // c.hop_length)  # ceil(half / hop): the first frame that needs no left padding
    last = (window - (c.n_fft - half)) // c.hop_length  # the last frame ending inside the window
    return n_frames, first, min(last, n_frames - 1)


@torch.no_grad()
def window_logmels(logmel: LogMel, stretch: np.ndarray | torch.Tensor, starts: Sequence[int],
                   window: int) -> torch.Tensor:
    """dB log-mels ``[B, F, T]`` of the windows ``stretch[s : s + window]`` for ``s`` in ``starts``.

    Equal to ``logmel(np.stack([stretch[s : s + window] for s in starts]))`` to float32 rounding, but each frame
    of the stretch is transformed once per phase (``s mod hop_length``) instead of once per window.
    """
    c = logmel.config
    x = torch.as_tensor(np.asarray(stretch), dtype=torch.float32, device=logmel.mel_basis.device)
    starts = [int(s) for s in starts]
    if any(s < 0 or s + window > len(x) for s in starts):
        raise ValueError(f"window_logmels: windows of {window} samples at {starts} do not fit a stretch of {len(x)}")
    n_frames, first, last = frame_layout(logmel, window)
    hop, half = c.hop_length, (c.n_fft // 2 if c.center else 0)
    out = torch.empty(len(starts), c.n_mels, n_frames, device=x.device)
    if last >= first:  # the interior: one STFT per phase over the stretch, sliced per window
        by_phase: dict[int, list[int]] = {}
        for k, s in enumerate(starts):
            by_phase.setdefault(s % hop, []).append(k)
        for rows in by_phase.values():
            lo = min(starts[k] for k in rows)
            hi = max(starts[k] for k in rows)
            a = lo + first * hop - half
            b = hi + last * hop - half + c.n_fft
            grid = logmel.frames_db(x[None, a:b])[0]  # [F, frames]: grid frame g starts at a + g * hop
            for k in rows:
                g = (starts[k] - lo) // hop
                out[k, :, first : last + 1] = grid[:, g : g + last - first + 1]
    if first > 0:  # head frames: the window's first samples, padded on the left as LogMel pads them
        # Enough samples for frames 0..first-1 (and more than the padding, which reflect padding needs).
        head = min(window, max((first - 1) * hop + c.n_fft - half, half + 1))
        seg = torch.stack([x[s : s + head] for s in starts])
        out[:, :, :first] = logmel.frames_db(logmel.pad(seg))[..., :first]  # one batch, not LogMel's CPU chunks
    if last < n_frames - 1:  # tail frames: a segment starting on the window's frame grid, padded on the right
        skip = 0  # whole hops the segment starts earlier, so that it is longer than the padding
        while window - (last + 1 - first - skip) * hop <= half and (last + 1 - first - skip) > 0:
            skip += 1
        cut = (last + 1 - first - skip) * hop
        seg = torch.stack([x[s + cut : s + window] for s in starts])
        out[:, :, last + 1 :] = logmel.frames_db(logmel.pad(seg))[..., first + skip :]
    if c.top_db is not None:
        out = torch.maximum(out, out.amax(dim=(-2, -1), keepdim=True) - c.top_db)
    return out


def window_batches(blocks: Iterator[np.ndarray], window: int, hop: int,
                   batch: int) -> Iterator[tuple[list[int], np.ndarray, int]]:
    """``(starts, stretch, offset)``: the monitor's windows, ``batch`` at a time (the one window schedule; the
    window-by-window :func:`rcmae.deploy.monitor.sliding_windows` takes them one at a time).

    ``starts`` are absolute sample indices (``0, hop, 2 hop, ...``, plus one window ending at the end of the
    recording; a recording shorter than one window gives one zero-padded window at 0); window ``s`` is
    ``stretch[s - offset : s - offset + window]``. At most ``batch`` windows per batch; only the current
    stretch and one block are held.
    """
    buf = np.zeros(0, np.float32)
    offset = 0  # absolute sample index of buf[0]
    next_start = 0
    total = 0
    last_start = None
    for block in blocks:
        buf = np.concatenate([buf, np.asarray(block, dtype=np.float32)])
        total += len(block)
        while True:
            n = (offset + len(buf) - window - next_start) // hop + 1 if next_start + window <= offset + len(buf) else 0
            if n < batch:
                break
            starts = [next_start + k * hop for k in range(batch)]
            yield starts, buf[: starts[-1] + window - offset], offset
            last_start = starts[-1]
            next_start = starts[-1] + hop
        # Keep one window's samples at least: the last window ends at the end of the recording.
        drop = min(next_start - offset, max(0, len(buf) - window))
        if drop > 0:
            buf, offset = buf[drop:], offset + drop
    if total == 0:
        return
    if total < window:
        yield [0], np.pad(buf, (0, window - len(buf))), 0
        return
    starts = []
    while next_start + window <= total:
        starts.append(next_start)
        next_start += hop
    previous = starts[-1] if starts else last_start
    if previous + window < total:
        starts.append(total - window)
    for b in range(0, len(starts), batch):
        part = starts[b : b + batch]
        yield part, buf[: part[-1] + window - offset], offset
