"""``rcmae benchmark --suite``: a tiny suite end to end (means recomputed from the score CSVs), aggregation by hand,
the real-slider set builder on a fake sample folder, and skipped sets."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sklearn.metrics import roc_auc_score

from rcmae import cli
from rcmae.data.families import FAMILIES
from rcmae.evaluation import suite
from rcmae.evaluation.loudness import loudness_auc


def _set_average(folder: Path) -> tuple[float, float]:
    """AUC and pAUC of one system on one set from its anomaly_score CSVs alone (labels from the file names)."""
    per_type: dict[str, list[tuple[float, float]]] = {}
    for path in sorted(folder.glob("anomaly_score_*_id_*.csv")):
        machine_type = path.stem[len("anomaly_score_"):].rsplit("_id_", 1)[0]
        rows = list(csv.reader(path.open()))
        y = [int(name.startswith("anomaly")) for name, _ in rows]
        s = [float(v) for _, v in rows]
        assert len(rows) == 4 and sum(y) == 2  # tiny suite: 2 + 2 test clips per ID
        per_type.setdefault(machine_type, []).append((roc_auc_score(y, s), roc_auc_score(y, s, max_fpr=0.1)))
    assert per_type and all(len(v) == 3 for v in per_type.values())
    means = [np.mean(v, axis=0) for v in per_type.values()]
    return float(np.mean([m[0] for m in means])), float(np.mean([m[1] for m in means]))


def test_tiny_suite_end_to_end_mean_equals_the_recomputed_per_set_numbers(tmp_path, capsys):
    out = tmp_path / "suite"
    assert cli.main(["benchmark", "--suite", "tiny", "--out", str(out), "--systems", "knn,ae", "--set", "ae.epochs=1",
                     "--suite-data", str(tmp_path / "data")]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "suite.json").read_text())
    assert [s["name"] for s in report["sets"]] == ["demo", "near-identical"]
    assert all(s["status"] == "ok" for s in report["sets"])
    meta = json.loads((tmp_path / "data" / "near-identical" / "demo.json").read_text())
    assert meta["mode"] == "near-identical" and meta["machine_types"] == ["valve"]
    rows = {r["row"]: r for r in report["rows"]}
    assert set(rows) == {"knn", "ae"}
    for name, row in rows.items():
        per_set = {s: _set_average(out / "sets" / s / "systems" / name / "seed0" / "baseline")
                   for s in ("demo", "near-identical")}
        for s, (auc, pauc) in per_set.items():
            assert row["per_set"][s]["auc"]["mean"] == pytest.approx(auc, abs=1e-12)
            assert row["per_set"][s]["pauc"]["mean"] == pytest.approx(pauc, abs=1e-12)
        mean_auc = (per_set["demo"][0] + per_set["near-identical"][0]) / 2
        mean_pauc = (per_set["demo"][1] + per_set["near-identical"][1]) / 2
        assert row["mean"]["auc"]["mean"] == pytest.approx(mean_auc, abs=1e-12)
        assert row["mean"]["pauc"]["mean"] == pytest.approx(mean_pauc, abs=1e-12)
        assert row["complete"] and row["mean"]["auc"]["n"] == 1
        # The Markdown table carries the same mean, in %.
        line = next(ln for ln in (out / "suite.md").read_text().splitlines() if ln.startswith(f"| {name} |"))
        assert line.split("|")[-3].strip() == f"{mean_auc * 100:.1f}"
    assert "Difference to `ae`" in printed
    # Each set lists what loudness alone gets on it (the check itself is tested in test_loudness.py).
    loud = report["sets"][0]["loudness"]
    assert loud == loudness_auc(tmp_path / "data" / "demo")
    assert (f"loudness alone: AUC {100 * loud['deviation']['auc']:.1f} / pAUC {100 * loud['deviation']['pauc']:.1f}"
            in (out / "suite.md").read_text())
    rows_near_ae = rows["ae"]["per_set"]["near-identical"]["auc"]["mean"]
    # A second call resumes: nothing is rerun, the report is the same.
    before = {r["row"]: r["mean"] for r in report["rows"]}
    suite.run_suite("tiny", out, ["knn", "ae"], overrides=["ae.epochs=1"], data_root=tmp_path / "data",
                    progress=False)
    again = json.loads((out / "suite.json").read_text())
    assert {r["row"]: r["mean"] for r in again["rows"]} == before
    # --report-only runs nothing: the same numbers from the records on disk; a removed run is listed as missing.
    (out / "sets/near-identical/systems/ae/seed0/record.json").unlink()
    suite.run_suite("tiny", out, ["knn", "ae"], data_root=tmp_path / "nowhere", progress=False, report_only=True)
    report = json.loads((out / "suite.json").read_text())
    rows = {r["row"]: r for r in report["rows"]}
    assert rows["knn"]["mean"] == before["knn"] and not rows["ae"]["complete"]
    assert rows["ae"]["per_set"]["demo"]["auc"]["mean"] == pytest.approx(before["ae"]["auc"]["mean"] * 2
                                                                        - rows_near_ae, abs=1e-12)
    assert report["sets"][1]["missing"] == ["ae seed 0"] and "not run: ae seed 0" in (out / "suite.md").read_text()
    assert not (tmp_path / "nowhere").exists()


def _bench(values: dict[str, dict[int, float]]) -> dict:
    """A minimal benchmark.json dict: one system per row, its per-seed average AUC (pAUC = AUC - 0.1)."""
    return {"systems": {row: {"runs": [{"seed": seed, "status": "ok",
                                        "rows": {row: {"average": {"auc": v, "pauc": v - 0.1}}}}
                                       for seed, v in seeds.items()]} for row, seeds in values.items()}}


def test_aggregate_suite_by_hand():
    benches = {"a": _bench({"x": {0: 0.8, 1: 0.6}, "y": {0: 0.5}}),
               "b": _bench({"x": {0: 0.9, 1: 0.7}})}
    rows = {r["row"]: r for r in suite.aggregate_suite(benches)}
    x = rows["x"]
    # Per-seed suite means 0.85 and 0.65: mean 0.75, sample std sqrt(((0.1)^2 + (0.1)^2) / 1).
    assert x["per_seed"][0]["auc"] == pytest.approx(0.85) and x["per_seed"][1]["auc"] == pytest.approx(0.65)
    assert x["mean"]["auc"]["mean"] == pytest.approx(0.75)
    assert x["mean"]["auc"]["std"] == pytest.approx(np.sqrt(0.02))
    assert x["mean"]["pauc"]["mean"] == pytest.approx(0.65)
    assert x["per_set"]["a"]["auc"]["mean"] == pytest.approx(0.7) and x["per_set"]["a"]["auc"]["n"] == 2
    assert x["complete"] and not rows["y"]["complete"] and rows["y"]["sets"] == ["a"]
    # Complete rows come first.
    assert [r["row"] for r in suite.aggregate_suite(benches)] == ["x", "y"]
    assert "\\* not available on every set" in suite.render_suite({
        "suite": "t", "systems": ["x", "y"], "preset": "tiny", "repeat": 2, "overrides": [], "date": "d",
        "wall_s": 1.0, "command": "c", "machine": {"cpu": "cpu", "usable_cores": 2, "gpu": [], "torch": "t"},
        "sets": [{"name": "a", "about": "A", "status": "ok", "wall_s": 1.0, "note": ""},
                 {"name": "b", "about": "B", "status": "ok", "wall_s": 1.0, "note": ""}],
        "rows": suite.aggregate_suite(benches)})


def _fake_samples(root: Path, n_train: int = 6) -> Path:
    rng = np.random.default_rng(0)
    slider = root / "dev_data" / "slider"
    for i in range(n_train):
        (slider / "train").mkdir(parents=True, exist_ok=True)
        sf.write(slider / "train" / f"normal_id_00_{i:08d}.wav", rng.standard_normal(1600) * 0.1, 16000,
                 subtype="PCM_16")
    for label in ("normal", "anomaly"):
        (slider / "test").mkdir(parents=True, exist_ok=True)
        sf.write(slider / "test" / f"{label}_id_00_00000000.wav", rng.standard_normal(1600) * 0.1, 16000,
                 subtype="PCM_16")
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_real_slider_set_is_a_byte_copy_split(tmp_path):
    samples = _fake_samples(tmp_path / "samples")
    out = suite.build_real_slider(samples, tmp_path / "real", n_train=4, seed=0)
    train = sorted((out / "dev_data/slider/train").glob("*.wav"))
    test_normal = sorted((out / "dev_data/slider/test").glob("normal_*.wav"))
    anomaly = sorted((out / "dev_data/slider/test").glob("anomaly_*.wav"))
    assert len(train) == 4 and len(test_normal) == 2 + 1 and len(anomaly) == 1
    src = samples / "dev_data/slider"
    originals = {_sha(p) for p in (src / "train").glob("*.wav")}
    # Every real training clip lands exactly once, in train or among the held-out test normals.
    assert {_sha(p) for p in train} | {_sha(p) for p in test_normal} >= originals
    assert not {_sha(p) for p in train} & {_sha(p) for p in test_normal}
    assert _sha(anomaly[0]) == _sha(src / "test/anomaly_id_00_00000000.wav")
    assert _sha(src / "test/normal_id_00_00000000.wav") in {_sha(p) for p in test_normal}
    marker = json.loads((out / suite.SET_MARKER).read_text())
    for rel, source in marker["files"].items():
        assert _sha(out / rel) == _sha(Path(source))
    with pytest.raises(ValueError, match="n_train=6"):
        suite.build_real_slider(samples, tmp_path / "bad", n_train=6)


def test_missing_real_samples_skip_the_set_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setitem(suite.SUITES, "realonly", (suite.SuiteSet("real-slider", "real", "real-slider",
                                                                  {"n_train": 4}),))
    out = suite.run_suite("realonly", tmp_path / "o", ["knn"], data_root=tmp_path / "d",
                          real_samples=tmp_path / "absent", progress=False)
    report = json.loads((out / "suite.json").read_text())
    assert report["sets"][0]["status"] == "skipped" and "not found" in report["sets"][0]["note"]
    assert report["rows"] == [] and "**skipped**" in (out / "suite.md").read_text()


def test_suite_command_line_errors(tmp_path, capsys):
    assert cli.main(["benchmark", "--suite", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown suite" in capsys.readouterr().err
    assert cli.main(["benchmark", "--suite", "tiny", "--data", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert cli.main(["benchmark", "--suite", "list"]) == 0
    assert "near-identical" in capsys.readouterr().out


def test_the_report_suite_holds_nothing_a_choice_was_made_on():
    """`design` is where defaults are chosen; `report` shares no machine type and no generator seed with it."""
    design, report = suite.SUITES["design"], suite.SUITES["report"]
    assert design is suite.SUITES["default"]  # the suite every default so far was chosen on, under its old name too
    kinds = {e.source for e in report}
    # Real recordings: none on this machine yet (docs/benchmark.md); "families" is the generator written apart
    # from the demo factory (rcmae.data.families).
    assert kinds == {"demo", "families"}
    # No synthetic machine family of a design set (design's only slider is the real DCASE one).
    design_types = {t for e in design if e.source == "demo" for t in e.params["machine_types"]}
    report_types = {t for e in report if e.source == "demo" for t in e.params["machine_types"]}
    family_types = {t for e in report if e.source == "families" for t in e.params.get("machine_types", FAMILIES)}
    assert design_types == {"fan", "gearbox", "valve"} and report_types == {"pump", "slider"}
    assert family_types == {"conveyor", "compressor"}
    assert not {e.params["seed"] for e in design if e.source == "demo"} & {e.params["seed"] for e in report}
    demo_report = [e for e in report if e.source == "demo"]
    assert {e.params.get("mode") for e in demo_report} == {e.params.get("mode") for e in design if e.source == "demo"}
