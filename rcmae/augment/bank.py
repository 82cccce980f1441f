"""Augmentation banks: augmented copies of a data set's training clips, with a manifest.

A bank folder holds::

    bank.json                       the settings it was built with
    audio/<type>/<stem>__aug<k>.wav one file per (source clip, k)
    manifest.csv                    one row per augmented clip (``manifest.<i>-of-<n>.csv`` per shard)

Every (source clip, k) has a seed derived from (base seed, the clip's path relative to the data
root, k), and the clip's prompt, SNR and number of steps are drawn from that seed alone, so shards,
re-runs and other machines agree on every output. A wav is written to a temp file and moved into
place; its manifest row is then appended and fsync'ed. A re-run skips a clip whose file and row both
exist, re-creates a missing file, and adds the row of a file that was written just before an
interruption: nothing finished is written twice. Pretraining reads (clip, random augmentation)
pairs through ``BankPairs``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from tqdm.auto import tqdm

from rcmae.files import atomic_write_text

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["source", "output", "prompt", "backend", "model_id", "revision", "seed", "steps", "t0",
                    "guidance", "snr_db", "sha256"]
BACKENDS = ("procedural", "audioldm")
DEFAULT_AUDIOLDM_MODEL = "cvssp/audioldm-s-full-v2"
SAMPLE_RATE = 16000
PEAK = 0.999  # mixtures louder than this are scaled down as a whole (SNR unchanged) instead of clipped

# The AudioLDM defaults are the paper's Table 2 ("AudioLDM hyperparameters"): DDIM steps "Random (10, 50)"
# (drawn per clip, both ends included), duration "10 s" (the DCASE clips' own length: each clip is augmented
# whole), seed "Random for each sample" (a recorded per-clip seed), text "add (noises) exist in (factory)"
# (the Table 1 prompts), guidance scale 2.5. The paper gives no value for t0 (Eq. 1's start fraction):
# 0.5 is rcmae's choice (docs/model.md, decision table).
PAPER_STEPS: tuple[int, int] = (10, 50)
PAPER_GUIDANCE = 2.5
PAPER_DURATION_S = 10.0
DEFAULT_T0 = 0.5
MAX_SAMPLES = int(PAPER_DURATION_S * SAMPLE_RATE)  # the longest input a bank augments (Table 2's DURATION at 16 kHz)


class BankError(ValueError):
    """A bank that cannot be built or read as asked; the message names the field or file and the fix."""


@dataclass(frozen=True)
class _Job:
    source: str  # absolute path, as rcmae.data.index_dataset gives it
    rel: str  # <type>/<split>/<file>: the seed depends on this, not on where the data lives
    k: int
    output: str  # relative to the bank, posix


def clip_seed(seed: int, rel: str, k: int) -> int:
    """The per-clip seed: a 63-bit hash of (base seed, relative source path, augmentation index)."""
    digest = hashlib.sha256(f"{int(seed)}|{rel}|{int(k)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def copy_index(path: str | os.PathLike) -> int:
    """The augmentation index k of a bank wav (``<stem>__aug<k>.wav``); -1 for another name."""
    stem = Path(path).stem
    head, sep, k = stem.rpartition("__aug")
    return int(k) if sep and k.isdigit() else -1


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest_name(shard: tuple[int, int]) -> str:
    """``manifest.csv`` for an unsharded run, ``manifest.<i>-of-<n>.csv`` for shard i of n."""
    i, n = shard
    return "manifest.csv" if n == 1 else f"manifest.{i}-of-{n}.csv"


# ---------------------------------------------------------------- prompts
def load_prompt_source(prompts: str | os.PathLike | None) -> tuple[list[str], list[str] | None, object | None]:
    """The prompts a bank draws from: ``(texts, library ids or None, PromptLibrary or None)``.

    ``None`` gives the paper's six Table 1 prompts (word for word). A YAML prompt library (``prompts: [...]``),
    a YAML list of strings, or a text file with one prompt per line (``#`` comments) are accepted.
    """
    from rcmae.augment.prompts import PAPER_PROMPTS, PromptLibrary

    if prompts is None:
        return list(PAPER_PROMPTS), None, None
    path = Path(prompts)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prompt file not found; create a library with "
                                f"'rcmae prompts --library {path} list', or omit --prompts for the paper's six")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise BankError(f"{path}: not valid YAML; fix it or pass another --prompts file") from err
        if isinstance(data, dict) and "prompts" in data:
            library = PromptLibrary(path)
            items = library.list()
            texts, ids = [p["text"] for p in items], [p["id"] for p in items]
        elif isinstance(data, list) and all(isinstance(t, str) for t in data):
            texts, ids, library = [t.strip() for t in data], None, None
        else:
            raise BankError(f"{path}: expected a prompt library ('prompts: [...]') or a list of strings")
    else:
        lines = path.read_text(encoding="utf-8").splitlines()
        texts, ids, library = [t.strip() for t in lines if t.strip() and not t.lstrip().startswith("#")], None, None
    texts_ok = [t for t in texts if t]
    if not texts_ok or len(texts_ok) != len(texts):
        raise BankError(f"{path}: needs at least one prompt and no empty ones; add prompts to it")
    return texts, ids, library


# ---------------------------------------------------------------- planning
def _plan(data: Path, per_clip: int, limit: int | None) -> tuple[str, list[_Job]]:
    """Every (training clip, k) of the data set, in a fixed order, with its output name."""
    from rcmae.data.checks import drop_train_anomalies
    from rcmae.data.index import index_dataset, split_index

    index = drop_train_anomalies(index_dataset(data, strict=False), data)  # normal clips only, said
    train = split_index(index, "train")
    if train.empty:
        raise BankError(f"{data}: no training clips found (a bank augments the train split); "
                        f"point --data at a folder with <type>/train/*.wav")
    root = Path(index.attrs["root"])
    train = train.sort_values("path", kind="stable")
    if limit is not None:
        train = train.head(limit)
    names = [f"{t}/{Path(p).stem}" for t, p in zip(train["machine_type"], train["path"], strict=True)]
    counts = pd.Series(names).value_counts()
    jobs = []
    for path, name in zip(train["path"], names, strict=True):
        # The seed key is <type folder>/<split>/<file>: the same whether --data names the data set or its
        # dev_data folder, and on any machine the data is copied to.
        key = "/".join(Path(path).parts[-3:])
        if counts[name] > 1:
            # Same stem in two folders of one machine type (e.g. `rcmae reproduce`'s view of every clip, where
            # dev train and dev test both hold normal_id_00_00000000.wav): keep names and seeds apart.
            full = Path(path).relative_to(root).as_posix()
            name = f"{name}-{hashlib.sha256(full.encode()).hexdigest()[:8]}"
            key = full
        for k in range(per_clip):
            jobs.append(_Job(source=str(path), rel=key, k=k, output=f"audio/{name}__aug{k}.wav"))
    return str(root), jobs


def _draw(job: _Job, seed: int, n_prompts: int, backend: str, snr: tuple[float, float],
          steps: tuple[int, int]) -> dict:
    """The clip's own random choices, from its seed alone."""
    s = clip_seed(seed, job.rel, job.k)
    rng = np.random.default_rng(s)
    draw = {"seed": s, "prompt_index": int(rng.integers(n_prompts))}
    if backend == "procedural":
        draw["snr_db"] = round(float(rng.uniform(snr[0], snr[1])), 4)
    else:
        draw["steps"] = int(rng.integers(steps[0], steps[1] + 1))
    return draw


# ---------------------------------------------------------------- manifest
def _read_rows(path: Path) -> tuple[list[dict], bool]:
    """Rows of one manifest file, dropping a truncated or malformed line; also says whether any was dropped."""
    rows, bad = [], False
    with open(path, newline="", encoding="utf-8") as fh:
        text = fh.read()
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines, bad = lines[:-1], True  # the append of the last row was cut off
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return [], bad
    if header != MANIFEST_COLUMNS:
        raise BankError(f"{path}: not a bank manifest (columns {header[:4]}...); move it away or use another --out")
    for fields in reader:
        if len(fields) != len(MANIFEST_COLUMNS):
            bad = True
            continue
        rows.append(dict(zip(MANIFEST_COLUMNS, fields, strict=True)))
    return rows, bad


def _manifests(bank: Path) -> list[Path]:
    return sorted(p for p in bank.glob("manifest*.csv") if p.name == "manifest.csv" or "-of-" in p.name)


def read_manifest(bank: str | os.PathLike) -> pd.DataFrame:
    """All manifest rows of a bank (every shard's file merged), one per output, sorted by output.

    Columns: ``source, output, prompt, backend, model_id, revision, seed, steps, t0, guidance, snr_db, sha256``;
    ``output`` is relative to the bank; ``steps``/``t0``/``guidance`` are empty (NA) for the procedural
    backend and ``snr_db`` for AudioLDM.
    """
    bank = Path(bank)
    files = _manifests(bank)
    if not files:
        raise FileNotFoundError(f"{bank}: no manifest.csv; not an augmentation bank (build one with 'rcmae augment')")
    rows = [row for f in files for row in _read_rows(f)[0]]
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    # A re-created file appends a fresh row: the last row of an output is the current one.
    df = df.drop_duplicates("output", keep="last").sort_values("output", kind="stable").reset_index(drop=True)
    df["seed"] = df["seed"].astype("int64")
    df["steps"] = pd.to_numeric(df["steps"].replace("", None), errors="coerce").astype("Int64")
    for col in ("t0", "guidance", "snr_db"):
        df[col] = pd.to_numeric(df[col].replace("", None), errors="coerce").astype("float64")
    return df


def _rewrite_rows(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    writer.writerows([row[c] for c in MANIFEST_COLUMNS] for row in rows)
    atomic_write_text(path, buffer.getvalue())


def _append_row(path: Path, row: dict) -> None:
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        if new:
            writer.writerow(MANIFEST_COLUMNS)
        writer.writerow([row[c] for c in MANIFEST_COLUMNS])
        fh.flush()
        os.fsync(fh.fileno())


# ---------------------------------------------------------------- settings
_CHECKED = ("backend", "model", "prompts", "seed", "snr", "steps", "t0", "guidance")


def _check_settings(out: Path, settings: dict) -> dict:
    """Check that an existing bank was built with the same settings; returns the settings to record."""
    path = out / "bank.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise BankError(f"{path}: not valid JSON; delete it to rebuild the bank's settings") from err
        for key in _CHECKED:
            if key in old and old[key] != settings[key]:
                was, now = (f"{len(old[key])} other prompts", f"{len(settings[key])}") if key == "prompts" else \
                    (repr(old[key]), repr(settings[key]))
                raise BankError(f"{out}: this bank was built with {key}={was}, not {now}; "
                                f"use the same settings to resume, or a new --out")
        settings = {**settings, "per_clip": max(int(old.get("per_clip", 0)), settings["per_clip"])}
    return settings


# ---------------------------------------------------------------- backends
def _make_augment(backend: str, model: str | None, device: str | None, allow_download: bool):
    """A function (wave, draw, prompt) -> augmented wave, and the (model_id, revision) it reports."""
    if backend == "procedural":
        from rcmae import __version__
        from rcmae.augment.procedural import ProceduralAugmenter

        if model is not None:
            raise BankError("--model applies to the audioldm backend only; drop it for --backend procedural")
        aug = ProceduralAugmenter(sample_rate=SAMPLE_RATE)

        def run(wave: np.ndarray, draw: dict, prompt: str, settings: dict) -> np.ndarray:
            # A second stream from the clip seed: the draws above must not shift the noise.
            return aug(wave, prompt, draw["snr_db"], generator=np.random.default_rng([draw["seed"], 1]))

        return run, "procedural", f"rcmae-{__version__}"

    import torch

    from rcmae.augment.audioldm import AudioLDMAugmenter

    aug = AudioLDMAugmenter.from_pretrained(model or DEFAULT_AUDIOLDM_MODEL, device=device,
                                            allow_download=allow_download)

    def run(wave: np.ndarray, draw: dict, prompt: str, settings: dict) -> np.ndarray:
        # A CPU generator gives the same draws whatever device the pipeline runs on.
        gen = torch.Generator("cpu").manual_seed(draw["seed"])
        return aug(wave, prompt, num_inference_steps=draw["steps"], guidance_scale=settings["guidance"],
                   t0=settings["t0"], generator=gen)

    return run, str(aug.model_id), str(aug.revision)


# ---------------------------------------------------------------- building
def build_bank(
    data: str | os.PathLike,
    out: str | os.PathLike,
    backend: str = "procedural",
    model: str | None = None,
    prompts: str | os.PathLike | None = None,
    per_clip: int = 1,
    t0: float = DEFAULT_T0,
    steps: tuple[int, int] = PAPER_STEPS,
    guidance: float = PAPER_GUIDANCE,
    snr: tuple[float, float] = (0.0, 10.0),
    seed: int = 0,
    shard: tuple[int, int] = (0, 1),
    device: str | None = None,
    allow_download: bool = False,
    limit: int | None = None,
    progress: bool = True,
) -> str:
    """Write (or resume) an augmentation bank of the training clips of ``data``; returns a summary.

    Args:
        data: a data folder (DCASE layouts; its train split is augmented).
        out: the bank folder; an existing bank is resumed (its settings must match).
        backend: ``"procedural"`` (weight-free, CPU) or ``"audioldm"`` (the paper's diffusion method).
        model: AudioLDM folder or hub id (default ``cvssp/audioldm-s-full-v2``).
        prompts: prompt library / list file; default the paper's six prompts. Each clip draws one.
        per_clip: augmentations per source clip (k = 0..per_clip-1).
        t0, steps, guidance: AudioLDM start fraction, S range (MIN, MAX) drawn per clip, CFG weight.
        snr: procedural mix SNR range in dB (MIN, MAX), drawn per clip.
        seed: base seed; each (clip, k) gets its own recorded seed derived from it.
        shard: ``(i, n)``: do every n-th job starting at i (0-based) of the fixed job list.
        device: AudioLDM device (default CUDA if available).
        allow_download: let AudioLDM fetch weights from the hub.
        limit: only the first ``limit`` source clips (sorted by path).
        progress: show a tqdm bar (clips, rate, ETA).

    Returns:
        A multi-line summary: counts written / already done / skipped, time, and each bad clip with its reason.
    """
    from rcmae.data.audio import load_audio, write_wav

    if backend not in BACKENDS:
        raise BankError(f"backend={backend!r}: use one of {', '.join(BACKENDS)}")
    if not isinstance(per_clip, int) or per_clip < 1:
        raise BankError(f"per_clip={per_clip!r}: need at least 1 augmentation per clip")
    if limit is not None and limit < 1:
        raise BankError(f"limit={limit!r}: need at least 1 clip (or no limit)")
    i_shard, n_shard = shard
    if n_shard < 1 or not 0 <= i_shard < n_shard:
        raise BankError(f"shard={shard!r}: need 0 <= I < N")
    lo, hi = snr
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise BankError(f"snr={snr!r}: need finite MIN <= MAX in dB")
    s_lo, s_hi = steps
    if backend == "audioldm" and not (1 <= s_lo <= s_hi):
        raise BankError(f"steps={steps!r}: need 1 <= MIN <= MAX")
    if backend == "audioldm" and not 0.0 <= t0 <= 1.0:
        raise BankError(f"t0={t0!r}: must be in 0..1 (the fraction of the S steps that are re-noised)")

    data, out = Path(data), Path(out)
    texts, ids, library = load_prompt_source(prompts)
    root, jobs = _plan(data, per_clip, limit)
    mine = jobs[i_shard::n_shard]

    is_proc = backend == "procedural"
    settings = {
        "backend": backend,
        "model": None if is_proc else (model or DEFAULT_AUDIOLDM_MODEL),
        "prompts": texts,
        "prompt_ids": ids,
        "prompt_source": str(prompts) if prompts else "paper (built-in)",
        "per_clip": per_clip,
        "seed": int(seed),
        "snr": [float(lo), float(hi)] if is_proc else None,
        "steps": None if is_proc else [int(s_lo), int(s_hi)],
        "t0": None if is_proc else float(t0),
        "guidance": None if is_proc else float(guidance),
        "sample_rate": SAMPLE_RATE,
        "data": root,
    }
    # Refuse a mismatched resume before loading a model, which can take minutes.
    settings = _check_settings(out, settings)
    run, model_id, revision = _make_augment(backend, model, device, allow_download)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "bank.json", json.dumps({**settings, "model_id": model_id, "revision": revision},
                                                     indent=2) + "\n")

    manifest = out / manifest_name(shard)
    done_rows: dict[str, dict] = {}
    for f in _manifests(out):
        rows, bad = _read_rows(f)
        if bad and f == manifest:
            # Drop the half-written row of an interrupted append before appending after it.
            _rewrite_rows(manifest, rows)
            logger.warning("%s: dropped a truncated or malformed row", manifest)
        for row in rows:
            done_rows[row["output"]] = row

    written = already = recovered = 0
    skipped: list[tuple[str, str]] = []
    used_prompts: set[int] = set()
    start = time.perf_counter()
    bar = tqdm(mine, unit="clip", desc=f"augment ({backend})", disable=not progress, dynamic_ncols=True)
    for job in bar:
        target = out / job.output
        draw = _draw(job, seed, len(texts), backend, (lo, hi), (s_lo, s_hi))
        prompt = texts[draw["prompt_index"]]
        used_prompts.add(draw["prompt_index"])
        row_exists = job.output in done_rows
        if row_exists and target.is_file():
            if sha256_file(target) == done_rows[job.output]["sha256"]:
                already += 1
                continue
            # Torn or changed since it was written: make it again (the draw is seeded, so it comes out the same).
            logger.warning("%s: does not match its manifest sha256; writing it again", target)
            target.unlink()
        row = {
            "source": job.source, "output": job.output, "prompt": prompt, "backend": backend,
            "model_id": model_id, "revision": revision, "seed": draw["seed"],
            "steps": draw.get("steps", ""), "t0": "" if is_proc else t0, "guidance": "" if is_proc else guidance,
            "snr_db": draw.get("snr_db", ""), "sha256": "",
        }
        if target.is_file():
            # Written (atomically, so complete) just before an interruption cut off its manifest row.
            row["sha256"] = sha256_file(target)
            _append_row(manifest, row)
            recovered += 1
            continue
        try:
            # Table 2's DURATION "10 s": at most that much of each clip is augmented (ToyCar's 11 s clips are cut,
            # as training cuts them to data.duration); shorter clips are augmented whole, never padded.
            wave = load_audio(job.source, sample_rate=SAMPLE_RATE, duration=None)[:MAX_SAMPLES]
            y = np.asarray(run(wave, draw, prompt, settings), dtype=np.float32)
            if y.shape != wave.shape or not np.all(np.isfinite(y)):
                raise ValueError(f"{backend} returned shape {y.shape} (finite={bool(np.all(np.isfinite(y)))}) "
                                 f"for an input of shape {wave.shape}")
        except ValueError as err:  # AudioError and the backends' input errors: report, go on
            skipped.append((job.source, str(err).splitlines()[0] if str(err) else type(err).__name__))
            continue
        peak = float(np.max(np.abs(y)))
        if peak > PEAK:
            y = y * (PEAK / peak)
        write_wav(target, y, SAMPLE_RATE)
        row["sha256"] = sha256_file(target)
        if not row_exists or done_rows[job.output]["sha256"] != row["sha256"]:
            _append_row(manifest, row)
        written += 1
    bar.close()
    elapsed = time.perf_counter() - start

    if library is not None and ids is not None and used_prompts:
        library.mark_used([ids[i] for i in sorted(used_prompts)], out.name)

    lines = [
        f"bank {out} ({backend}, shard {i_shard}/{n_shard}): {written} written, {already} already done, "
        f"{recovered} recovered, {len(skipped)} skipped of {len(mine)} in {elapsed:.1f} s"
        + (f" ({elapsed / written:.3f} s per clip)" if written else "")
    ]
    if skipped:
        lines.append(f"skipped {len(skipped)} bad clip(s):")
        lines += [f"  {reason if reason.startswith(path) else f'{path}: {reason}'}" for path, reason in skipped]
    return "\n".join(lines)


# ---------------------------------------------------------------- reading pairs
class BankPairs:
    """Source clip -> its augmented wavs in a bank (only files that exist), for pretraining pairs.

    Sources are matched by absolute path (as ``rcmae.data.index_dataset`` writes them).

    Args:
        bank: a bank folder written by ``build_bank``.
    """

    def __init__(self, bank: str | os.PathLike) -> None:
        self.bank = Path(bank)
        table = read_manifest(self.bank)
        pairs: dict[str, list[Path]] = {}
        for source, output in zip(table["source"], table["output"], strict=True):
            path = self.bank / output
            if path.is_file():
                pairs.setdefault(os.path.abspath(source), []).append(path)
        # Copies in k order (__aug2 before __aug10), so copy indices recorded by a run mean the same files.
        self._pairs = {src: sorted(paths, key=copy_index) for src, paths in pairs.items()}

    @property
    def sources(self) -> list[str]:
        return sorted(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def __contains__(self, source: object) -> bool:
        return isinstance(source, (str, os.PathLike)) and os.path.abspath(source) in self._pairs

    def __getitem__(self, source: str | os.PathLike) -> list[Path]:
        key = os.path.abspath(source)
        if key not in self._pairs:
            raise KeyError(f"{source}: no augmentation in bank {self.bank}; build the bank from this data "
                           f"('rcmae augment --data ... --out {self.bank}')")
        return list(self._pairs[key])

    def get(self, source: str | os.PathLike, default: list[Path] | None = None) -> list[Path]:
        return self[source] if source in self else (default if default is not None else [])

    def draw(self, source: str | os.PathLike, rng: np.random.Generator) -> Path:
        """One of the source's augmentations, uniformly at random."""
        options = self[source]
        return options[int(rng.integers(len(options)))]
