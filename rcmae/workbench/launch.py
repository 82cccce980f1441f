"""Starting work from the pages: job command lines, the quick demo, uploads, first-launch status."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rcmae.workbench import jobs, processes
from rcmae.workbench import runner as jobs_runner
from rcmae.workbench.access import short_name
from rcmae.workbench.audition import DEFAULT_AUDIOLDM
from rcmae.workbench.library import list_datasets, list_runs, new_name
from rcmae.workspace import Workspace

if TYPE_CHECKING:  # diffusers is heavy: imported only when AudioLDM is actually used
    pass

JOB_KINDS = ("fit", "pretrain", "finetune", "evaluate", "augment", "benchmark", "reproduce", "demo-data")
PRESETS_DIR = Path(__file__).resolve().parents[2] / "configs"
UPLOAD_LIMIT_MB = 20.0


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
    if kind == "fit":  # the training-free detector (rcmae fit): seconds, no network
        need(data, "data folder")
        need(out, "run folder")
        argv = ["fit", "--data", a(data), "--out", a(out), "--preset", preset, *sets]
    elif kind == "pretrain":
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
    jobs_runner.ensure_runner(store)
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


QUICK_DEMO_SECONDS = (30, 120)  # what the Start page promises on 2 CPU cores (bench/bench_first_run.py measures it)


def quick_demo_data(ws: Workspace) -> Path:
    """The quick demo's data: ``<workspace>/data/quick-demo`` (``make app`` writes it), else the demo set."""
    from rcmae.data.demo.generate import is_demo_data

    small = ws.data / "quick-demo"
    return small if is_demo_data(small) or not is_demo_data(ws.demo_data) else ws.demo_data


def quick_demo_chain(ws: Workspace, store: jobs.JobStore) -> list[jobs.Job]:
    """The jobs of the newest quick demo or RC-MAE training chain (same ``chain`` name prefix), oldest first."""
    found = [j for j in store.list() if j.name.startswith(("quick demo:", "train RC-MAE:"))]
    if not found:
        return []
    last = found[-1].name.split(":", 1)[0]
    tail = []
    for job in reversed(found):
        if not job.name.startswith(last + ":"):
            break
        tail.append(job)
        if job.after is None:
            break
    return list(reversed(tail))


def _chain(store: jobs.JobStore, chain: list[tuple[list[str], str]], gpus: str = "") -> list[jobs.Job]:
    launched: list[jobs.Job] = []
    for argv, name in chain:
        job = jobs.launch(store, argv, gpus=gpus if argv[0] in ("pretrain", "finetune") else "", name=name,
                          after=launched[-1].id if launched else None)
        launched.append(job)
    jobs.start_ready(store)
    jobs_runner.ensure_runner(store)
    return [store.get(j.id) for j in launched]


def quick_demo(ws: Workspace, store: jobs.JobStore, gpus: str = "") -> list[jobs.Job]:
    """The "quick demo run": [demo data ->] fit the training-free detector -> evaluate, chained jobs (~1 minute).

    The `tiny` default detector is an ensemble of training-free scorers (README, "What to expect"), so the first
    run needs no training: ``rcmae fit`` then ``rcmae evaluate`` on ``<workspace>/data/quick-demo`` (``make app``
    writes it; the job writes it first when missing). The run goes to ``<workspace>/runs/quick-demo-<time>``.
    Training RC-MAE on the same data is :func:`train_demo`.
    """
    s = quick_demo_settings()
    run = ws.runs / new_name(ws.runs, "quick-demo")
    data = quick_demo_data(ws)
    chain: list[tuple[list[str], str]] = []
    if not (data / "demo.json").is_file() or not demo_recording(ws).is_file():
        # The small set and the long recording for Monitor (--if-missing: only what is not there yet).
        chain.append((["demo-data", str(data), "--train-per-id", str(s["train_per_id"]), "--test-per-id",
                       str(s["test_per_id"]), "--if-missing", "--recording", str(demo_recording(ws))],
                      "quick demo: data"))
    chain += [
        (["fit", "--data", str(data), "--out", str(run), "--preset", "tiny"], "quick demo: fit"),
        (["evaluate", "--run", str(run)], "quick demo: evaluate"),
    ]
    return _chain(store, chain, gpus)


def train_demo(ws: Workspace, store: jobs.JobStore, gpus: str = "") -> list[jobs.Job]:
    """RC-MAE on the quick demo's data: pretrain -> fine-tune -> evaluate (tiny preset, the quick epochs)."""
    s = quick_demo_settings()
    run = ws.runs / new_name(ws.runs, "rcmae-demo")
    data = quick_demo_data(ws)
    chain = [
        (["pretrain", "--data", str(data), "--out", str(run), "--preset", "tiny", "--epochs",
          str(s["pretrain_epochs"])], "train RC-MAE: pretrain"),
        (["finetune", "--run", str(run), "--epochs", str(s["finetune_epochs"])], "train RC-MAE: fine-tune"),
        (["evaluate", "--run", str(run)], "train RC-MAE: evaluate"),
    ]
    return _chain(store, chain, gpus)


def demo_recording(ws: Workspace) -> Path:
    """Where ``make app`` and the quick demo put the long demo recording for Monitor (fan ID 00, 3 minutes)."""
    return ws.root / "recordings" / "demo_fan_id_00.wav"


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
        safe = short_name(Path(name.replace("\\", "/")).name.lstrip(".") or "upload.wav")
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
    gpus = processes.detect_gpus()
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(DEFAULT_AUDIOLDM, "model_index.json")
        weights = isinstance(hit, str)
    except ImportError:
        weights = False
    return {"datasets": [p.name for p in list_datasets(ws)], "runs": [p.name for p in list_runs(ws)], "gpus": gpus,
            "audioldm_weights": weights,
            "llm": llm_configured(ws)}
