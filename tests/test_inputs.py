"""Bad test sets and odd clips: one clear line, earlier results kept, nothing silently padded or cut."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pandas as pd
import pytest

from rcmae import cli
from rcmae.inputs import check_labelled_test


def _without(data: Path, dest: Path, prefix: str) -> Path:
    shutil.copytree(data, dest)
    for wav in dest.rglob(f"test/{prefix}_*.wav"):
        wav.unlink()
    return dest


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _err_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.strip().splitlines() if "clip/s" not in ln and "it/s" not in ln]


def test_check_labelled_test_by_hand():
    both = pd.DataFrame({"machine_type": ["fan"] * 2, "machine_id": ["00"] * 2, "label": ["normal", "anomaly"]})
    check_labelled_test(both, "d")
    with pytest.raises(ValueError, match="no normal clips"):
        check_labelled_test(both.iloc[1:], "d")
    with pytest.raises(ValueError, match="no anomalous clips"):
        check_labelled_test(both.iloc[:1], "d")
    split = pd.DataFrame({"machine_type": ["fan", "valve"], "machine_id": ["00", "00"],
                          "label": ["normal", "anomaly"]})
    with pytest.raises(ValueError, match="no machine ID has both"):
        check_labelled_test(split, "d")


@pytest.mark.parametrize("drop", ["normal", "anomaly"])
def test_evaluate_one_line_and_keeps_earlier_results(short_run, tmp_path, capsys, drop):
    data, run0 = short_run
    run = tmp_path / "run"
    shutil.copytree(run0, run)
    assert cli.main(["evaluate", "--run", str(run)]) == 0
    before = _digest(run / "eval")
    assert before
    capsys.readouterr()
    bad = _without(data, tmp_path / "bad", drop)
    assert cli.main(["evaluate", "--run", str(run), "--data", str(bad)]) == 2
    err = _err_lines(capsys.readouterr().err)
    assert len(err) == 1 and str(bad) in err[0] and ("no normal" if drop == "normal" else "no anomalous") in err[0]
    assert _digest(run / "eval") == before


@pytest.mark.parametrize("baseline", ["knn", "ae"])
def test_baseline_without_normals_is_one_line(short_run, tmp_path, capsys, baseline):
    data, _ = short_run
    bad = _without(data, tmp_path / "bad", "normal")
    out = tmp_path / "out"
    assert cli.main(["baseline", baseline, "--data", str(bad), "--out", str(out)]) == 2
    err = _err_lines(capsys.readouterr().err)
    assert len(err) == 1 and "no normal clips" in err[0]
    assert not (out / "results.json").exists()
