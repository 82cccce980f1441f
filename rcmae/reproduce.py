"""``rcmae reproduce``: the paper's DCASE 2020 experiments (its Tables 3 and 4) in one command, on a GPU machine.

Steps (each resumable: a finished step is skipped, an interrupted one continues):

1. **data**: an existing DCASE 2020 Task 2 folder (``--data``), or the 12 archives fetched from Zenodo (the
   development set, record 3678171, and the additional training set, record 3727685), each checked against
   its published MD5, resumed with HTTP ``Range`` after an interruption, and unpacked into
   ``<root>/{dev_data,eval_data}/<type>/train|test`` (docs/data.md, "The paper's 41 classes").
2. **view**: what pretraining sees. The paper pretrains on "all audios" of the data set: ``--pretrain-data all``
   (default) links every clip (development train and test, additional training), under unlabelled names, into
   ``OUT/pretrain-data/<part>/<type>/train``; ``train`` uses the training clips only.
3. **bank**: AudioLDM augmentation of the pretraining clips, ``--per-clip`` copies per clip (one drawn per
   clip per epoch), sharded over every local GPU (one ``rcmae augment --shard i/N --device cuda:i`` process each).
4. **pretrain** the two arms of Table 3, ``rcmae`` (with DDA: the bank) and ``rcmae-nodda`` (SpecAugment
   twins), with the preset (``paper``) on all GPUs with DDP; 5. **finetune** both on the 41 machine-ID
   classes (development + additional training); 6. **evaluate** on the labelled development test clips.
7. **report**: ``OUT/report.md`` and ``OUT/report.json``: Table 3 (pAUC without / with DDA per machine type)
   and Table 4 (AUC / pAUC per machine type) beside the paper's published values.

Training steps run as child processes (``python -m rcmae.cli ...``), so that Lightning's DDP can relaunch
them on N GPUs; their output goes to ``OUT/logs/<step>.log``. ``--dry-run`` prints every step, the data
volume and an estimate of the GPU hours from step times measured on this machine now (or read from a file
that ``bench/bench_paper.py`` wrote on a GPU).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rcmae.files import atomic_write_text, read_json, write_json

ZENODO = "https://zenodo.org"
MACHINE_TYPES = ("fan", "pump", "slider", "valve", "ToyCar", "ToyConveyor")
ARMS = ("rcmae", "rcmae-nodda")


@dataclass(frozen=True)
class Archive:
    """One Zenodo file: ``record``, file ``name``, its published ``md5``, and the folder it unpacks into."""

    record: str
    name: str
    md5: str
    subset: str  # dev_data | eval_data


# MD5s as Zenodo publishes them for records 3678171 (development) and 3727685 (additional training).
ARCHIVES: tuple[Archive, ...] = (
    Archive("3678171", "dev_data_fan.zip", "649bdfc06263ae7a838963f43b6641e6", "dev_data"),
    Archive("3678171", "dev_data_pump.zip", "90e7091ef722b7238a7f1009365779cd", "dev_data"),
    Archive("3678171", "dev_data_slider.zip", "da24a757719f0d94d5aa2d646bbfdc86", "dev_data"),
    Archive("3678171", "dev_data_valve.zip", "34d2672f55bb041589ef79c10dc89934", "dev_data"),
    Archive("3678171", "dev_data_ToyCar.zip", "4dec75ca8d9f666aa9e4c1894a740501", "dev_data"),
    Archive("3678171", "dev_data_ToyConveyor.zip", "03b6aa1bfd09a39d53af0ba39f71fa91", "dev_data"),
    Archive("3727685", "eval_data_train_fan.zip", "567798854130c8019df8b664c095ed1e", "eval_data"),
    Archive("3727685", "eval_data_train_pump.zip", "4e33ae9c0db5cc88437675f5e317caee", "eval_data"),
    Archive("3727685", "eval_data_train_slider.zip", "f84f186f4295fc23754abcdd1b0580a7", "eval_data"),
    Archive("3727685", "eval_data_train_valve.zip", "057cdd560caffb8305449541afd28c6d", "eval_data"),
    Archive("3727685", "eval_data_train_ToyCar.zip", "a5d4ccd498af70b04dd74b644b820006", "eval_data"),
    Archive("3727685", "eval_data_train_ToyConveyor.zip", "0e808ac0b761e9fb13d5e0c65caff00d", "eval_data"),
)

# The paper's published values (%, Tables 3 and 4), machine types in the paper's column order.
PAPER_ORDER = ("valve", "fan", "pump", "slider", "ToyCar", "ToyConveyor")
PAPER_TABLE3 = {  # machine type -> (RC-MAE without DDA pAUC, RC-MAE with DDA pAUC)
    "valve": (98.01, 98.37), "fan": (87.44, 88.10), "pump": (83.89, 83.25), "slider": (97.16, 97.84),
    "ToyCar": (90.10, 91.35), "ToyConveyor": (65.38, 68.70), "Average": (86.99, 87.93),
}
PAPER_TABLE4 = {  # method -> machine type -> (AUC, pAUC)
    "AE Baseline": {"valve": (66.28, 50.98), "fan": (65.83, 52.45), "pump": (72.89, 59.99),
                    "slider": (84.76, 66.53), "ToyCar": (78.77, 67.58), "ToyConveyor": (72.53, 67.58),
                    "Average": (73.51, 65.85)},
    "GMADE": {"valve": (99.07, 96.20), "fan": (83.06, 79.55), "pump": (87.87, 82.38), "slider": (97.62, 89.70),
              "ToyCar": (95.57, 91.54), "ToyConveyor": (81.46, 66.62), "Average": (90.77, 84.33)},
    "MobileNetV2": {"valve": (88.65, 87.98), "fan": (80.19, 74.40), "pump": (82.53, 76.50),
                    "slider": (95.27, 85.22), "ToyCar": (87.66, 85.92), "ToyConveyor": (69.71, 56.43),
                    "Average": (84.34, 77.74)},
    "Glow_AFF": {"valve": (91.40, 75.00), "fan": (74.90, 65.30), "pump": (83.40, 73.80), "slider": (94.60, 82.80),
                 "ToyCar": (92.20, 84.10), "ToyConveyor": (71.50, 59.00), "Average": (85.20, 73.90)},
    "STgram-MFN": {"valve": (99.64, 98.44), "fan": (94.04, 88.97), "pump": (91.94, 81.75),
                   "slider": (99.55, 97.61), "ToyCar": (94.44, 87.68), "ToyConveyor": (74.57, 63.30),
                   "Average": (92.36, 86.34)},
    "AADCL": {"valve": (68.62, 55.03), "fan": (85.27, 68.93), "pump": (86.75, 70.85), "slider": (77.74, 61.62),
              "ToyCar": (88.79, 75.95), "ToyConveyor": (71.26, 57.40), "Average": (79.74, 64.96)},
    "RC-MAE (paper)": {"valve": (99.52, 98.37), "fan": (95.12, 88.10), "pump": (92.82, 83.25),
                       "slider": (99.10, 97.84), "ToyCar": (95.02, 91.35), "ToyConveyor": (84.80, 68.70),
                       "Average": (94.39, 87.93)},
}


class ReproduceError(ValueError):
    """A reproduction that cannot go on; the message names the step, the file or URL, and the fix."""


class OfflineError(ReproduceError):
    """The data must be fetched but the archive server cannot be reached."""


class ChecksumError(ReproduceError):
    """A downloaded archive whose MD5 differs from the published one."""


# ---------------------------------------------------------------- data: fetch, check, lay out
def archive_url(base: str, archive: Archive) -> str:
    """``<base>/records/<record>/files/<name>?download=1`` (Zenodo's download link)."""
    return f"{base.rstrip('/')}/records/{archive.record}/files/{archive.name}?download=1"


def md5_file(path: str | os.PathLike) -> str:
    h = hashlib.md5()  # noqa: S324 - the checksum Zenodo publishes, not a security measure
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_online(base: str, timeout: float = 10.0) -> None:
    """Raise :class:`OfflineError` (one line, with the way out) when ``base`` cannot be reached."""
    try:
        with urllib.request.urlopen(urllib.request.Request(base, method="HEAD"), timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return  # the server answered: we are online
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise OfflineError(
            f"data: cannot reach {base} ({reason}); this machine looks offline. Download the 12 DCASE 2020 Task 2 "
            f"archives (Zenodo records 3678171 and 3727685) on a machine with internet, unpack them into "
            f"ROOT/dev_data and ROOT/eval_data, and pass --data ROOT (or --mirror URL for a local copy)"
        ) from err


def download(url: str, dest: Path, md5: str, timeout: float = 60.0,
             progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.part`` with a ``Range`` request; verify the MD5.

    A finished ``dest`` whose MD5 matches is kept as it is. A mismatch deletes the download and raises
    :class:`ChecksumError` (the next run starts that file again).
    """
    dest = Path(dest)
    if dest.is_file():
        if md5_file(dest) == md5:
            return dest
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the part is already complete
            response = None
        else:
            raise ReproduceError(f"data: {url} answered HTTP {err.code}; try again later or pass --data") from err
    except (urllib.error.URLError, OSError) as err:
        raise OfflineError(f"data: cannot download {url} ({getattr(err, 'reason', err)}); "
                           f"run again when online to resume it, or pass --data") from err
    if response is not None:
        with response:
            resumed = have > 0 and response.status == 206
            mode = "ab" if resumed else "wb"
            total = response.headers.get("Content-Length")
            total = int(total) + (have if resumed else 0) if total else None
            done = have if resumed else 0
            with open(part, mode) as fh:
                while block := response.read(1 << 20):
                    fh.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
    got = md5_file(part)
    if got != md5:
        part.unlink()
        raise ChecksumError(f"data: {dest.name}: MD5 {got} differs from the published {md5}; the download was "
                            f"deleted, run again to fetch it anew")
    os.replace(part, dest)
    return dest


def unpack(archive_path: Path, root: Path, subset: str) -> list[Path]:
    """Unpack one archive into ``root/<subset>/<type>/...``; returns the machine-type folders it filled.

    The archives hold ``<type>/train|test/*.wav`` (possibly under a ``dev_data``/``eval_data`` level):
    every folder that directly holds ``train/`` or ``test/`` is taken as a machine type.
    """
    target = root / subset
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".unpack-") as tmp:
        with zipfile.ZipFile(archive_path) as zf:
            for member in zf.namelist():
                if member.startswith("/") or ".." in Path(member).parts:
                    raise ReproduceError(f"data: {archive_path.name} holds an unsafe path {member!r}; delete it")
            zf.extractall(tmp)
        moved = []
        for split_dir in sorted(Path(tmp).rglob("*")):
            if split_dir.is_dir() and split_dir.name in ("train", "test") and split_dir.parent != Path(tmp):
                type_dir = split_dir.parent
                dest = target / type_dir.name / split_dir.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.exists():
                    shutil.rmtree(dest)
                shutil.move(str(split_dir), str(dest))
                moved.append(dest)
    if not moved:
        raise ReproduceError(f"data: {archive_path.name} holds no <type>/train or <type>/test folder; "
                             f"is it a DCASE 2020 Task 2 archive?")
    return moved


def fetch_dcase2020(root: str | os.PathLike, base: str = ZENODO, archives: Sequence[Archive] = ARCHIVES,
                    keep_archives: bool = False, log: Callable[[str], None] = print) -> Path:
    """Fetch, verify and unpack the DCASE 2020 Task 2 development and additional training data into ``root``.

    Refuses to start offline (:class:`OfflineError`); an interrupted run resumes where it stopped (a
    ``.part`` file continues with HTTP Range, an unpacked archive is not unpacked again).
    """
    root = Path(root)
    check_online(base)
    downloads = root / "archives"
    for archive in archives:
        marker = root / f".unpacked-{archive.name}"
        if marker.is_file():
            continue
        url = archive_url(base, archive)
        log(f"data: {archive.name} <- {url}")
        path = download(url, downloads / archive.name, archive.md5)
        unpack(path, root, archive.subset)
        atomic_write_text(marker, archive.md5 + "\n")
        if not keep_archives:
            path.unlink()
    return root


def check_layout(root: str | os.PathLike) -> dict:
    """Clip counts of a DCASE 2020 folder and its machine-ID classes (the paper fine-tunes on 41).

    Returns:
        ``{"root", "train_clips", "test_clips", "classes": [[type, id], ...], "ids_per_type", "bytes"}``.
    """
    from rcmae.data import id_classes, index_dataset

    index = index_dataset(root, strict=False)
    train = index[index["split"] == "train"]
    test = index[(index["split"] == "test") & index["label"].isin(["normal", "anomaly"])]
    classes = id_classes(index)
    per_type: dict[str, list[str]] = {}
    for mtype, mid in classes:
        per_type.setdefault(mtype, []).append(mid)
    size = sum(os.path.getsize(p) for p in index["path"])
    return {"root": str(Path(root).resolve()), "train_clips": int(len(train)), "test_clips": int(len(test)),
            "all_clips": int(len(index)), "classes": [list(c) for c in classes], "ids_per_type": per_type,
            "bytes": int(size)}


def pretrain_view(root: str | os.PathLike, out: str | os.PathLike, which: str = "all") -> Path:
    """The folder pretraining reads: ``all`` = every clip, unlabelled (links), ``train`` = ``root`` itself.

    ``all`` links each clip of ``<root>/dev_data/<type>/train``, ``<root>/dev_data/<type>/test`` and
    ``<root>/eval_data/<type>/train`` into ``<out>/{dev_train,dev_test,add_train}/<type>/train/`` under an
    unlabelled DCASE name, ``id_<ID>_<c><number>.wav`` (``c``: 1 normal, 2 anomaly, 0 unlabelled, so that
    names stay unique): pretraining is self-supervised and must not see a label, and rcmae's training
    refuses clips whose name says "anomaly" in ``train/`` (rcmae.inputs.drop_train_anomalies).
    """
    from rcmae.data import parse_name

    root, out = Path(root).resolve(), Path(out)
    if which == "train":
        return root
    if which != "all":
        raise ReproduceError(f"--pretrain-data {which!r}: use all (the paper's 'all audios') or train")
    parts = {"dev_train": ("dev_data", "train"), "dev_test": ("dev_data", "test"), "add_train": ("eval_data", "train")}
    code = {"normal": "1", "anomaly": "2", "unknown": "0"}
    made = 0
    for part, (subset, split) in parts.items():
        base = root / subset
        if not base.is_dir():
            continue
        for type_dir in sorted(p for p in base.iterdir() if p.is_dir() and (p / split).is_dir()):
            folder = out / part / type_dir.name / "train"
            folder.mkdir(parents=True, exist_ok=True)
            for wav in sorted((type_dir / split).glob("*.wav")):
                parsed = parse_name(wav)
                if parsed is None or parsed["section"]:
                    continue  # not a DCASE 2020 clip name
                number = wav.stem.rsplit("_", 1)[-1]
                link = folder / f"id_{parsed['machine_id']}_{code[parsed['label']]}{number}.wav"
                if not link.exists():
                    link.symlink_to(wav)
                made += 1
    if not made:
        raise ReproduceError(f"{root}: no dev_data/<type>/train|test clips; expected the DCASE 2020 layout "
                             f"(docs/data.md)")
    return out


# ---------------------------------------------------------------- planning and estimates
@dataclass
class Options:
    """Everything ``rcmae reproduce`` was asked (see ``rcmae reproduce --help``)."""

    out: Path
    data: Path | None = None
    mirror: str = ZENODO
    preset: str = "paper"
    overrides: list[str] = dataclasses.field(default_factory=list)
    pretrain_data: str = "all"
    arms: tuple[str, ...] = ARMS
    gpus: int | None = None  # None = every visible GPU
    aug_model: str | None = None
    per_clip: int = 4
    aug_steps: tuple[int, int] | None = None
    bank_shards: int | None = None  # default: one per GPU (1 on CPU)
    seed: int = 0

    @property
    def n_gpus(self) -> int:
        if self.gpus is not None:
            return self.gpus
        import torch

        return torch.cuda.device_count()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rcmae.cli", *args]


def plan(opts: Options) -> list[dict]:
    """Every step: ``{"step", "what", "argv" (a child process) or None}`` in order."""
    out = opts.out.resolve()
    data = opts.data.resolve() if opts.data else out / "data" / "dcase2020"
    view = pretrain_view_path(opts, data)
    n = opts.n_gpus
    shards = opts.bank_shards or max(1, n)
    sets = [a for o in opts.overrides for a in ("--set", o)]
    trainer = ["--devices", str(n), "--accelerator", "gpu"] if n else ["--accelerator", "cpu"]
    steps = [{"step": "data", "what": (f"use {data}" if opts.data else
                                        f"fetch 12 archives from {opts.mirror} (records 3678171, 3727685) into "
                                        f"{data}, check MD5s, unpack"), "argv": None},
             {"step": "view", "what": f"pretraining data: {opts.pretrain_data} ({view})", "argv": None}]
    bank = out / "bank-audioldm"
    if "rcmae" in opts.arms:
        for i in range(shards):
            argv = _cli("augment", "--data", str(view), "--out", str(bank), "--backend", "audioldm",
                        "--per-clip", str(opts.per_clip), "--seed", str(opts.seed), "--shard", f"{i}/{shards}",
                        "--device", f"cuda:{i % max(n, 1)}" if n else "cpu")
            if opts.aug_model:
                argv += ["--model", opts.aug_model]
            if opts.aug_steps:
                argv += ["--steps", f"{opts.aug_steps[0]}:{opts.aug_steps[1]}"]
            steps.append({"step": f"bank {i}/{shards}", "what": f"AudioLDM bank shard {i} of {shards}", "argv": argv})
    for arm in opts.arms:
        run = out / "runs" / arm
        aug = str(bank) if arm == "rcmae" else "specaugment"
        steps.append({"step": f"pretrain {arm}", "what": f"pretrain `{opts.preset}` on {aug}",
                      "argv": _cli("pretrain", "--data", str(view), "--out", str(run), "--preset", opts.preset,
                                   "--aug", aug, *sets, *trainer)})
        steps.append({"step": f"finetune {arm}", "what": "fine-tune on the machine-ID classes",
                      "argv": _cli("finetune", "--run", str(run), "--data", str(data), *trainer)})
        steps.append({"step": f"evaluate {arm}", "what": "score the labelled development test clips",
                      "argv": _cli("evaluate", "--run", str(run), "--data", str(data))})
    steps.append({"step": "report", "what": f"Tables 3 and 4 beside the paper: {out / 'report.md'}, report.json",
                  "argv": None})
    return steps


def pretrain_view_path(opts: Options, data: Path) -> Path:
    return data if opts.pretrain_data == "train" else opts.out.resolve() / "pretrain-data"


def measure_step_times(preset: str, overrides: Sequence[str] = (), batch: int | None = None, steps: int = 2,
                       device: str | None = None) -> dict:
    """Seconds per optimiser step of both stages, measured now on ``device`` with random log-mels.

    On CPU the batch defaults to 4 and the time is scaled linearly to the preset's batch (said in the result);
    on a GPU the preset's own batch runs in bf16 autocast.
    """
    import torch

    from rcmae import config as rconfig
    from rcmae.losses import finetune_loss, pretrain_loss
    from rcmae.model import RCMAE

    cfg = rconfig.load_config(preset, list(overrides))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.startswith("cuda")
    real = {"pretrain": cfg.pretrain.batch_size, "finetune": cfg.finetune.batch_size}
    frames = cfg.pretrain.crop_frames or cfg.model.n_frames
    model = RCMAE(dataclasses.replace(cfg.model, n_classes=41)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator(device=device).manual_seed(0)
    result = {"device": torch.cuda.get_device_name(0) if on_gpu else "cpu", "preset": preset}
    for stage in ("pretrain", "finetune"):
        b = batch or (real[stage] if on_gpu else min(4, real[stage]))
        x = torch.randn(b, cfg.model.n_mels, frames, device=device)
        twin = torch.randn_like(x)
        labels = torch.arange(b, device=device) % 41
        times = []
        for i in range(steps + 1):
            if on_gpu:
                torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.autocast(device_type="cuda" if on_gpu else "cpu", dtype=torch.bfloat16, enabled=on_gpu):
                if stage == "pretrain":
                    ratio = model.sample_mask_ratio(gen)
                    latent, mask, ids = model.forward_encoder(x, ratio, gen)
                    pred = model.forward_decoder(latent, ids)
                    latent_aug, _, _ = model.forward_encoder(twin, ratio, gen)
                    loss = pretrain_loss(model.project(latent, x).float(), model.project(latent_aug, twin).float(),
                                         pred.float(), model.target(x).float(), mask)["loss"]
                else:
                    z = model.embed(x)
                    loss = finetune_loss(z.float(), model.classify(z).float(), labels)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            if on_gpu:
                torch.cuda.synchronize()
            if i:  # the first step warms up (allocations, kernels)
                times.append(time.perf_counter() - start)
        per_step = sum(times) / len(times)
        result[f"{stage}_step_s"] = per_step * real[stage] / b
        result[f"{stage}_measured_batch"] = b
    result["batch"] = real
    result["source"] = (f"measured now on {result['device']} ({steps} steps after a warm-up"
                        + ("" if on_gpu else f"; batch {result['pretrain_measured_batch']}, scaled linearly to the "
                           f"preset's batch {real['pretrain']}") + ")")
    return result


def measure_audioldm(model: object, device: str | None = None, seconds: float = 10.0,
                     steps: Sequence[int] = (10, 50)) -> dict[str, float]:
    """Seconds per clip of AudioLDM audio-to-audio at each S in ``steps`` (one warm-up call first).

    ``model``: an AudioLDM folder or hub id, or an ``AudioLDMAugmenter`` already built.
    """
    import numpy as np
    import torch

    from rcmae.augment.audioldm import AudioLDMAugmenter
    from rcmae.augment.bank import DEFAULT_T0, PAPER_GUIDANCE

    aug = model if isinstance(model, AudioLDMAugmenter) else AudioLDMAugmenter.from_pretrained(str(model),
                                                                                                device=device)
    wave = (0.1 * np.random.default_rng(0).standard_normal(int(seconds * 16000))).astype(np.float32)
    prompt = "add continuous and powerful whirring noise in a factory"
    aug(wave, prompt, num_inference_steps=min(steps), guidance_scale=PAPER_GUIDANCE, t0=DEFAULT_T0)
    out = {}
    for s in steps:
        start = time.perf_counter()
        aug(wave, prompt, num_inference_steps=int(s), guidance_scale=PAPER_GUIDANCE, t0=DEFAULT_T0,
            generator=torch.Generator("cpu").manual_seed(0))
        out[str(s)] = time.perf_counter() - start
    return out


def estimate(opts: Options, clips: dict, times: dict) -> dict:
    """Wall and GPU hours per step from clip counts and step times (hours; ``None`` where a time is missing).

    ``clips``: ``{"pretrain": n, "finetune": n, "test": n}``; ``times``: ``pretrain_step_s``,
    ``finetune_step_s`` and optionally ``audioldm_s_per_clip`` ``{"10": s, "50": s}``.
    """
    from rcmae import config as rconfig

    cfg = rconfig.load_config(opts.preset, opts.overrides)
    n = max(1, opts.n_gpus)
    out: dict[str, float | None] = {}
    aldm = times.get("audioldm_s_per_clip") or {}
    if "rcmae" in opts.arms:
        lo, hi = opts.aug_steps or (10, 50)
        if {"10", "50"} <= set(aldm):
            # S is drawn uniformly in lo..hi and a clip's time is linear in S: the mean S prices a clip.
            per_s = (aldm["50"] - aldm["10"]) / 40
            mean = aldm["10"] + per_s * ((lo + hi) / 2 - 10)
            out["bank"] = clips["pretrain"] * opts.per_clip * mean / n / 3600
        else:
            out["bank"] = None
    crops = cfg.pretrain.crops_per_clip if cfg.pretrain.crop_frames else 1
    pre_steps = cfg.pretrain.epochs * max(1, math.ceil(clips["pretrain"] * crops / (cfg.pretrain.batch_size * n)))
    ft_steps = cfg.finetune.epochs * max(1, math.ceil(clips["finetune"] / (cfg.finetune.batch_size * n)))
    for arm in opts.arms:
        out[f"pretrain {arm}"] = pre_steps * times["pretrain_step_s"] / 3600
        out[f"finetune {arm}"] = ft_steps * times["finetune_step_s"] / 3600
    known = [v for v in out.values() if v is not None]
    return {"wall_hours": out, "total_wall_hours": sum(known), "gpus": n,
            "total_gpu_hours": sum(known) * n, "complete": all(v is not None for v in out.values())}


def dry_run(opts: Options, step_times: str | os.PathLike | None = None, clips: int | None = None,
            measure: bool = True, log: Callable[[str], None] = print) -> dict:
    """Print (via ``log``) every step, the data volume and the estimated GPU hours; returns the same as a dict."""
    steps = plan(opts)
    log(f"rcmae reproduce --dry-run: {len(steps)} steps into {opts.out}")
    for i, step in enumerate(steps, 1):
        log(f"  {i:2d}. {step['step']}: {step['what']}")
        if step["argv"]:
            log(f"      {' '.join(step['argv'][1:]).replace('-m rcmae.cli ', 'rcmae ')}")
    volume = None
    if opts.data is not None and Path(opts.data).is_dir():
        volume = check_layout(opts.data)
        # The "all" view holds the training and the labelled (development) test clips, not the evaluation set.
        view_all = volume["train_clips"] + (volume["test_clips"] if opts.pretrain_data == "all" else 0)
        counts = {"pretrain": view_all, "finetune": volume["train_clips"], "test": volume["test_clips"]}
        log(f"data: {volume['all_clips']} clips ({volume['bytes'] / 2**30:.2f} GiB): {volume['train_clips']} "
            f"training, {volume['test_clips']} labelled test; {len(volume['classes'])} machine-ID classes "
            f"(the paper: 41); pretraining sees {view_all} clips")
    elif clips:
        counts = {"pretrain": clips, "finetune": clips, "test": 0}
        log(f"data: not on this machine; estimating for --clips {clips}")
    else:
        counts = None
        log("data: not on this machine yet (12 archives from Zenodo, checked by MD5); pass --data FOLDER or "
            "--clips N for an estimate")
    times: dict = {}
    if step_times:
        times = read_json(step_times)
        times.setdefault("source", f"read from {step_times}")
    elif measure:
        times = measure_step_times(opts.preset, opts.overrides)
        if opts.aug_model and "rcmae" in opts.arms:
            times["audioldm_s_per_clip"] = measure_audioldm(opts.aug_model, seconds=10.0)
            times["source"] += "; AudioLDM s/clip measured now at S = 10 and 50 on a 10 s clip"
    log(f"step times: {times.get('source', 'none (no estimate; pass --step-times FILE, or drop --no-measure)')}")
    if times.get("pretrain_step_s") is not None:
        log(f"  pretrain {times['pretrain_step_s']:.3f} s/step, finetune {times['finetune_step_s']:.3f} s/step"
            + (f", AudioLDM {times['audioldm_s_per_clip']} s/clip by S" if times.get("audioldm_s_per_clip") else
               ", AudioLDM not measured (pass --aug-model, or --step-times from bench/bench_paper.py)"))
    result = {"steps": steps, "data": volume, "clips": counts, "times": times}
    if counts and times.get("pretrain_step_s") is not None:
        est = estimate(opts, counts, times)
        result["estimate"] = est
        for name, hours in est["wall_hours"].items():
            log(f"  {name}: " + ("not estimated (no AudioLDM time)" if hours is None else f"{hours:.2f} h wall"))
        log(f"estimate: {est['total_wall_hours']:.2f} h wall on {est['gpus']} "
            f"{'GPU(s)' if opts.n_gpus else 'CPU process'}, {est['total_gpu_hours']:.2f} "
            f"{'GPU' if opts.n_gpus else 'CPU'} hours" + ("" if est["complete"] else " (without the bank)"))
    return result


# ---------------------------------------------------------------- running
def _run_child(argv: list[str], log_path: Path, log: Callable[[str], None], in_process: bool = False) -> None:
    """Run one ``python -m rcmae.cli ...`` step with its output in ``log_path``.

    ``in_process`` calls ``rcmae.cli.main`` here instead (one device: no DDP relaunch to allow for, and no
    second interpreter start-up); several GPUs always get a child process, which Lightning's DDP relaunches.
    """
    import contextlib

    log_path.parent.mkdir(parents=True, exist_ok=True)
    log(f"  $ {' '.join(argv)}  > {log_path}")
    with open(log_path, "a") as fh:
        if in_process:
            from rcmae import cli

            with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
                rc = cli.main(argv[3:])
        else:
            rc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0:
        tail = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()][-1:]
        raise ReproduceError(f"{' '.join(argv[3:5])} failed (exit {rc}): {tail[0] if tail else ''}; "
                             f"see {log_path}; run `rcmae reproduce` again to resume")


def _stage_done(run: Path, stage: str) -> bool:
    path = run / "run.json"
    return path.is_file() and stage in read_json(path).get("stages", {})


def run_all(opts: Options, log: Callable[[str], None] = print) -> Path:
    """Run every step of :func:`plan` that is not done yet, then write the report; returns ``OUT/report.md``."""
    out = opts.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = opts.data.resolve() if opts.data else out / "data" / "dcase2020"
    if opts.data is None:
        fetch_dcase2020(data, base=opts.mirror, log=log)
    elif not data.is_dir():
        raise FileNotFoundError(f"{data}: data folder not found; pass --data a DCASE 2020 Task 2 folder")
    layout = check_layout(data)
    write_json(out / "data.json", layout)
    log(f"data: {layout['train_clips']} training clips, {len(layout['classes'])} machine-ID classes "
        f"(the paper: 41), {layout['test_clips']} labelled test clips")
    pretrain_view(data, pretrain_view_path(opts, data), opts.pretrain_data)
    logs = out / "logs"
    bank_steps = [s for s in plan(opts) if s["step"].startswith("bank ")]
    single = opts.n_gpus <= 1
    if len(bank_steps) == 1:
        log("bank: 1 shard")
        _run_child(bank_steps[0]["argv"], logs / "bank-0-of-1.log", log, in_process=True)
    elif bank_steps:
        # Shards run side by side, one per GPU; build_bank resumes each from its manifest.
        log(f"bank: {len(bank_steps)} shard(s)")
        procs = []
        for step in bank_steps:
            path = logs / f"bank-{step['step'].split()[1].replace('/', '-of-')}.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(path, "a")  # noqa: SIM115 - closed below, after the process ends
            procs.append((subprocess.Popen(step["argv"], stdout=fh, stderr=subprocess.STDOUT), fh, path))
        failed = []
        for proc, fh, path in procs:
            if proc.wait() != 0:
                failed.append(str(path))
            fh.close()
        if failed:
            raise ReproduceError(f"bank: {len(failed)} shard(s) failed, see {', '.join(failed)}; "
                                 "run `rcmae reproduce` again to resume")
    for step in plan(opts):
        name = step["step"]
        if step["argv"] is None or name.startswith("bank "):
            continue
        kind, arm = name.split()
        run = out / "runs" / arm
        argv = list(step["argv"])
        if kind == "pretrain":
            if _stage_done(run, "pretrain"):
                continue
            if (run / "checkpoints" / "pretrain-last.ckpt").is_file():
                argv.append("--resume")
        elif kind == "finetune":
            if _stage_done(run, "finetune"):
                continue
            if (run / "checkpoints" / "finetune-last.ckpt").is_file():
                argv.append("--resume")
        elif kind == "evaluate" and (run / "eval" / "results.json").is_file() and \
                "evaluated" in read_json(run / "run.json"):
            continue
        log(f"{name}")
        _run_child(argv, logs / f"{kind}-{arm}.log", log, in_process=single)
    return write_report(out, opts)


# ---------------------------------------------------------------- report
def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ours(out: Path, arm: str) -> dict | None:
    path = out / "runs" / arm / "eval" / "results.json"
    return read_json(path) if path.is_file() else None


def write_report(out: str | os.PathLike, opts: Options | None = None) -> Path:
    """``report.md`` and ``report.json``: Tables 3 and 4 with the paper's values beside this run's (in %)."""
    out = Path(out)
    results = {arm: _ours(out, arm) for arm in ARMS}

    def cell(arm: str, mtype: str, metric: str) -> float | None:
        res = results.get(arm)
        if res is None:
            return None
        if mtype == "Average":
            return 100 * res["average"][metric]
        val = res["per_type"].get(mtype, {}).get(metric)
        return None if val is None else 100 * val

    rows = [*PAPER_ORDER, "Average"]
    table3 = {t: {"paper_without_dda": PAPER_TABLE3[t][0], "paper_with_dda": PAPER_TABLE3[t][1],
                  "ours_without_dda": cell("rcmae-nodda", t, "pauc"), "ours_with_dda": cell("rcmae", t, "pauc")}
              for t in rows}
    table4 = {"paper": {m: {t: {"auc": v[t][0], "pauc": v[t][1]} for t in rows} for m, v in PAPER_TABLE4.items()},
              "ours": {arm: {t: {"auc": cell(arm, t, "auc"), "pauc": cell(arm, t, "pauc")} for t in rows}
                       for arm in ARMS}}
    scorer = next((r.get("system", "") for r in results.values() if r), "")
    lines = [
        "# RC-MAE on DCASE 2020 Task 2: this reproduction beside the paper",
        "",
        f"- runs: {out / 'runs'}; preset `{opts.preset if opts else '?'}`; scorer of this run: `{scorer or '-'}`",
        "- values in %; per machine type: mean over its IDs; Average: mean over the six types (the paper's "
        "convention); pAUC: max FPR 0.1, McClish-standardised as in DCASE; '-' = not run / type not in the data",
        "",
        "## Table 3: RC-MAE without and with diffusion-based data augmentation (pAUC)",
        "",
        "| machine type | paper without DDA | paper with DDA | ours without DDA | ours with DDA |",
        "|---|---:|---:|---:|---:|",
    ]
    for t in rows:
        r = table3[t]
        lines.append(f"| {t} | {_pct(r['paper_without_dda'])} | {_pct(r['paper_with_dda'])} | "
                     f"{_pct(r['ours_without_dda'])} | {_pct(r['ours_with_dda'])} |")
    head = " | ".join(f"{t} AUC | {t} pAUC" for t in rows)
    lines += ["", "## Table 4: per machine type AUC / pAUC, the paper's rows and ours", "",
              f"| method | {head} |", "|---|" + "---:|" * (2 * len(rows))]
    for method, vals in table4["paper"].items():
        lines.append(f"| {method} | " + " | ".join(f"{_pct(vals[t]['auc'])} | {_pct(vals[t]['pauc'])}"
                                                    for t in rows) + " |")
    for arm, label in (("rcmae", "RC-MAE with DDA (this run)"), ("rcmae-nodda", "RC-MAE without DDA (this run)")):
        vals = table4["ours"][arm]
        lines.append(f"| {label} | " + " | ".join(f"{_pct(vals[t]['auc'])} | {_pct(vals[t]['pauc'])}"
                                                   for t in rows) + " |")
    lines.append("")
    report = {"table3": table3, "table4": table4, "runs": {a: str(out / "runs" / a) for a in ARMS},
              "preset": opts.preset if opts else None,
              "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(opts).items()}
              if opts else None}
    write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", "\n".join(lines))
    return out / "report.md"
