"""A long demo recording for monitoring: one demo machine running for minutes, with anomalous stretches.

Built from the demo factory's own clips of one unit (test-split plans with indices far above any data set's, so
none of them is in the training or test clips) at one steady level, background and SNR, joined with 50 ms
equal-power crossfades. The anomalous stretches
are whole clips drawn as anomalies; ``<name>.csv`` beside the wav lists them (``start_s,end_s,label``), so a
monitor's events can be checked against the truth.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rcmae.data.audio import write_wav
from rcmae.data.demo.generate import make_backgrounds, synthesize_clip
from rcmae.data.demo.plan import CLIP_SECONDS, SAMPLE_RATE, plan_clip
from rcmae.files import atomic_write_text

FADE_S = 0.05
# Clip indices of the recording's plans: far above any data set's, so its clips are new to every run.
_FIRST_INDEX = 100_000


def make_demo_recording(path: str | Path, seconds: float = 180.0, seed: int = 0, machine_type: str = "fan",
                        machine_id: str = "00", anomalous: Sequence[int] = (6, 7, 13)) -> Path:
    """Write a ``seconds``-long recording of one demo unit to ``path`` (16 kHz wav) and its truth table.

    Args:
        path: The wav to write (its folder is created); the truth goes to ``path.with_suffix(".csv")``.
        seconds: Length (rounded up to whole 10 s clips, less the crossfades).
        seed: The demo data seed whose units to use (a run trained on that demo set knows this unit).
        machine_type, machine_id: The unit.
        anomalous: Which 10 s clips (0-based) are anomalous.

    Returns:
        The wav path.
    """
    if seconds <= 0:
        raise ValueError(f"seconds={seconds}: a recording needs a positive length")
    n_clips = int(np.ceil(seconds / CLIP_SECONDS))
    clip_n = int(CLIP_SECONDS * SAMPLE_RATE)
    fade = int(FADE_S * SAMPLE_RATE)
    step = clip_n - fade
    backgrounds = make_backgrounds(seed)
    out = np.zeros(step * (n_clips - 1) + clip_n, dtype=np.float64)
    ramp = np.sin(np.linspace(0.0, np.pi / 2, fade)) ** 2  # equal power: sin^2 + cos^2 = 1
    rows = []
    for k in range(n_clips):
        label = "anomaly" if k in set(anomalous) else "normal"
        # One machine in one hall: a steady level, background and SNR (the data set's clips vary them per clip).
        plan = dataclasses.replace(plan_clip(seed, machine_type, machine_id, "test", label, _FIRST_INDEX + k),
                                   gain_db=0.0, snr_db=3.0, background=0)
        y = synthesize_clip(plan, seed, backgrounds).astype(np.float64)
        if k > 0:
            y[:fade] *= np.sqrt(ramp)
        if k < n_clips - 1:
            y[-fade:] *= np.sqrt(ramp[::-1])
        out[k * step : k * step + clip_n] += y
        start = k * step / SAMPLE_RATE
        rows.append(f"{start:.3f},{start + clip_n / SAMPLE_RATE:.3f},{label}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, np.clip(out, -1.0, 1.0).astype(np.float32), SAMPLE_RATE)
    atomic_write_text(path.with_suffix(".csv"), "start_s,end_s,label\n" + "\n".join(rows) + "\n")
    return path
