"""A data folder as a table: the DCASE 2020 / 2021-2025 layouts, ground truth, counts and fine-tuning classes."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from rcmae.data.names import DatasetLayoutError as DatasetLayoutError
from rcmae.data.names import parse_attributes, parse_name

COLUMNS = ["path", "machine_type", "machine_id", "section", "domain", "split", "label", "dataset", "attributes"]
SPLITS = ("train", "test")
LABELS = ("normal", "anomaly", "unknown")

# Folder name -> split. DCASE 2021 keeps its test clips in source_test / target_test.
_SPLIT_DIRS = {"train": "train", "test": "test", "source_test": "test", "target_test": "test"}
# Folder names that are levels of a DCASE archive, never a machine type.
_LEVEL_DIRS = {"dev_data", "eval_data", "raw"}
_DATASET_DIRS = {"dev_data": "dev", "eval_data": "eval"}
_GT_NAME = re.compile(
    r"^ground_truth_(?P<type>.+)_section_(?P<section>\d{2})_(?:(?P<domain>source|target)_)?test\.csv$", re.IGNORECASE
)
_GT_KINDS = {"ground_truth_data": "label", "ground_truth_domain": "domain", "ground_truth_attributes": "attributes"}

_PATTERN_2020 = "dev_data/<type>/{train,test}/{normal,anomaly}_id_00_00000000.wav"
_PATTERN_2021 = "<type>/{train,test}/section_00_{source,target}_{train,test}_{normal,anomaly}_0000.wav"


def _layout_error(root: Path, rel: str, problem: str, name: str) -> DatasetLayoutError:
    pattern = _PATTERN_2021 if name.lower().startswith("section") else _PATTERN_2020
    return DatasetLayoutError(
        f"{root}: {rel}: {problem}; expected a path like {pattern} (rename/move the file, "
        "or index with strict=False / `rcmae index --skip-unmatched` to skip it)"
    )


def _dataset_of(dirs: Sequence[str]) -> str:
    for part in reversed(dirs):
        if part.lower() in _DATASET_DIRS:
            return _DATASET_DIRS[part.lower()]
    return ""


def _index_row(file: Path) -> tuple[dict | None, str]:
    """One index row for ``file``, or ``(None, problem)`` when it fits no layout."""
    # The root itself may be a split folder (root = .../fan/train).
    split = _SPLIT_DIRS.get(file.parent.name.lower())
    if split is None:
        return None, "is not inside a train/ or test/ folder"
    type_dir = file.parent.parent
    if type_dir.name.lower() in _LEVEL_DIRS or not type_dir.name:
        return None, f"has no machine-type folder above {file.parent.name}/"
    parsed = parse_name(file)
    if parsed is None:
        return None, "file name matches no DCASE pattern"
    if parsed["split"] and parsed["split"] != split:
        return None, f"name says {parsed['split']!r} but the file is in a {file.parent.name}/ folder"
    row = {
        "path": os.path.abspath(file),
        "machine_type": type_dir.name,
        "machine_id": parsed["machine_id"],
        "section": parsed["section"],
        "domain": parsed["domain"],
        "split": split,
        "label": parsed["label"],
        # The dev/eval level may be above the root the user gave (e.g. root = .../dev_data/fan).
        "dataset": _dataset_of(file.parent.parts),
        "attributes": parse_attributes(file),
    }
    return row, ""


def index_dataset(root: str | os.PathLike, strict: bool = True,
                  ground_truth: str | os.PathLike | None = None) -> pd.DataFrame:
    """Index every ``.wav`` clip under ``root`` into one table (see the module docstring for layouts).

    Args:
        root: a DCASE 2020 / 2021-2025 data folder, a folder of machine-type folders, or one
            machine-type folder. Files that are not ``.wav`` (README, csv) and hidden files are ignored.
        strict: when True (default) a ``.wav`` file that fits no layout raises; when False it is skipped
            and listed in ``index.attrs["skipped"]`` as ``(path, problem)``.
        ground_truth: a folder holding the challenge's ``ground_truth_data`` / ``ground_truth_domain`` /
            ``ground_truth_attributes`` CSVs (e.g. a checkout of the official evaluator), read in addition to
            those found under ``root`` (see :func:`attach_ground_truth`).

    Returns:
        A DataFrame with columns ``COLUMNS`` (all strings), sorted by path; ``attrs["root"]`` holds the root.

    Raises:
        FileNotFoundError: ``root`` does not exist or is not a folder.
        DatasetLayoutError: no clip fits a layout, or (strict) one clip does not.
    """
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data folder not found; pass a folder such as workspace/data/demo")
    files: list[Path] = []
    tables: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(Path(dirpath) / f for f in filenames if f.lower().endswith(".wav") and not f.startswith("."))
        tables.extend(Path(dirpath) / f for f in filenames if _is_side_table(f))
    files.sort(key=str)
    if not files:
        raise DatasetLayoutError(f"{root}: no .wav files found; expected a path like {_PATTERN_2020}")
    rows: list[dict] = []
    skipped: list[tuple[str, str]] = []
    for file in files:
        row, problem = _index_row(file)
        if row is not None:
            rows.append(row)
            continue
        if strict:
            raise _layout_error(root, str(file.relative_to(root)), problem, file.name)
        skipped.append((str(file), problem))
    if not rows:
        first = files[0]
        raise _layout_error(root, str(first.relative_to(root)), skipped[0][1], first.name)
    index = pd.DataFrame(rows, columns=COLUMNS).sort_values("path", kind="stable").reset_index(drop=True)
    _apply_attribute_csvs(index, [t for t in tables if t.name.lower().startswith("attributes_")])
    gt_tables = [t for t in tables if t.name.lower().startswith("ground_truth_")]
    if ground_truth is not None:
        gt_root = Path(ground_truth)
        if not gt_root.is_dir():
            raise FileNotFoundError(f"{gt_root}: ground-truth folder not found; pass the folder that holds "
                                    "ground_truth_data/ (e.g. a checkout of the DCASE evaluator)")
        gt_tables += sorted(p for p in gt_root.rglob("ground_truth_*.csv") if p not in gt_tables)
    n_labelled = attach_ground_truth(index, gt_tables) if gt_tables else 0
    index.attrs["root"] = str(root)
    index.attrs["skipped"] = skipped
    index.attrs["ground_truth"] = n_labelled
    return index


def _is_side_table(name: str) -> bool:
    low = name.lower()
    return low.endswith(".csv") and (low.startswith("attributes_") or low.startswith("ground_truth_"))


def _read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return [[c.strip() for c in row] for row in csv.reader(f) if row and any(c.strip() for c in row)]


def _apply_attribute_csvs(index: pd.DataFrame, tables: Sequence[Path]) -> None:
    """Fill ``attributes`` from ``attributes_XX.csv`` (``file_name,d1p,d1v,...``) for clips whose name has none."""
    if not tables or index.empty:
        return
    by_name: dict[tuple[str, str], str] = {}
    for table in tables:
        rows = _read_rows(table)
        if rows and rows[0] and rows[0][0].lower() == "file_name":
            rows = rows[1:]
        for row in rows:
            parts = Path(row[0].replace("\\", "/")).parts
            if len(parts) < 1:
                continue
            # file_name is "<type>/<split>/<clip>.wav"; without the type the table's folder names it.
            mtype = parts[-3] if len(parts) >= 3 else table.parent.name
            pairs = [v for v in row[1:] if v != ""]
            by_name[(mtype, parts[-1])] = "_".join(pairs)
    names = index["path"].map(lambda p: Path(p).name)
    for i in index.index[index["attributes"] == ""]:
        value = by_name.get((index.at[i, "machine_type"], names[i]))
        if value:
            index.at[i, "attributes"] = value


def attach_ground_truth(index: pd.DataFrame, tables: Sequence[str | os.PathLike]) -> int:
    """Set ``label``, ``domain`` and ``attributes`` of evaluation clips from the challenge's ground-truth CSVs.

    Each table is ``ground_truth_<type>_section_<ss>_test.csv`` (2022+) or ``..._{source,target}_test.csv``
    (2021); its folder says what it holds: ``ground_truth_data`` (``name,0|1``: normal/anomaly),
    ``ground_truth_domain`` (``name,0|1``: source/target) or ``ground_truth_attributes`` (``name,<dev-style name>``:
    the attributes, domain and label of the clip). A table in another folder is read as ``ground_truth_data``
    when its second column holds only 0/1. Clips are matched by machine type and file name; the index is
    changed in place.

    Returns:
        The number of index rows whose label the tables set.

    Raises:
        DatasetLayoutError: a ground-truth value that is not 0/1 (the message names the file and line).
    """
    if index.empty:
        return 0
    keys = {(t, Path(p).name): i for i, (t, p) in enumerate(zip(index["machine_type"], index["path"], strict=True))}
    labelled = set()
    for table in map(Path, tables):
        m = _GT_NAME.match(table.name)
        if m is None:
            continue
        mtype = m["type"]
        rows = _read_rows(table)
        kind = _GT_KINDS.get(table.parent.name.lower())
        if kind is None:
            kind = "label" if rows and all(len(r) >= 2 and r[1] in ("0", "1") for r in rows) else "attributes"
        for line, row in enumerate(rows, start=1):
            if len(row) < 2:
                raise DatasetLayoutError(f"{table}: line {line}: expected 'name,value'; fix or remove the line")
            pos = keys.get((mtype, row[0]))
            if pos is None:
                continue
            if kind == "attributes":
                full = row[1] if row[1].lower().endswith(".wav") else row[1] + ".wav"
                parsed = parse_name(full)
                if parsed is None:
                    continue
                index.iat[pos, index.columns.get_loc("attributes")] = parse_attributes(full)
                if parsed["domain"]:
                    index.iat[pos, index.columns.get_loc("domain")] = parsed["domain"]
                if parsed["label"] in ("normal", "anomaly") and index.iat[pos, index.columns.get_loc("label")] \
                        == "unknown":
                    index.iat[pos, index.columns.get_loc("label")] = parsed["label"]
                    labelled.add(pos)
                continue
            if row[1] not in ("0", "1"):
                raise DatasetLayoutError(f"{table}: line {line}: value {row[1]!r} must be 0 or 1; fix the file")
            if kind == "label":
                index.iat[pos, index.columns.get_loc("label")] = ("normal", "anomaly")[int(row[1])]
                labelled.add(pos)
            else:
                index.iat[pos, index.columns.get_loc("domain")] = ("source", "target")[int(row[1])]
        if m["domain"]:  # 2021: the file itself names the domain
            for row in rows:
                pos = keys.get((mtype, row[0]))
                if pos is not None and not index.iat[pos, index.columns.get_loc("domain")]:
                    index.iat[pos, index.columns.get_loc("domain")] = m["domain"].lower()
    return len(labelled)


def _check_index(index: pd.DataFrame, columns: Iterable[str]) -> None:
    missing = [c for c in columns if c not in index.columns]
    if missing:
        raise ValueError(f"index table lacks column(s) {missing}; build it with rcmae.data.index_dataset")


def split_index(index: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of one split (``"train"`` or ``"test"``), re-numbered from 0."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    _check_index(index, ["split"])
    return index[index["split"] == split].reset_index(drop=True)


def count_table(index: pd.DataFrame) -> pd.DataFrame:
    """Clip counts per machine type, ID, split and label (train before test; normal, anomaly, unknown)."""
    keys = ["machine_type", "machine_id", "split", "label"]
    _check_index(index, keys)
    counts = index.groupby(keys, sort=False).size().rename("clips").reset_index()
    order = {
        "split": {s: i for i, s in enumerate(SPLITS)},
        "label": {s: i for i, s in enumerate(LABELS)},
    }
    counts = counts.sort_values(
        keys, key=lambda col: col.map(order[col.name]) if col.name in order else col, kind="stable"
    )
    counts["clips"] = counts["clips"].astype(int)
    return counts.reset_index(drop=True)


def has_domains(index: pd.DataFrame) -> bool:
    """True for DCASE 2021-2025 data: some clip has a section (and so a source/target domain)."""
    return "section" in index.columns and bool(index["section"].astype(str).str.len().gt(0).any())


def domain_counts(index: pd.DataFrame) -> pd.DataFrame:
    """Clip counts per machine type, section, domain, split and label: the DCASE 2021-2025 view of the data.

    One row per combination present, with columns ``machine_type, section, domain, split, label, clips``;
    an evaluation clip whose domain is unknown (no ground truth) has domain ``"?"``.
    """
    keys = ["machine_type", "section", "domain", "split", "label"]
    _check_index(index, keys)
    frame = index.assign(domain=index["domain"].replace("", "?"))
    counts = frame.groupby(keys, sort=False).size().rename("clips").reset_index()
    order = {"split": {s: i for i, s in enumerate(SPLITS)}, "label": {s: i for i, s in enumerate(LABELS)},
             "domain": {"source": 0, "target": 1, "?": 2}}
    counts = counts.sort_values(
        keys, key=lambda col: col.map(order[col.name]) if col.name in order else col, kind="stable"
    )
    counts["clips"] = counts["clips"].astype(int)
    return counts.reset_index(drop=True)


def attribute_classes(index: pd.DataFrame) -> list[tuple[str, str]]:
    """Sorted ``(machine_type, "<section>_<attributes>")`` pairs over the training rows.

    Where a data set has no machine IDs (DCASE 2023+: one section per machine type), the section and the
    attribute values are the only labels a classifier can learn; this is that class set. A clip without
    attributes ("noAttribute", or none) keeps its section alone as its class.
    """
    _check_index(index, ["machine_type", "section", "attributes", "split"])
    train = index[index["split"] == "train"]
    return sorted({(str(t), class_name(s, a)) for t, s, a in
                   zip(train["machine_type"], train["section"], train["attributes"], strict=True)})


def class_name(section: str, attributes: str) -> str:
    """The attribute class of a clip: ``"00_vel_6_loc_A"``; the section alone without attributes."""
    attributes = str(attributes or "")
    if not attributes or attributes.lower() == "noattribute":
        return str(section)
    return f"{section}_{attributes}"


def id_classes(index: pd.DataFrame) -> list[tuple[str, str]]:
    """Sorted ``(machine_type, machine_id)`` pairs over the training rows: the fine-tuning classes."""
    _check_index(index, ["machine_type", "machine_id", "split"])
    train = index[index["split"] == "train"]
    return sorted({(str(t), str(i)) for t, i in zip(train["machine_type"], train["machine_id"], strict=True)})


# finetune.classes: which classes fine-tuning learns (docs/training.md, "Fine-tuning classes").
CLASS_MODES = ("auto", "id", "section", "attribute")


def class_kinds(index: pd.DataFrame, mode: str = "auto") -> dict[str, str]:
    """Per machine type: ``"id"`` (one class per machine ID / section) or ``"attribute"`` (section + attributes).

    Args:
        index: An index table (its training rows decide).
        mode: ``"id"`` and ``"section"``: every type learns its units (the machine IDs of DCASE 2020, the sections
            of 2021+; ``"section"`` needs sections); ``"attribute"``: every type learns section + attribute
            classes (needs sections); ``"auto"``: a type with more than one machine ID / section learns those,
            a 2021+ type with a single section (DCASE 2023+) learns its section + attribute classes.

    Raises:
        ValueError: an unknown mode, or ``section`` / ``attribute`` on data without sections (DCASE 2020).
    """
    if mode not in CLASS_MODES:
        raise ValueError(f"finetune.classes={mode!r}: choose one of {', '.join(CLASS_MODES)}")
    _check_index(index, ["machine_type", "machine_id", "section", "split"])
    train = index[index["split"] == "train"]
    kinds = {}
    for mtype, rows in train.groupby("machine_type", sort=True):
        sectioned = bool(rows["section"].astype(str).str.len().gt(0).all())
        if mode in ("section", "attribute") and not sectioned:
            raise ValueError(f"finetune.classes={mode}: machine type {mtype} has no sections (DCASE 2020 machine "
                             "IDs); use finetune.classes=id or auto")
        single = rows["machine_id"].astype(str).nunique() == 1
        attribute = mode == "attribute" or (mode == "auto" and sectioned and single)
        kinds[str(mtype)] = "attribute" if attribute else "id"
    return kinds


def row_classes(rows: pd.DataFrame, kinds: dict[str, str]) -> list[tuple[str, str]]:
    """The fine-tuning class ``(machine_type, name)`` of each row: its machine ID / section, or
    :func:`class_name` of its section and attributes where its type's kind (:func:`class_kinds`) is ``attribute``.
    """
    _check_index(rows, ["machine_type", "machine_id", "attributes"])
    out = []
    for t, i, a in zip(rows["machine_type"], rows["machine_id"], rows["attributes"], strict=True):
        t, i = str(t), str(i)
        out.append((t, class_name(i, a) if kinds.get(t) == "attribute" else i))
    return out


def finetune_classes(index: pd.DataFrame, mode: str = "auto") -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The fine-tuning classes of a data set and the unit each belongs to.

    Returns:
        ``(classes, units)``: sorted ``(machine_type, name)`` classes over the training rows (:func:`row_classes`
        under :func:`class_kinds` of ``mode``) and, in the same order, each class's ``(machine_type, machine_id)``.
        On DCASE 2020 data (and with ``mode="id"``) the classes are :func:`id_classes` and each is its own unit.
    """
    kinds = class_kinds(index, mode)
    train = index[index["split"] == "train"]
    pairs = sorted(set(zip(row_classes(train, kinds), zip(map(str, train["machine_type"]),
                                                         map(str, train["machine_id"]), strict=True),
                           strict=True)))
    return [c for c, _ in pairs], [u for _, u in pairs]
