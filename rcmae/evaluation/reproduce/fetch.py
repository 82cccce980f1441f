"""The DCASE 2020 Task 2 archives: download (MD5-checked, resumable), unpack, check the layout."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rcmae.files import atomic_write_text

ZENODO = "https://zenodo.org"


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
                if dest.is_symlink() or dest.exists():
                    # Replace only what an earlier unpack left: a real folder of clips, nothing else in it.
                    if dest.is_symlink() or not dest.is_dir() or any(
                            not (f.is_file() and f.suffix.lower() == ".wav") for f in dest.iterdir()):
                        raise ReproduceError(f"data: {dest} holds more than unpacked .wav clips; move it away or "
                                             "pass --data an existing folder (nothing was replaced)")
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
    from rcmae.data.index import id_classes, index_dataset

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
    refuses clips whose name says "anomaly" in ``train/`` (rcmae.data.checks.drop_train_anomalies).
    """
    from rcmae.data.names import parse_name

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
