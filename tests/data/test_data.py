"""rcmae.data: layouts -> index table, count table, ID classes, the batch loader and `rcmae index`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from rcmae import cli
from rcmae.data.index import (
    COLUMNS,
    DatasetLayoutError,
    attribute_classes,
    count_table,
    id_classes,
    index_dataset,
    split_index,
)
from rcmae.data.index import domain_counts as data_domain_counts
from rcmae.data.loading import load_waveforms
from rcmae.data.names import parse_name


def _touch(root: Path, *rels: str) -> None:
    """Indexing reads names only, so empty files stand in for clips."""
    for rel in rels:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def _expected(root: Path, rows: list[tuple]) -> pd.DataFrame:
    """rows: (rel path, machine_type, machine_id, section, domain, split, label, dataset[, attributes])."""
    frame = pd.DataFrame(
        [(os.path.abspath(root / r[0]), *r[1:], *([""] if len(r) == 8 else [])) for r in rows], columns=COLUMNS
    )
    return frame.sort_values("path").reset_index(drop=True)


def _assert_index(index: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(index.columns) == COLUMNS
    assert index["path"].tolist() == sorted(index["path"].tolist())
    assert index.astype(object).values.tolist() == expected.astype(object).values.tolist()


def test_dcase2020_dev_and_eval(tmp_path):
    _touch(
        tmp_path,
        "dev_data/fan/train/normal_id_00_00000000.wav",
        "dev_data/fan/train/normal_id_02_00000001.wav",
        "dev_data/fan/test/anomaly_id_00_00000000.wav",
        "dev_data/fan/test/normal_id_02_00000000.wav",
        "dev_data/ToyCar/test/anomaly_id_01_00000007.wav",
        "eval_data/fan/train/normal_id_01_00000000.wav",
        "eval_data/fan/test/id_01_00000003.wav",
        "README.md",
        "dev_data/fan/attributes.csv",
        "dev_data/fan/train/._normal_id_00_00000000.wav",  # macOS metadata: hidden, ignored
    )
    index = index_dataset(tmp_path)
    _assert_index(index, _expected(tmp_path, [
        ("dev_data/ToyCar/test/anomaly_id_01_00000007.wav", "ToyCar", "01", "", "", "test", "anomaly", "dev"),
        ("dev_data/fan/test/anomaly_id_00_00000000.wav", "fan", "00", "", "", "test", "anomaly", "dev"),
        ("dev_data/fan/test/normal_id_02_00000000.wav", "fan", "02", "", "", "test", "normal", "dev"),
        ("dev_data/fan/train/normal_id_00_00000000.wav", "fan", "00", "", "", "train", "normal", "dev"),
        ("dev_data/fan/train/normal_id_02_00000001.wav", "fan", "02", "", "", "train", "normal", "dev"),
        ("eval_data/fan/test/id_01_00000003.wav", "fan", "01", "", "", "test", "unknown", "eval"),
        ("eval_data/fan/train/normal_id_01_00000000.wav", "fan", "01", "", "", "train", "normal", "eval"),
    ]))
    assert index.attrs["skipped"] == []
    assert id_classes(index) == [("fan", "00"), ("fan", "01"), ("fan", "02")]


def test_types_without_dev_level_single_type_and_split_root(tmp_path):
    _touch(tmp_path, "pump/train/normal_id_04_00000000.wav", "pump/test/anomaly_id_06_00000001.wav",
           "valve/test/normal_id_00_00000002.wav")
    expected_all = _expected(tmp_path, [
        ("pump/test/anomaly_id_06_00000001.wav", "pump", "06", "", "", "test", "anomaly", ""),
        ("pump/train/normal_id_04_00000000.wav", "pump", "04", "", "", "train", "normal", ""),
        ("valve/test/normal_id_00_00000002.wav", "valve", "00", "", "", "test", "normal", ""),
    ])
    _assert_index(index_dataset(tmp_path), expected_all)
    # A folder that is one machine type: the type is the folder's own name.
    _assert_index(index_dataset(tmp_path / "pump"), expected_all.iloc[:2].reset_index(drop=True))
    # Even a split folder on its own.
    _assert_index(index_dataset(tmp_path / "pump" / "train"), expected_all.iloc[[1]].reset_index(drop=True))
    # The dev_data level above the root still names the data set.
    _touch(tmp_path, "dev_data/slider/test/normal_id_00_00000000.wav")
    (row,) = index_dataset(tmp_path / "dev_data" / "slider").itertuples()
    assert (row.machine_type, row.dataset) == ("slider", "dev")


def test_dcase2021_to_2025_names(tmp_path):
    _touch(
        tmp_path,
        # 2021: source_test / target_test folders, eval names with domain but no label
        "dev_data/gearbox/train/section_00_source_train_normal_0000_0_g_25_mm_2000_mV_none.wav",
        "dev_data/gearbox/target_test/section_01_target_test_anomaly_0012.wav",
        "eval_data/gearbox/source_test/section_03_source_test_0199.wav",
        # 2022: attribute tails
        "dev_data/bearing/test/section_02_target_test_normal_0001_vel_6_loc_A.wav",
        # 2023+: dev_data/raw/<type>, noAttribute tails, unlabelled eval names
        "dev_data/raw/ToothBrush/train/section_00_target_train_normal_0009_noAttribute.wav",
        "eval_data/raw/ToothBrush/test/section_00_0042.wav",
        "eval_data/raw/3DPrinter/test/section_00_0001_extra.wav",
    )
    index = index_dataset(tmp_path)
    _assert_index(index, _expected(tmp_path, [
        ("dev_data/bearing/test/section_02_target_test_normal_0001_vel_6_loc_A.wav",
         "bearing", "02", "02", "target", "test", "normal", "dev", "vel_6_loc_A"),
        ("dev_data/gearbox/target_test/section_01_target_test_anomaly_0012.wav",
         "gearbox", "01", "01", "target", "test", "anomaly", "dev"),
        ("dev_data/gearbox/train/section_00_source_train_normal_0000_0_g_25_mm_2000_mV_none.wav",
         "gearbox", "00", "00", "source", "train", "normal", "dev", "0_g_25_mm_2000_mV_none"),
        ("dev_data/raw/ToothBrush/train/section_00_target_train_normal_0009_noAttribute.wav",
         "ToothBrush", "00", "00", "target", "train", "normal", "dev", "noAttribute"),
        ("eval_data/gearbox/source_test/section_03_source_test_0199.wav",
         "gearbox", "03", "03", "source", "test", "unknown", "eval"),
        ("eval_data/raw/3DPrinter/test/section_00_0001_extra.wav",
         "3DPrinter", "00", "00", "", "test", "unknown", "eval", "extra"),
        ("eval_data/raw/ToothBrush/test/section_00_0042.wav",
         "ToothBrush", "00", "00", "", "test", "unknown", "eval"),
    ]))
    assert id_classes(index) == [("ToothBrush", "00"), ("gearbox", "00")]


def test_parse_name_cases():
    assert parse_name("x/anomaly_id_04_00000123.wav") == {
        "machine_id": "04", "section": "", "domain": "", "label": "anomaly", "split": ""}
    assert parse_name("id_05_00000000.wav")["label"] == "unknown"
    assert parse_name("section_01_target_train_normal_0002_speed_3.wav") == {
        "machine_id": "01", "section": "01", "domain": "target", "label": "normal", "split": "train"}
    assert parse_name("section_00_0000.wav") == {
        "machine_id": "00", "section": "00", "domain": "", "label": "unknown", "split": ""}
    for bad in ("recording.wav", "normal_id_0_00000000.wav", "section_00_source_val_normal_0000.wav",
                "normal_id_00_00000000.flac", "abnormal_id_00_00000000.wav"):
        assert parse_name(bad) is None, bad


def _message(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_layout_errors_name_file_and_pattern(tmp_path):
    _touch(tmp_path, "fan/train/normal_id_00_00000000.wav", "fan/train/recording_1.wav")
    with pytest.raises(DatasetLayoutError) as err:
        index_dataset(tmp_path)
    message = _message(err)
    assert "fan/train/recording_1.wav: file name matches no DCASE pattern" in message
    assert "dev_data/<type>/{train,test}/{normal,anomaly}_id_00_00000000.wav" in message
    # strict=False skips and lists the file instead.
    index = index_dataset(tmp_path, strict=False)
    assert index["path"].tolist() == [os.path.abspath(tmp_path / "fan/train/normal_id_00_00000000.wav")]
    assert index.attrs["skipped"] == [(str(tmp_path / "fan/train/recording_1.wav"),
                                       "file name matches no DCASE pattern")]

    loose = tmp_path / "loose"
    _touch(loose, "section_00_source_train_normal_0000.wav")
    with pytest.raises(DatasetLayoutError) as err:
        index_dataset(loose)
    message = _message(err)
    assert "section_00_source_train_normal_0000.wav: is not inside a train/ or test/ folder" in message
    assert "<type>/{train,test}/section_00_{source,target}_{train,test}_{normal,anomaly}_0000.wav" in message

    swapped = tmp_path / "swapped"
    _touch(swapped, "fan/train/section_00_source_test_anomaly_0000.wav")
    with pytest.raises(DatasetLayoutError, match="name says 'test' but the file is in a train/ folder"):
        index_dataset(swapped)

    no_type = tmp_path / "notype"
    _touch(no_type, "dev_data/train/normal_id_00_00000000.wav")
    with pytest.raises(DatasetLayoutError, match="has no machine-type folder above train/"):
        index_dataset(no_type)

    docs = tmp_path / "docs"
    _touch(docs, "README.md", "labels.csv")
    with pytest.raises(DatasetLayoutError, match="no .wav files found"):
        index_dataset(docs)
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        index_dataset(tmp_path / "absent")


def test_count_table_and_split_index_on_tiny_dcase(tiny_dcase):
    index = index_dataset(tiny_dcase)
    assert len(index) == 2 * 2 * (6 + 4 + 4)
    assert set(index["dataset"]) == {"dev"}
    counts = count_table(index)
    # Hand-built expectation: per ID 6 train normals, then 4 normal + 4 anomalous test clips.
    expected = []
    for machine_type in ("fan", "valve"):
        for machine_id in ("00", "02"):
            expected += [(machine_type, machine_id, "train", "normal", 6),
                         (machine_type, machine_id, "test", "normal", 4),
                         (machine_type, machine_id, "test", "anomaly", 4)]
    assert list(counts.columns) == ["machine_type", "machine_id", "split", "label", "clips"]
    assert counts.astype(object).values.tolist() == [list(r) for r in expected]
    # The counts agree with a plain loop over the index.
    for row in counts.itertuples():
        n = sum((r.machine_type, r.machine_id, r.split, r.label) == row[1:5] for r in index.itertuples())
        assert n == row.clips
    assert id_classes(index) == [("fan", "00"), ("fan", "02"), ("valve", "00"), ("valve", "02")]
    train = split_index(index, "train")
    assert len(train) == 24 and set(train["split"]) == {"train"} and train.index.tolist() == list(range(24))
    assert len(split_index(index, "test")) == 32
    with pytest.raises(ValueError, match="split must be one of"):
        split_index(index, "valid")
    with pytest.raises(ValueError, match="lacks column"):
        count_table(index.drop(columns=["label"]))


def test_load_waveforms_skips_and_reports_bad_files(tiny_dcase, tmp_path):
    good = sorted((tiny_dcase / "dev_data" / "fan" / "test").glob("*.wav"))[:3]
    corrupt = tmp_path / "anomaly_id_00_00000099.wav"
    corrupt.write_bytes(b"RIFF....WAVEfmt garbage")
    silent = tmp_path / "normal_id_00_00000099.wav"
    sf.write(silent, np.zeros(16000, dtype=np.int16), 16000, subtype="PCM_16")
    missing = tmp_path / "normal_id_00_00000100.wav"
    paths = [good[0], corrupt, good[1], silent, missing, good[2]]
    waves, kept, report = load_waveforms(paths, duration=2.0)
    assert kept == [str(p) for p in (good[0], good[1], good[2])]
    assert waves.shape == (3, 32000) and waves.dtype == np.float32
    for row, path in zip(waves, kept, strict=True):
        raw = sf.read(path, dtype="int16")[0][:32000]
        np.testing.assert_array_equal(row, (raw / 32768.0).astype(np.float32))
    assert report.requested == 6 and report.loaded == 3
    assert [p for p, _ in report.skipped] == [str(corrupt), str(silent), str(missing)]
    lines = report.summary().splitlines()
    assert lines[0] == "loaded 3 of 6 clips; skipped 3:"
    assert len(lines) == 4
    assert lines[1].startswith(f"  skipped {corrupt}: not a readable audio file")
    assert lines[2].startswith(f"  skipped {silent}: channel 0 is all zeros")
    assert lines[3].startswith(f"  skipped {missing}: file not found")
    clean = load_waveforms(good, duration=0.5)[2]
    assert clean.summary() == "loaded 3 of 3 clips" and clean.skipped == []
    with pytest.raises(ValueError, match="fixed duration"):
        load_waveforms(good, duration=None)


def test_cli_index_prints_counts_and_errors(tiny_dcase, tmp_path, capsys):
    assert cli.main(["index", str(tiny_dcase), "--csv", str(tmp_path / "index.csv")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["machine_type", "machine_id", "split", "label", "clips"]
    assert out[1].split() == ["fan", "00", "train", "normal", "6"]
    assert out[3].split() == ["fan", "00", "test", "anomaly", "4"]
    assert out[-1] == "56 clips, 2 machine types, 4 train ID classes"
    written = pd.read_csv(tmp_path / "index.csv", dtype=str, keep_default_na=False)
    assert written["path"].tolist() == index_dataset(tiny_dcase)["path"].tolist()

    bad = tmp_path / "bad"
    shutil.copytree(tiny_dcase / "dev_data" / "fan", bad / "fan")
    (bad / "fan" / "train" / "take_1.wav").touch()
    assert cli.main(["index", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rcmae index: error: ") and "fan/train/take_1.wav" in err and "\n" not in err
    assert cli.main(["index", str(bad), "--skip-unmatched"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == "28 clips, 1 machine types, 2 train ID classes"
    assert "take_1.wav: file name matches no DCASE pattern" in captured.err


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_dcase2023_eval_ground_truth_attributes_and_domain_counts(tmp_path, capsys):
    """2023-style eval set: bare names get label/domain/attributes from the evaluator's three CSV folders."""
    root = tmp_path / "data"
    _touch(root,
           "eval_data/raw/ToyTank/train/section_00_source_train_normal_0000_noAttribute.wav",
           "eval_data/raw/ToyTank/train/section_00_target_train_normal_0000.wav",
           "eval_data/raw/ToyTank/test/section_00_0000.wav",
           "eval_data/raw/ToyTank/test/section_00_0001.wav",
           "eval_data/raw/ToyTank/test/section_00_0002.wav",
           "eval_data/raw/ToyTank/test/section_00_0003.wav")
    # attributes_00.csv fills the attributes of a clip whose name carries none.
    _write(root / "eval_data/raw/ToyTank/attributes_00.csv",
           "file_name,d1p,d1v,d2p,d2v\n"
           "ToyTank/train/section_00_target_train_normal_0000.wav,spd,3,mic,2\n")
    gt = tmp_path / "evaluator"
    _write(gt / "ground_truth_data/ground_truth_ToyTank_section_00_test.csv",
           "section_00_0000.wav,1\nsection_00_0001.wav,0\nsection_00_0002.wav,0\nsection_00_0003.wav,1\n")
    _write(gt / "ground_truth_domain/ground_truth_ToyTank_section_00_test.csv",
           "section_00_0000.wav,1\nsection_00_0001.wav,1\nsection_00_0002.wav,0\nsection_00_0003.wav,0\n")
    _write(gt / "ground_truth_attributes/ground_truth_ToyTank_section_00_test.csv",
           "section_00_0000.wav,section_00_target_test_anomaly_0012_car_C1_spd_1\n"
           "section_00_0001.wav,section_00_target_test_normal_0031_car_C1_spd_1\n"
           "section_00_0002.wav,section_00_source_test_normal_0031_noAttribute\n"
           "section_00_0003.wav,section_00_source_test_anomaly_0002_car_B2_spd_2\n")
    bare = index_dataset(root)
    assert set(bare.loc[bare["split"] == "test", "label"]) == {"unknown"}
    assert bare.attrs["ground_truth"] == 0
    index = index_dataset(root, ground_truth=gt)
    assert index.attrs["ground_truth"] == 4
    test = index[index["split"] == "test"].set_index(index.loc[index["split"] == "test", "path"].map(
        lambda p: Path(p).name))
    assert test.loc[["section_00_0000.wav", "section_00_0001.wav", "section_00_0002.wav",
                     "section_00_0003.wav"], ["label", "domain", "attributes"]].values.tolist() == [
        ["anomaly", "target", "car_C1_spd_1"], ["normal", "target", "car_C1_spd_1"],
        ["normal", "source", "noAttribute"], ["anomaly", "source", "car_B2_spd_2"]]
    train = index[index["split"] == "train"]
    assert train["attributes"].tolist() == ["noAttribute", "spd_3_mic_2"]
    # The same folders placed under the data root are found without the argument.
    shutil.copytree(gt, root / "eval_data" / "evaluator")
    assert index_dataset(root)["label"].tolist() == index["label"].tolist()

    counts = data_domain_counts(index)
    assert counts.values.tolist() == [
        ["ToyTank", "00", "source", "train", "normal", 1], ["ToyTank", "00", "source", "test", "normal", 1],
        ["ToyTank", "00", "source", "test", "anomaly", 1], ["ToyTank", "00", "target", "train", "normal", 1],
        ["ToyTank", "00", "target", "test", "normal", 1], ["ToyTank", "00", "target", "test", "anomaly", 1]]
    assert attribute_classes(index) == [("ToyTank", "00"), ("ToyTank", "00_spd_3_mic_2")]
    assert cli.main(["index", str(root)]) == 0
    out = capsys.readouterr().out
    assert "section domain split   label  clips" in out and "4 clips labelled from ground-truth CSVs" in out

    _write(gt / "ground_truth_data/ground_truth_ToyTank_section_00_test.csv", "section_00_0000.wav,2\n")
    with pytest.raises(DatasetLayoutError, match=r"ground_truth_ToyTank_section_00_test.csv: line 1: value '2'"):
        index_dataset(root, ground_truth=gt)


def test_dcase2021_eval_ground_truth_per_domain_files(tmp_path):
    _touch(tmp_path, "eval_data/gearbox/train/section_03_source_train_normal_0000.wav",
           "eval_data/gearbox/source_test/section_03_source_test_0000.wav",
           "eval_data/gearbox/target_test/section_03_target_test_0000.wav")
    _write(tmp_path / "gt/ground_truth_data/ground_truth_gearbox_section_03_source_test.csv",
           "section_03_source_test_0000.wav,1\n")
    _write(tmp_path / "gt/ground_truth_data/ground_truth_gearbox_section_03_target_test.csv",
           "section_03_target_test_0000.wav,0\n")
    index = index_dataset(tmp_path)
    assert index[["domain", "label"]].values.tolist() == [
        ["source", "anomaly"], ["target", "normal"], ["source", "normal"]]
