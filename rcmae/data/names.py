"""What a DCASE 2020-2025 clip's file name says: machine ID, section, domain, split, label, attributes."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

_NAME_2020 = re.compile(r"^(?:(?P<label>normal|anomaly)_)?id_(?P<id>\d{2})_(?P<num>\d+)\.wav$", re.IGNORECASE)
_NAME_2021 = re.compile(
    r"^section_(?P<section>\d{2})_(?P<domain>source|target)_(?P<split>train|test)"
    r"(?:_(?P<label>normal|anomaly))?_(?P<num>\d+)(?:_.*)?\.wav$",
    re.IGNORECASE,
)
# 2022+ evaluation test clips hide domain and label: section_00_0000.wav (2023+ without any tail).
_NAME_EVAL = re.compile(r"^section_(?P<section>\d{2})_(?P<num>\d+)(?:_.*)?\.wav$", re.IGNORECASE)
# The attribute tail after the clip number: "_vel_6_loc_A", "_noAttribute", 2021's "_0_g_25_mm_2000_mV_none".
_TAIL_2021 = re.compile(
    r"^section_\d{2}_(?:source|target)_(?:train|test)(?:_(?:normal|anomaly))?_\d+_(?P<tail>.+)\.wav$", re.IGNORECASE
)
_TAIL_EVAL = re.compile(r"^section_\d{2}_\d+_(?P<tail>.+)\.wav$", re.IGNORECASE)


def parse_name(path: str | os.PathLike) -> dict | None:
    """Parse a DCASE clip file name (the name only; folders are not looked at).

    Returns:
        ``{"machine_id", "section", "domain", "label", "split"}`` (strings; ``split`` is ``""`` when the name
        does not say, ``label`` is ``"unknown"`` for unlabelled evaluation clips), or ``None`` when the name
        matches no DCASE 2020-2025 pattern.
    """
    name = Path(path).name
    m = _NAME_2020.match(name)
    if m:
        label = (m["label"] or "unknown").lower()
        return {"machine_id": m["id"], "section": "", "domain": "", "label": label, "split": ""}
    m = _NAME_2021.match(name)
    if m:
        label = (m["label"] or "unknown").lower()
        return {"machine_id": m["section"], "section": m["section"], "domain": m["domain"].lower(),
                "label": label, "split": m["split"].lower()}
    m = _NAME_EVAL.match(name)
    if m:
        return {"machine_id": m["section"], "section": m["section"], "domain": "", "label": "unknown", "split": ""}
    return None


def parse_attributes(path: str | os.PathLike) -> str:
    """The attribute tail of a DCASE 2021-2025 clip name: ``"vel_6_loc_A"``, ``"noAttribute"``, or ``""`` (none).

    2020 names and bare evaluation names (``section_00_0000.wav``) have no attributes.
    """
    name = Path(path).name
    m = _TAIL_2021.match(name) or _TAIL_EVAL.match(name)
    return m["tail"] if m else ""


def expand_wavs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The clips of ``paths``: files as given, folders expanded to the ``.wav`` files below them (sorted)."""
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() == ".wav" and f.is_file())
            if not found:
                raise DatasetLayoutError(f"{p}: no .wav files in this folder (or below it); give a folder of clips")
            files.extend(found)
        else:
            files.append(p)
    return files


def machine_of_path(path: str | os.PathLike) -> tuple[str | None, str | None]:
    """Machine type (the folder above train/ or test/) and ID (from the DCASE name) of a clip path."""
    p = Path(path)
    parsed = parse_name(p)
    mid = parsed["machine_id"] if parsed else None
    if mid is None:
        m = re.search(r"id_(\d\d)", p.name)
        mid = m.group(1) if m else None
    mtype = p.parent.parent.name if p.parent.name.lower() in ("train", "test") and p.parent.parent.name else None
    return mtype, mid


class DatasetLayoutError(ValueError):
    """A data folder (or a file in it) that no supported layout describes; the message is one line."""
