"""Scoring recordings of any length (``rcmae monitor``): a sliding window, a score time series, events.

A window of the detector's clip length slides over the recording at ``hop`` seconds; each window is
scored by a run (:class:`rcmae.scorers.Detector`) or an exported bundle (:class:`rcmae.deploy.bundle.Bundle`).
Point ``k`` of the series stands for the window centred at ``t_k``; it represents ``[t_k - hop/2, t_k + hop/2]``.
An *event* is a maximal run of consecutive points above the threshold whose span
``[t_first - hop/2, t_last + hop/2]`` lasts at least ``min_duration`` seconds; it reports its start, end,
peak time and peak score.

The recording is read from disk in blocks (``soundfile``) and resampled as a stream (``soxr``), so only
one window plus one block is in memory: hours of audio fit.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm.auto import tqdm

from rcmae.files import atomic_write_text

AUDIO_SUFFIXES = (".wav", ".flac")
SERIES_COLUMNS = ["start_s", "end_s", "center_s", "score", "threshold", "above"]
EVENT_COLUMNS = ["event", "start_s", "end_s", "duration_s", "peak_s", "peak_score", "kind"]


STREAM_BATCH = 64  # windows per streamed batch: 64 one-second hops share a 73 s stretch of frames
STREAM_SECONDS = 120.0  # and at most about this much audio per batch


class MonitorError(ValueError):
    """A recording or setting the monitor cannot use; the message is one line."""


# ------------------------------------------------------------------------------------------ scorers
@dataclass
class WindowScorer:
    """What the monitor needs from a detector: clip geometry, units, thresholds, batch scoring.

    Build it with :func:`open_scorer`.
    """

    name: str
    sample_rate: int
    clip_samples: int
    channel: int | str
    units: list[tuple[str, str]]
    score_waveforms: object  # (waves [B, N], types, ids) -> np.ndarray [B]
    threshold: object  # (type, id) -> float | None
    source: str = ""
    extra: dict = field(default_factory=dict)
    # For the streaming monitor (rcmae.deploy.stream): the log-mel front-end and (dB log-mels [B, F, T], types,
    # ids) -> scores [B]; None when the scorer takes waveforms only (TorchScript and ONNX bundles).
    logmel: object = None
    score_logmels: object = None


def open_scorer(bundle: str | os.PathLike | None = None, run: str | os.PathLike | None = None,
                scorer: str | None = None, trust: bool = False) -> WindowScorer:
    """A :class:`WindowScorer` over an exported bundle or a run folder (exactly one of them).

    ``trust`` lets a TorchScript bundle load (its code runs; :class:`rcmae.deploy.bundle.Bundle`).
    """
    if (bundle is None) == (run is None):
        raise MonitorError("pass exactly one of --bundle BUNDLE or --run RUN")
    if bundle is not None:
        from rcmae.deploy.bundle import Bundle

        b = Bundle(bundle, trust=trust)
        b._load()  # refused here, with one line, when a TorchScript bundle is not trusted
        if scorer and scorer != b.scorer:
            raise MonitorError(f"{bundle}: the bundle holds scorer {b.scorer}, not {scorer}; export that scorer")
        return WindowScorer(name=b.scorer, sample_rate=b.sample_rate, clip_samples=b.clip_samples,
                            channel=b.meta.get("channel", 0), units=list(b.units), score_waveforms=b.score_waveforms,
                            threshold=b.threshold, source=str(bundle), extra={"bundle": b}, logmel=b.logmel,
                            score_logmels=b.score_logmels if b.logmel is not None else None)
    from rcmae.scorers.detector import Detector

    det = Detector.load(run)
    name = det._scorer(scorer)
    n = int(round(det.cfg.data.duration * det.cfg.data.sample_rate))

    def score_waveforms(waves, types, ids):
        return det.score_waveforms(waves, types, ids, name)

    def score_logmels(db, types, ids):  # Detector.features after its log-mel
        return det.score_logmels(det.stats.apply(db).float(), types, ids, name)

    return WindowScorer(name=name, sample_rate=int(det.cfg.data.sample_rate), clip_samples=n,
                        channel=det.cfg.data.channel, units=list(det.units),
                        score_waveforms=score_waveforms, threshold=lambda t, i: det.threshold(name, t, i),
                        source=str(run), extra={"detector": det}, logmel=det.logmel, score_logmels=score_logmels)


def resolve_unit(scorer: WindowScorer, path: str | os.PathLike, machine_type: str | None,
                 machine_id: str | None) -> tuple[str, str]:
    """The machine of a recording: the flags, else the only unit, else ``<type>/.../*id_XX*`` in the path (or a
    ``<type>`` word of the file name, as ``demo_fan_id_00.wav``)."""
    if machine_type and machine_id:
        return str(machine_type), str(machine_id)
    if len(scorer.units) == 1:
        return scorer.units[0]
    p = Path(path)
    m = re.search(r"id_(\d+)", p.name)
    mid = machine_id or (m.group(1) if m else None)
    types = {t for t, _ in scorer.units}
    words = re.split(r"[_\-. ]+", p.stem)
    mtype = machine_type or next((part for part in reversed(p.parts[:-1]) if part in types), None) \
        or next((w for w in words if w in types), None)
    if mtype is None or mid is None or (mtype, mid) not in scorer.units:
        known = ", ".join(f"{t}/{i}" for t, i in scorer.units)
        raise MonitorError(f"{path}: cannot tell which machine it records; pass --machine-type and --machine-id "
                           f"(known: {known})")
    return mtype, mid


# ------------------------------------------------------------------------------------------ reading
def _mono(block: np.ndarray, channel: int | str, path) -> np.ndarray:
    if block.ndim == 1:
        return block
    if channel == "mean":
        return block.mean(axis=1)
    if int(channel) >= block.shape[1]:
        raise MonitorError(f"{path}: has {block.shape[1]} channel(s), no channel {channel}; pick another channel")
    return block[:, int(channel)]


def stream_samples(path: str | os.PathLike, sample_rate: int, channel: int | str = 0,
                   block_seconds: float = 10.0) -> Iterator[np.ndarray]:
    """Mono float32 blocks of a recording at ``sample_rate`` (resampled as a stream when needed)."""
    import soxr

    try:
        f = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise MonitorError(f"{path}: cannot be read as audio ({err}); give a .wav or .flac recording") from err
    with f:
        rs = None if f.samplerate == sample_rate else soxr.ResampleStream(f.samplerate, sample_rate, 1,
                                                                          dtype="float32")
        block = max(1, int(block_seconds * f.samplerate))
        while True:
            x = f.read(block, dtype="float32", always_2d=True)
            last = len(x) < block
            y = _mono(x, channel, path) if len(x) else np.zeros(0, np.float32)
            if rs is not None:
                y = rs.resample_chunk(np.ascontiguousarray(y, dtype=np.float32), last=last)
            if len(y):
                if not np.isfinite(y).all():
                    raise MonitorError(f"{path}: holds NaN or infinite samples; repair the recording")
                yield np.asarray(y, dtype=np.float32)
            if last:
                return


def sliding_windows(blocks: Iterator[np.ndarray], window: int, hop: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start_sample, window)`` at starts ``0, hop, 2 hop, ...``, plus one window ending at the end.

    A recording shorter than one window gives one zero-padded window at 0. Only ``window + block``
    samples are held at a time (one window per batch of :func:`rcmae.deploy.stream.window_batches`).
    """
    from rcmae.deploy.stream import window_batches

    for (start,), stretch, offset in window_batches(blocks, window, hop, 1):
        yield start, stretch[start - offset : start - offset + window]


def read_segment(path: str | os.PathLike, start_s: float, end_s: float,
                 channel: int | str = 0) -> tuple[np.ndarray, int]:
    """``(samples, sample_rate)`` of ``[start_s, end_s]`` of a recording at its own rate (for listening)."""
    info = sf.info(str(path))
    a = max(0, int(start_s * info.samplerate))
    b = min(info.frames, int(end_s * info.samplerate))
    x, sr = sf.read(str(path), start=a, stop=max(a, b), dtype="float32", always_2d=True)
    return _mono(x, channel, path), sr


# ------------------------------------------------------------------------------------------ events
def find_events(centers: Sequence[float], scores: Sequence[float], threshold: float, hop: float,
                min_duration: float = 0.0) -> pd.DataFrame:
    """Events: maximal runs of consecutive points with ``score > threshold`` lasting ``>= min_duration`` s
    (``kind`` ``anomaly``), and runs of windows whose score is not a finite number (``kind`` ``invalid``:
    overflowing or broken audio, never counted as normal; reported whatever their length).

    Returns:
        A frame with ``event, start_s, end_s, duration_s, peak_s, peak_score, kind`` (one row per event, in time
        order; ``peak_score`` is empty for an invalid stretch).
    """
    centers = np.asarray(centers, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    invalid = ~np.isfinite(scores)
    rows = []
    for kind, mask, shortest in (("anomaly", np.where(invalid, False, scores > threshold), min_duration),
                                 ("invalid", invalid, 0.0)):
        n = 0
        while n < len(scores):
            if not mask[n]:
                n += 1
                continue
            m = n
            while m + 1 < len(scores) and mask[m + 1]:
                m += 1
            start, end = centers[n] - hop / 2, centers[m] + hop / 2
            if end - start >= shortest:
                peak = n + (int(np.argmax(scores[n : m + 1])) if kind == "anomaly" else 0)
                rows.append({"start_s": max(0.0, start), "end_s": end, "duration_s": end - max(0.0, start),
                             "peak_s": centers[peak], "peak_score": scores[peak] if kind == "anomaly" else None,
                             "kind": kind})
            n = m + 1
    rows.sort(key=lambda r: r["start_s"])
    return pd.DataFrame([{"event": k + 1, **r} for k, r in enumerate(rows)], columns=EVENT_COLUMNS)


@dataclass
class MonitorResult:
    """One monitored recording: its score series, events and the files written."""

    path: Path
    machine_type: str
    machine_id: str
    scorer: str
    threshold: float
    hop: float
    series: pd.DataFrame
    events: pd.DataFrame
    duration: float
    files: dict[str, Path] = field(default_factory=dict)


def monitor_recording(scorer: WindowScorer, path: str | os.PathLike, machine_type: str | None = None,
                      machine_id: str | None = None, hop: float = 1.0, min_duration: float = 1.0,
                      threshold: float | None = None, batch_size: int = 16, progress: bool = True,
                      stream: bool = True) -> MonitorResult:
    """Score one recording window by window and find its events (nothing is written; see :func:`monitor`).

    ``stream`` (when the scorer offers its log-mel front-end, runs and graph bundles, and windows overlap): compute
    the log-mel frames shared by overlapping windows once (:mod:`rcmae.deploy.stream`, at most
    :data:`STREAM_BATCH` windows and about :data:`STREAM_SECONDS` of audio at a time);
    the scores equal the window-by-window ones to float32 rounding of the log-mel. Otherwise each window's
    waveform is scored on its own (``batch_size`` at a time).
    """
    path = Path(path)
    if hop <= 0:
        raise MonitorError(f"--hop {hop}: must be > 0 seconds")
    if min_duration < 0:
        raise MonitorError(f"--min-duration {min_duration}: must be >= 0 seconds")
    mtype, mid = resolve_unit(scorer, path, machine_type, machine_id)
    thr = scorer.threshold(mtype, mid) if threshold is None else float(threshold)
    if thr is None:
        raise MonitorError(f"{scorer.source}: no {scorer.name} threshold fitted for {mtype}/{mid}; give a threshold "
                           "(--threshold) or pick another scorer")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise MonitorError(f"{path}: cannot be read as audio ({err}); give a .wav or .flac recording") from err
    duration = info.frames / info.samplerate
    if info.frames == 0:
        raise MonitorError(f"{path}: holds no samples; give a non-empty recording")
    sr, window = scorer.sample_rate, scorer.clip_samples
    hop_samples = max(1, int(round(hop * sr)))
    starts, scores = [], []
    pending: list[np.ndarray] = []
    pending_starts: list[int] = []

    def flush() -> None:
        if pending:
            s = scorer.score_waveforms(np.stack(pending), [mtype] * len(pending), [mid] * len(pending))
            scores.extend(float(v) for v in s)
            starts.extend(pending_starts)
            pending.clear()
            pending_starts.clear()

    bar = tqdm(total=round(duration, 1), unit="s", desc=f"monitor {path.name}", disable=not progress)
    done = 0.0

    def advance(start: int) -> None:
        nonlocal done
        now = min(duration, (start + window) / sr)
        bar.update(round(now - done, 1))
        done += round(now - done, 1)

    blocks = stream_samples(path, sr, scorer.channel)
    if stream and scorer.logmel is not None and hop_samples < window:  # windows that overlap share frames
        from rcmae.deploy.stream import window_batches, window_logmels

        # At most STREAM_BATCH windows and about STREAM_SECONDS of audio per batch (memory stays bounded at long hops).
        batch = max(1, min(STREAM_BATCH, (int(STREAM_SECONDS * sr) - window) // hop_samples + 1))
        for part, stretch, offset in window_batches(blocks, window, hop_samples, batch):
            db = window_logmels(scorer.logmel, stretch, [s - offset for s in part], window)
            scores.extend(float(v) for v in scorer.score_logmels(db, [mtype] * len(part), [mid] * len(part)))
            starts.extend(part)
            advance(part[-1])
    else:
        for start, w in sliding_windows(blocks, window, hop_samples):
            pending.append(np.array(w, dtype=np.float32))
            pending_starts.append(start)
            if len(pending) >= batch_size:
                flush()
            advance(start)
        flush()
    bar.close()
    starts_s = np.asarray(starts, dtype=np.float64) / sr
    series = pd.DataFrame({"start_s": starts_s, "end_s": starts_s + window / sr,
                           "center_s": starts_s + window / (2 * sr), "score": scores,
                           "threshold": thr, "above": np.asarray(scores) > thr}, columns=SERIES_COLUMNS)
    events = find_events(series["center_s"], series["score"], thr, hop, min_duration)
    return MonitorResult(path=path, machine_type=mtype, machine_id=mid, scorer=scorer.name, threshold=thr, hop=hop,
                         series=series, events=events, duration=duration)


def write_outputs(result: MonitorResult, out: str | os.PathLike, plot: str = "html") -> dict[str, Path]:
    """``<stem>.scores.csv``, ``<stem>.events.csv`` and the plot (``<stem>.html`` or ``<stem>.png``) in ``out``."""
    from rcmae.views import monitor_figure

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = result.path.stem
    files = {"scores": out / f"{stem}.scores.csv", "events": out / f"{stem}.events.csv"}
    atomic_write_text(files["scores"], result.series.to_csv(index=False))
    atomic_write_text(files["events"], result.events.to_csv(index=False))
    fig = monitor_figure(result.series, result.events, result.threshold,
                         title=f"{result.path.name}: {result.scorer} score, {result.machine_type}/{result.machine_id}")
    if plot == "png":
        files["plot"] = out / f"{stem}.png"
        try:
            fig.write_image(str(files["plot"]))
        except (ValueError, ImportError, RuntimeError) as err:
            raise MonitorError(f"--plot png needs plotly's image export (kaleido): {err}; use --plot html") from err
    elif plot == "html":
        files["plot"] = out / f"{stem}.html"
        atomic_write_text(files["plot"], fig.to_html(include_plotlyjs="cdn", full_html=True))
    elif plot != "none":
        raise MonitorError(f"--plot {plot!r}: choose html, png or none")
    result.files = files
    return files


def recordings(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The audio files of ``paths`` (folders expanded recursively to their .wav/.flac files, sorted)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES)
        elif p.exists():
            files.append(p)
        else:
            raise MonitorError(f"{p}: not found; give a recording or a folder of recordings")
    if not files:
        raise MonitorError(f"{', '.join(map(str, paths))}: no .wav or .flac recordings found")
    return files


def monitor(paths: Sequence[str | os.PathLike], out: str | os.PathLike, bundle: str | os.PathLike | None = None,
            run: str | os.PathLike | None = None, scorer: str | None = None, machine_type: str | None = None,
            machine_id: str | None = None, hop: float = 1.0, min_duration: float = 1.0,
            threshold: float | None = None, plot: str = "html", progress: bool = True, trust: bool = False,
            stream: bool = True) -> tuple[list[MonitorResult], list[tuple[str, str]]]:
    """Monitor every recording of ``paths`` and write its CSVs and plot to ``out`` (``stream``: as
    :func:`monitor_recording`).

    Returns:
        ``(results, skipped)``: a bad recording is skipped with its one-line reason, never fatal.
    """
    ws = open_scorer(bundle=bundle, run=run, scorer=scorer, trust=trust)
    results, skipped = [], []
    for path in recordings(paths):
        try:
            res = monitor_recording(ws, path, machine_type, machine_id, hop=hop, min_duration=min_duration,
                                    threshold=threshold, progress=progress, stream=stream)
        except MonitorError as err:
            skipped.append((str(path), str(err)))
            continue
        write_outputs(res, out, plot=plot)
        results.append(res)
    return results, skipped
