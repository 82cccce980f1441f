"""Engine-side helpers of the Streamlit workbench: what the pages list, launch, read and compute.

Nothing here imports Streamlit: every function is plain Python over the workspace folders, the
job registry and the engine modules, so the pages stay thin (read inputs, call one function,
draw) and everything they show can be tested without a browser.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rcmae import jobs
from rcmae.workspace import Workspace

if TYPE_CHECKING:  # diffusers is heavy: imported only when AudioLDM is actually used
    from rcmae.augment.audioldm import AudioLDMAugmenter

JOB_KINDS = ("pretrain", "finetune", "evaluate", "augment", "benchmark", "reproduce", "demo-data")
PRESETS_DIR = Path(__file__).resolve().parents[1] / "configs"
UPLOAD_LIMIT_MB = 20.0
DEFAULT_AUDIOLDM = "cvssp/audioldm-s-full-v2"


# ---------------------------------------------------------------- settings from the environment
def demo_counts() -> tuple[int, int]:
    """Clips per machine ID for the demo data button: ``$RCMAE_DEMO_TRAIN_PER_ID`` / ``$RCMAE_DEMO_TEST_PER_ID``.

    The defaults (50 train, 20 test) are the demo set of the README; tests and quick looks set smaller counts.
    """
    return _env_int("RCMAE_DEMO_TRAIN_PER_ID", 50), _env_int("RCMAE_DEMO_TEST_PER_ID", 20)


def quick_demo_settings() -> dict:
    """Sizes of the "quick demo run": ``$RCMAE_QUICK_TRAIN_PER_ID``, ``_TEST_PER_ID``, ``_PRETRAIN_EPOCHS``,
    ``_FINETUNE_EPOCHS`` (defaults 20, 10, 8, 4: a few minutes on two CPU cores)."""
    return {"train_per_id": _env_int("RCMAE_QUICK_TRAIN_PER_ID", 20),
            "test_per_id": _env_int("RCMAE_QUICK_TEST_PER_ID", 10),
            "pretrain_epochs": _env_int("RCMAE_QUICK_PRETRAIN_EPOCHS", 8),
            "finetune_epochs": _env_int("RCMAE_QUICK_FINETUNE_EPOCHS", 4)}


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    if not text:
        return default
    try:
        value = int(text)
    except ValueError as err:
        raise ValueError(f"${name}={text!r}: not an integer; set a positive whole number or unset it") from err
    if value < 1:
        raise ValueError(f"${name}={value}: must be at least 1")
    return value


def presets() -> list[str]:
    """Preset names shipped in ``configs/`` (tiny first)."""
    names = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
    return sorted(names, key=lambda n: (n != "tiny", n))


def parse_overrides(text: str) -> list[str]:
    """``key=value`` overrides from a text box: one per line or separated by spaces; ``#`` starts a comment."""
    items = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        items.extend(part for part in line.split() if part)
    for item in items:
        if "=" not in item or item.startswith("="):
            raise ValueError(f"overrides: {item!r} is not key=value; write e.g. pretrain.lr=1e-3")
    return items


# ---------------------------------------------------------------- access: login and allowed folders
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# The longest file name most file systems take is 255 bytes; keep room for a "-<n>" suffix and a temp prefix.
MAX_NAME_BYTES = 200


class PathNotAllowed(ValueError):
    """A typed path that leaves the workspace (``../``, an absolute path, a symlink) and no allowed root holds it."""


def login_required(address: str | None) -> bool:
    """Whether the workbench must ask for a login: it listens beyond loopback, or ``$RCMAE_REQUIRE_LOGIN`` is set.

    Args:
        address: Streamlit's ``server.address``; empty means every interface.
    """
    if os.environ.get("RCMAE_REQUIRE_LOGIN", "").strip() not in ("", "0"):
        return True
    addr = (address or "").strip().strip("[]")
    return not (addr in LOOPBACK_HOSTS or addr.startswith("127."))


def login_secret(secrets: Mapping[str, object] | None = None) -> str | None:
    """The workbench password: ``$RCMAE_PASSWORD``, else the file ``$RCMAE_PASSWORD_FILE``, else ``rcmae_password``
    in Streamlit's secrets (``.streamlit/secrets.toml``, never committed). None when none is set."""
    value = os.environ.get("RCMAE_PASSWORD", "")
    if not value and os.environ.get("RCMAE_PASSWORD_FILE"):
        path = Path(os.environ["RCMAE_PASSWORD_FILE"]).expanduser()
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as err:
            raise ValueError(f"$RCMAE_PASSWORD_FILE={path}: cannot read it ({err.strerror}); fix the path") from err
    if not value and secrets is not None:
        value = str(secrets.get("rcmae_password", "") or "")
    return value or None


def check_login(given: str, secret: str) -> bool:
    """Constant-time comparison of a typed password with the secret."""
    return hmac.compare_digest(given.encode("utf-8"), secret.encode("utf-8"))


def allowed_roots(ws: Workspace | None = None) -> list[Path]:
    """Folders typed paths may point into: the workspace the app was started with (and ``ws``), plus the
    operator's ``allowed_roots`` list in that workspace's ``settings.yaml``."""
    import yaml

    home = Workspace.default()
    roots = [home.root]
    if ws is not None and ws.root != home.root:
        roots.append(ws.root)
    if home.settings.is_file():
        try:
            extra = (yaml.safe_load(home.settings.read_text()) or {}).get("allowed_roots") or []
        except (yaml.YAMLError, AttributeError) as err:
            raise ValueError(f"{home.settings}: not valid YAML ({err}); fix allowed_roots") from err
        if isinstance(extra, str) or not isinstance(extra, list):
            raise ValueError(f"{home.settings}: allowed_roots must be a list of folders")
        roots += [Path(str(r)).expanduser().resolve() for r in extra]
    return [r.resolve() for r in roots]


def resolve_path(ws: Workspace, text: str | os.PathLike, under: str | os.PathLike | None = None) -> Path:
    """Resolve a path typed into a page; it must stay inside the workspace or an allowed root.

    Relative paths are taken from ``under`` (default: the workspace). Symlinks and ``..`` are resolved
    before the check, so neither can lead outside.

    Raises:
        PathNotAllowed: one line naming the path, where it leads, and how to allow it.
    """
    raw = str(text).strip()
    if not raw:
        raise PathNotAllowed("path: empty; type a name or a folder inside the workspace")
    base = Path(under) if under is not None else ws.root
    path = (base / Path(raw).expanduser()).resolve()
    roots = allowed_roots(ws)
    if not any(path == r or path.is_relative_to(r) for r in roots):
        home = Workspace.default()
        raise PathNotAllowed(
            f"{raw}: leads to {path}, outside the workspace {ws.root}; use a name inside it, or let the operator "
            f"add the folder to allowed_roots in {home.settings}"
        )
    return path


def guard_workspace(text: str | os.PathLike) -> Workspace:
    """The workspace named in the sidebar box: the start workspace, a folder inside it, or an allowed root."""
    home = Workspace.default()
    return Workspace(resolve_path(home, text, under=home.root.parent))


def page_workspace(text: str | os.PathLike | None) -> Workspace:
    """The workspace a page works in: the sidebar's choice when :func:`guard_workspace` allows it, else the
    start workspace (the sidebar shows why). Created when missing."""
    if not text:
        return Workspace.default().ensure()
    try:
        return guard_workspace(text).ensure()
    except PathNotAllowed:
        return Workspace.default().ensure()


def _short_name(name: str, limit: int = MAX_NAME_BYTES) -> str:
    """``name`` cut to ``limit`` UTF-8 bytes, keeping its extension and a hash of the full name (unique)."""
    if len(name.encode("utf-8")) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > 10:
        stem, ext = name, ""
    tag = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    keep = limit - len(ext.encode()) - len(tag) - 2
    cut = stem.encode("utf-8")[:keep].decode("utf-8", errors="ignore")
    return f"{cut}-{tag}" + (f".{ext}" if ext else "")


# ---------------------------------------------------------------- workspace listings
def list_datasets(ws: Workspace) -> list[Path]:
    """Data folders in ``<workspace>/data`` (each sub-folder is one data set), demo first."""
    if not ws.data.is_dir():
        return []
    folders = [p for p in sorted(ws.data.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    return sorted(folders, key=lambda p: (p.name != "demo", p.name))


def list_runs(ws: Workspace) -> list[Path]:
    """Run folders (holding ``run.json``) in ``<workspace>/runs``, newest first."""
    if not ws.runs.is_dir():
        return []
    runs = [p for p in ws.runs.iterdir() if (p / "run.json").is_file()]
    return sorted(runs, key=lambda p: (p / "run.json").stat().st_mtime, reverse=True)


def list_banks(ws: Workspace) -> list[Path]:
    """Augmentation banks (holding ``manifest.csv``) in ``<workspace>/banks``."""
    if not ws.banks.is_dir():
        return []
    return sorted(p for p in ws.banks.iterdir() if (p / "manifest.csv").is_file())


def list_benchmarks(ws: Workspace) -> list[Path]:
    """Benchmark folders (holding ``benchmark.json``) in ``<workspace>/benchmarks``, newest first."""
    if not ws.benchmarks.is_dir():
        return []
    found = [p for p in ws.benchmarks.iterdir() if (p / "benchmark.json").is_file()]
    return sorted(found, key=lambda p: (p / "benchmark.json").stat().st_mtime, reverse=True)


def new_name(parent: Path, stem: str) -> str:
    """``<stem>-<YYYYmmdd-HHMMSS>``, made unique inside ``parent``."""
    base = f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', stem).strip('-') or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, i = base, 1
    while (parent / name).exists():
        i += 1
        name = f"{base}-{i}"
    return name


def read_progress(folder: str | os.PathLike | None) -> dict | None:
    """A run's ``progress.json`` (stage, epoch, epochs, step, steps, loss, state), or None."""
    if not folder:
        return None
    from rcmae.files import read_json

    path = Path(folder) / "progress.json"
    try:
        return read_json(path)
    except (FileNotFoundError, ValueError):
        return None


def progress_fraction(progress: dict | None) -> float:
    """Fraction done of the current stage from ``progress.json`` (steps, else epochs)."""
    if not progress:
        return 0.0
    if progress.get("state") == "done":
        return 1.0
    steps, step = progress.get("steps") or 0, progress.get("step") or 0
    if steps:
        return float(min(1.0, max(0.0, step / steps)))
    epochs, epoch = progress.get("epochs") or 0, progress.get("epoch") or 0
    return float(min(1.0, max(0.0, epoch / epochs))) if epochs else 0.0


# ---------------------------------------------------------------- data page
def data_overview(folder: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame, list[tuple[str, str]]]:
    """``(index, count table, problems)`` of a data folder; files that fit no layout are problems, not errors."""
    from rcmae.data import count_table, index_dataset

    index = index_dataset(folder, strict=False)
    return index, count_table(index), list(index.attrs.get("skipped", []))


def count_matrix(counts: pd.DataFrame) -> pd.DataFrame:
    """A count table as one row per (machine_type, machine_id) and one column per ``"<split> <label>"``.

    Columns run train before test, normal before anomaly before unknown; missing combinations are 0.
    """
    wide = counts.pivot_table(index=["machine_type", "machine_id"], columns=["split", "label"], values="clips",
                              fill_value=0, aggfunc="sum")
    order = {"train": 0, "test": 1, "normal": 0, "anomaly": 1, "unknown": 2}
    wide = wide[sorted(wide.columns, key=lambda c: (order.get(c[0], 9), order.get(c[1], 9)))]
    wide.columns = [f"{split} {label}" for split, label in wide.columns]
    return wide.reset_index().astype({c: int for c in wide.columns})


def check_clips(paths: Sequence[str], progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Problems of each clip (``rcmae.audio.check_clip``): unreadable, silent, wrong rate...; one row per problem."""
    from rcmae.audio import check_clip

    rows = []
    for i, path in enumerate(paths):
        for problem in check_clip(path):
            rows.append({"path": str(path), "problem": problem})
        if progress is not None:
            progress(i + 1, len(paths))
    return pd.DataFrame(rows, columns=["path", "problem"])


@dataclass
class Clip:
    """A loaded clip with its log-mel, for the audio player and the spectrogram figure."""

    wave: np.ndarray
    sample_rate: int
    logmel: np.ndarray
    hop_length: int


def load_clip(path: str | os.PathLike | None = None, wave: np.ndarray | None = None, sample_rate: int = 16000,
              duration: float | None = 10.0) -> Clip:
    """Load a clip (or take a waveform) and compute its log-mel with ``rcmae.features.LogMel``."""
    import torch

    from rcmae.audio import load_audio
    from rcmae.features import LogMel, LogMelConfig

    if wave is None:
        if path is None:
            raise ValueError("load_clip: pass a path or a waveform")
        wave = load_audio(path, sample_rate=sample_rate, duration=duration)
    cfg = LogMelConfig(sample_rate=sample_rate)
    with torch.no_grad():
        logmel = LogMel(cfg)(torch.as_tensor(np.asarray(wave, dtype=np.float32))).numpy()
    return Clip(np.asarray(wave, dtype=np.float32), sample_rate, logmel, cfg.hop_length)


# ---------------------------------------------------------------- audition page
def audition(clip_path: str | os.PathLike, prompt: str, backend: str = "procedural", seed: int = 0,
             snr_db: float = 5.0, t0: float = 0.5, steps: int = 20, guidance: float = 2.5,
             model: str | None = None, augmenter: AudioLDMAugmenter | None = None) -> dict:
    """Augment one clip with one prompt; returns the original and augmented :class:`Clip` and the settings.

    ``backend="audioldm"`` loads local weights only (``model`` folder or hub cache, never a download);
    missing weights raise the backend's one-line ``FileNotFoundError`` so the page can offer procedural.
    ``augmenter`` reuses an already loaded AudioLDM augmenter.
    """
    from rcmae.audio import load_audio

    wave = load_audio(clip_path)
    if backend == "procedural":
        from rcmae.augment.procedural import ProceduralAugmenter

        out = ProceduralAugmenter()(wave, prompt, snr_db=snr_db, seed=seed)
        meta = {"backend": "procedural", "model_id": "", "revision": "", "snr_db": snr_db}
    elif backend == "audioldm":
        import torch

        aug = augmenter if augmenter is not None else load_audioldm(model)
        gen = torch.Generator().manual_seed(seed)
        out = aug(wave, prompt, num_inference_steps=steps, guidance_scale=guidance, t0=t0, generator=gen)
        out = getattr(out, "audio", out)
        meta = {"backend": "audioldm", "model_id": getattr(aug, "model_id", model or ""),
                "revision": getattr(aug, "revision", ""), "steps": steps, "t0": t0, "guidance": guidance}
    else:
        raise ValueError(f"backend: {backend!r} is not known; use 'procedural' or 'audioldm'")
    out = np.asarray(out, dtype=np.float32).reshape(-1)[: wave.size]
    out = np.pad(out, (0, wave.size - out.size))
    # Limit peaks the same way the bank does before writing, so what is heard is what would be kept.
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if peak > 0.999:
        out = out * (0.999 / peak)
    original, augmented = load_clip(wave=wave), load_clip(wave=out)
    return {"original": original, "augmented": augmented, "diff": augmented.logmel - original.logmel,
            "source": str(Path(clip_path).resolve()), "prompt": prompt, "seed": seed, **meta}


def load_audioldm(model: str | None = None, device: str | None = None) -> AudioLDMAugmenter:
    """The AudioLDM augmenter from local weights only (a folder or the Hugging Face cache; no download)."""
    from rcmae.augment.audioldm import AudioLDMAugmenter

    return AudioLDMAugmenter.from_pretrained(model or DEFAULT_AUDIOLDM, device=device, allow_download=False)


def keep_audition(result: dict, bank: str | os.PathLike) -> Path:
    """Add an auditioned clip to a bank: ``audio/<type>/<stem>__aud<seed>_<hash>.wav`` and a manifest row.

    The row has the columns of ``rcmae augment`` (``rcmae.augment.bank.MANIFEST_COLUMNS``), so
    ``read_manifest`` and pretraining with ``--aug <bank>`` treat kept auditions like any bank clip.
    """
    import csv
    import io

    from rcmae.audio import write_wav
    from rcmae.augment.bank import MANIFEST_COLUMNS, sha256_file
    from rcmae.files import atomic_write_text

    bank = Path(bank)
    src = Path(result["source"])
    wave = result["augmented"].wave
    key = f"{result['backend']}|{result['prompt']}"
    tag = f"{zlib.crc32(key.encode()):08x}"
    out = bank / "audio" / src.parent.parent.name / f"{src.stem}__aud{result['seed']}_{tag}.wav"
    write_wav(out, wave, result["augmented"].sample_rate)
    proc = result["backend"] == "procedural"
    row = {"source": str(src), "output": out.relative_to(bank).as_posix(), "prompt": result["prompt"],
           "backend": result["backend"], "model_id": result.get("model_id", ""),
           "revision": result.get("revision", ""), "seed": result["seed"],
           "steps": "" if proc else result.get("steps", ""), "t0": "" if proc else result.get("t0", ""),
           "guidance": "" if proc else result.get("guidance", ""),
           "snr_db": result.get("snr_db", "") if proc else "",
           "sha256": sha256_file(out)}
    manifest = bank / "manifest.csv"
    text = manifest.read_text(encoding="utf-8") if manifest.is_file() else ""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if not text:
        writer.writerow(MANIFEST_COLUMNS)
    writer.writerow([row[c] for c in MANIFEST_COLUMNS])
    atomic_write_text(manifest, text + buffer.getvalue())
    return out


# ---------------------------------------------------------------- jobs page
def job_argv(kind: str, *, data: str | os.PathLike | None = None, run: str | os.PathLike | None = None,
             out: str | os.PathLike | None = None, preset: str = "tiny", overrides: Sequence[str] = (),
             epochs: int | None = None, aug: str = "specaugment", backend: str = "procedural", per_clip: int = 1,
             systems: str = "rcmae,ae,knn", extra: Sequence[str] = ()) -> list[str]:
    """The ``rcmae`` argument list of a Jobs-page launch (paths made absolute: jobs run from any folder).

    ``aug`` (pretrain: ``specaugment`` or a bank folder), ``backend``/``per_clip`` (augment) and ``systems``
    (benchmark) are passed to the subcommand's flags of the same names.
    """

    def a(p: str | os.PathLike) -> str:
        return str(Path(p).resolve())

    def need(value: object, name: str) -> None:
        if not value:
            raise ValueError(f"{kind}: choose a {name} first")

    sets = [f"--set={o}" for o in overrides]
    ep = ["--epochs", str(epochs)] if epochs else []
    if kind == "pretrain":
        need(data, "data folder")
        need(out, "run folder")
        aug_arg = aug if aug == "specaugment" else a(aug)
        argv = ["pretrain", "--data", a(data), "--out", a(out), "--preset", preset, "--aug", aug_arg, *ep, *sets]
    elif kind == "finetune":
        need(run, "run")
        argv = ["finetune", "--run", a(run), *(["--data", a(data)] if data else []), *ep, *sets]
    elif kind == "evaluate":
        need(run, "run")
        argv = ["evaluate", "--run", a(run), *(["--data", a(data)] if data else [])]
    elif kind == "augment":
        need(data, "data folder")
        need(out, "bank folder")
        argv = ["augment", "--data", a(data), "--out", a(out), "--backend", backend, "--per-clip", str(per_clip)]
    elif kind == "benchmark":
        need(data, "data folder")
        need(out, "benchmark folder")
        argv = ["benchmark", "--data", a(data), "--out", a(out), "--systems", systems, "--preset", preset, *sets]
    elif kind == "reproduce":
        # The paper's DCASE 2020 experiments; without a data folder the job fetches the data (needs internet).
        need(out, "reproduction folder")
        argv = ["reproduce", "--out", a(out), *(["--data", a(data)] if data else []), "--preset", preset, *sets]
    elif kind == "demo-data":
        need(out, "output folder")
        train, test = demo_counts()
        argv = ["demo-data", a(out), "--train-per-id", str(train), "--test-per-id", str(test)]
    else:
        raise ValueError(f"kind: {kind!r} is not a job kind; choose one of {', '.join(JOB_KINDS)}")
    return [*argv, *extra]


def launch_and_start(store: jobs.JobStore, argv: Sequence[str], gpus: str = "", name: str | None = None,
                     after: int | None = None, cwd: str | os.PathLike | None = None) -> jobs.Job:
    """Queue a job, start what may start now, and make sure a detached queue runner drains the rest."""
    job = jobs.launch(store, argv, gpus=gpus, name=name, after=after, cwd=cwd or None)
    jobs.start_ready(store)
    jobs.ensure_runner(store)
    return store.get(job.id)


def relaunch(store: jobs.JobStore, job: jobs.Job, resume: bool = False) -> jobs.Job:
    """"Resume" (pretrain/finetune, from the last checkpoint) or "Run again": the same command, GPUs and
    working directory as the original job."""
    argv = jobs.resume_argv(job) if resume else list(job.argv)
    name = f"{job.name} (resume)" if resume else job.name
    return launch_and_start(store, argv, gpus=job.gpus, name=name, cwd=job.cwd or None)


def launch_demo_data(ws: Workspace, store: jobs.JobStore) -> jobs.Job:
    """Queue ``rcmae demo-data <workspace>/data/demo`` with :func:`demo_counts` clips per ID."""
    train, test = demo_counts()
    argv = ["demo-data", str(ws.demo_data), "--train-per-id", str(train), "--test-per-id", str(test), "--if-missing"]
    return launch_and_start(store, argv, name="demo data")


def quick_demo(ws: Workspace, store: jobs.JobStore, gpus: str = "") -> list[jobs.Job]:
    """The "quick demo run": [demo data ->] pretrain -> fine-tune -> evaluate (tiny preset), chained jobs.

    Each job waits for the previous one (``after``); the chain stops at the first failure. It trains on the
    workspace's demo data when that exists, else it first writes a small set to ``<workspace>/data/quick-demo``
    (:func:`quick_demo_settings`). The run goes to ``<workspace>/runs/quick-demo-<time>``.
    """
    from rcmae.demo import is_demo_data

    s = quick_demo_settings()
    run = ws.runs / new_name(ws.runs, "quick-demo")
    chain: list[tuple[list[str], str]] = []
    if is_demo_data(ws.demo_data):
        data = ws.demo_data
    else:
        data = ws.data / "quick-demo"
        chain.append((["demo-data", str(data), "--train-per-id", str(s["train_per_id"]), "--test-per-id",
                       str(s["test_per_id"]), "--if-missing"], "quick demo: data"))
    chain += [
        (["pretrain", "--data", str(data), "--out", str(run), "--preset", "tiny", "--epochs",
          str(s["pretrain_epochs"])], "quick demo: pretrain"),
        (["finetune", "--run", str(run), "--epochs", str(s["finetune_epochs"])], "quick demo: fine-tune"),
        (["evaluate", "--run", str(run)], "quick demo: evaluate"),
    ]
    launched: list[jobs.Job] = []
    for argv, name in chain:
        job = jobs.launch(store, argv, gpus=gpus if argv[0] in ("pretrain", "finetune") else "", name=name,
                          after=launched[-1].id if launched else None)
        launched.append(job)
    jobs.start_ready(store)
    jobs.ensure_runner(store)
    return [store.get(j.id) for j in launched]


# ---------------------------------------------------------------- results page
def eval_results(run: str | os.PathLike) -> dict[str, dict]:
    """``{scorer: results}`` of an evaluated run (``eval/results.<scorer>.json``; ``default`` when only one)."""
    from rcmae.metrics import load_results

    eval_dir = Path(run) / "eval"
    found = {}
    for path in sorted(eval_dir.glob("results.*.json")):
        found[path.name[len("results."):-len(".json")]] = load_results(path)
    if not found and (eval_dir / "results.json").is_file():
        found["default"] = load_results(eval_dir / "results.json")
    return found


def score_table(run: str | os.PathLike, scorer: str) -> pd.DataFrame:
    """Per-clip test scores of one scorer: path, machine_type, machine_id, label, score, threshold, decision.

    Reads ``eval/scores.csv`` (every scorer's columns); falls back to the challenge CSVs of ``eval/<scorer>/``.
    """
    from rcmae.viz import load_score_table

    eval_dir = Path(run) / "eval"
    csv = eval_dir / "scores.csv"
    if csv.is_file():
        try:
            frame = pd.read_csv(csv, dtype={"machine_id": str, "machine_type": str, "path": str, "label": str})
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
            raise ValueError(f"{csv}: empty or torn ({str(err).splitlines()[0]}); re-run evaluate on this run") \
                from err
        if f"score_{scorer}" in frame.columns:
            table = pd.DataFrame({
                "path": frame["path"], "machine_type": frame["machine_type"], "machine_id": frame["machine_id"],
                "label": frame["label"], "score": frame[f"score_{scorer}"],
                "threshold": frame.get(f"threshold_{scorer}"), "decision": frame.get(f"decision_{scorer}")})
            # DCASE 2021+ runs: the clip's domain and attributes, for the domain-split plots.
            for col in ("domain", "attributes"):
                if col in frame.columns:
                    # An all-empty column is read as float (NaN): cast first, then blank the missing values.
                    table[col] = frame[col].astype(object).where(frame[col].notna(), "").astype(str)
            return table
    folder = eval_dir / scorer if (eval_dir / scorer).is_dir() else eval_dir
    return load_score_table(folder).assign(threshold=np.nan, decision=None)


def embedding_files(run: str | os.PathLike) -> dict[str, Path]:
    """``{space: npz}`` of a run's ``embeddings/`` (``pretrain``, ``finetune``)."""
    found = {p.stem: p for p in (Path(run) / "embeddings").glob("*.npz") if not p.name.startswith(".")}
    # Pretrained before fine-tuned, as the paper's Figures 3 and 4.
    return dict(sorted(found.items(), key=lambda kv: ({"pretrain": 0, "finetune": 1}.get(kv[0], 2), kv[0])))


def benchmark_results(folder: str | os.PathLike) -> tuple[list[dict], str]:
    """A benchmark's rows as results-like dicts (per_type / average means) and its Markdown table."""
    from rcmae.files import read_json

    folder = Path(folder)
    bench = read_json(folder / "benchmark.json")
    rows = []
    for r in bench.get("rows", []):
        if r.get("status") == "failed":
            continue
        rows.append({"system": r["row"],
                     "per_type": {t: {m: v[m]["mean"] for m in ("auc", "pauc")} for t, v in r["per_type"].items()},
                     "average": {m: r["average"][m]["mean"] for m in ("auc", "pauc")}})
    table = (folder / "table.md").read_text() if (folder / "table.md").is_file() else ""
    return rows, table


# ---------------------------------------------------------------- score page
def save_uploads(files: Sequence[tuple[str, bytes]], dest: str | os.PathLike,
                 max_mb: float = UPLOAD_LIMIT_MB) -> tuple[list[Path], list[tuple[str, str]]]:
    """Write uploaded ``(name, bytes)`` files into ``dest``; too big or non-wav files are reported, not saved.

    Every upload gets its own file: a name already taken (an earlier upload, or twice in this batch)
    gets ``-2``, ``-3``... before its extension, and names too long for the file system are shortened
    (kept unique by a hash of the full name).

    Returns:
        ``(saved paths, [(name, problem)])``.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    saved, problems = [], []
    for name, data in files:
        safe = _short_name(Path(name.replace("\\", "/")).name.lstrip(".") or "upload.wav")
        if not safe.lower().endswith(".wav"):
            problems.append((name, "not a .wav file; upload 16 kHz WAV clips"))
            continue
        if len(data) > max_mb * 1024 * 1024:
            problems.append((name, f"{len(data) / 2**20:.1f} MB is over the {max_mb:g} MB limit; "
                                   "score big folders with the folder option or `rcmae score`"))
            continue
        stem, ext = safe[:-4], safe[-4:]
        path = _claim_upload(dest, stem, ext, data)
        if isinstance(path, str):
            problems.append((name, path))
        else:
            saved.append(path)
    return saved, problems


def _claim_upload(dest: Path, stem: str, ext: str, data: bytes) -> Path | str:
    """The file an upload goes to (written), or a problem. The same bytes under the same name (a page
    rerun) reuse their file; other bytes under a taken name get ``-2``, ``-3``..."""
    n = 1
    while True:
        candidate = dest / (f"{stem}{ext}" if n == 1 else f"{stem}-{n}{ext}")
        try:
            # O_EXCL claims the name: two uploads (or two sessions) never share a file.
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if candidate.is_file() and candidate.stat().st_size == len(data) and candidate.read_bytes() == data:
                return candidate
            n += 1
            continue
        except OSError as err:
            return f"cannot be saved ({err.strerror}); rename the file and upload it again"
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return candidate


def score_rows_table(rows: Sequence[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Detector rows -> (one row per clip: file, type, id, score, threshold, decision, error;
    per-ID probabilities, one column per class)."""
    table = pd.DataFrame([{"file": Path(r["path"]).name, "machine_type": r["machine_type"],
                           "machine_id": r["machine_id"], "scorer": r["scorer"], "score": r["score"],
                           "threshold": r["threshold"], "decision": r["decision"] or "", "error": r["error"] or "",
                           "note": r.get("note") or ""}
                          for r in rows])
    probs = pd.DataFrame([{"file": Path(r["path"]).name, **(r.get("probs") or {})} for r in rows if r.get("probs")])
    return table, probs


# ---------------------------------------------------------------- first launch
def llm_configured(ws: Workspace) -> bool:
    """Whether prompt generation would use an LLM: an API key or base URL in the environment or settings.yaml."""
    if os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"):
        return True
    if not ws.settings.is_file():
        return False
    import yaml

    try:
        llm = (yaml.safe_load(ws.settings.read_text()) or {}).get("llm") or {}
    except (yaml.YAMLError, AttributeError):
        return False
    return isinstance(llm, dict) and bool(llm.get("api_key") or llm.get("base_url"))


def first_launch_status(ws: Workspace) -> dict:
    """What a fresh machine has: data sets, runs, GPUs, AudioLDM weights, an LLM key."""
    gpus = jobs.detect_gpus()
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(DEFAULT_AUDIOLDM, "model_index.json")
        weights = isinstance(hit, str)
    except ImportError:
        weights = False
    return {"datasets": [p.name for p in list_datasets(ws)], "runs": [p.name for p in list_runs(ws)], "gpus": gpus,
            "audioldm_weights": weights,
            "llm": llm_configured(ws)}
