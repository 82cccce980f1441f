"""What a DCASE 2020-2025 clip's file name says: machine ID, section, domain, split, label, attributes."""

from __future__ import annotations

import os
import re
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
