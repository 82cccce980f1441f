"""Exported bundles score like the run (every exportable scorer), carry what they claim, and load without rcmae."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import assert_close_on_scale

from rcmae import cli
from rcmae.data.audio import load_audio
from rcmae.deploy.bundle import Bundle
from rcmae.deploy.export import ExportError, export_run
from rcmae.deploy.graph.build import BUILDERS, build_graph
from rcmae.deploy.graph.heads import ExportContext
from rcmae.evaluation.metrics import load_results
from rcmae.scorers import SCORERS, Scorer, ScoringError
from rcmae.scorers.detector import Detector


@pytest.fixture(scope="module")
def det(demo_run):
    return Detector.load(demo_run)


def _clips(demo_run: Path) -> list[Path]:
    test = Path(json.loads((demo_run / "run.json").read_text())["data"]) / "fan" / "test"
    # Both labels and every unit: normal and anomalous clips of IDs 00, 02, 04.
    return sorted(test.glob("normal_id_*_00000000.wav")) + sorted(test.glob("anomaly_id_*_00000001.wav"))


ALL_SCORERS = ["idprob", "knn", "recon", "knn_joint", "maha", "recon_topk", "knn_norm", "stats_knn", "stats_maha",
               "frame_pca", "frame_maha", "ensemble"]


@pytest.mark.numeric
@pytest.mark.parametrize(("scorer", "fmt"), [(s, "graph") for s in ALL_SCORERS]
                         + [(s, "torchscript") for s in ("idprob", "recon", "maha", "frame_pca", "ensemble")])
def test_exported_scores_equal_detector_score(demo_run, det, tmp_path, scorer, fmt):
    assert scorer in det.scorers
    bundle = Bundle(export_run(demo_run, tmp_path / scorer, scorer=scorer, examples=0, format=fmt),
                    trust=fmt == "torchscript")
    assert bundle.format == fmt
    refs, gots = [], []
    for clip in _clips(demo_run):
        ref = det.score(clip, scorer=scorer)
        got = bundle.score(load_audio(clip), ref["machine_type"], ref["machine_id"])
        refs.append(ref["score"])
        gots.append(got["score"])
        assert got["threshold"] == ref["threshold"]
        # The same decision, unless the score sits on the threshold to within rounding.
        if abs(ref["score"] - ref["threshold"]) > 1e-5 * max(1.0, abs(ref["threshold"])):
            assert got["decision"] == ref["decision"], clip.name
    # On the scores' scale, not each score's: a z-scored ensemble score can sit near zero (docs/DESIGN.md).
    assert_close_on_scale(gots, refs, rtol=1e-5)


def test_bundle_contents(demo_run, det, demo_bundle):
    meta = json.loads((demo_bundle / "detector.json").read_text())
    scorer = det.default_scorer
    assert meta["version"] == 1 and meta["scorer"] == scorer and meta["format"] == "graph"
    assert meta["sample_rate"] == 16000 and meta["clip_seconds"] == 10.0 and meta["clip_samples"] == 160000
    assert meta["machine_types"] == ["fan"] and meta["machine_ids"] == {"fan": ["00", "02", "04"]}
    assert meta["domain_banks"] is False  # DCASE 2020 names: one reference set per unit
    assert [(u["machine_type"], u["machine_id"]) for u in meta["units"]] == det.classes
    for u in meta["units"]:
        assert u["threshold"] == det.threshold(scorer, u["machine_type"], u["machine_id"])
    results = load_results(demo_run / "eval" / f"results.{scorer}.json")
    assert meta["metrics"]["average"] == results["average"]
    thr = json.loads((demo_bundle / "thresholds.json").read_text())["thresholds"]
    assert thr == {f"{u['machine_type']}/{u['machine_id']}": u["threshold"] for u in meta["units"]}
    with np.load(demo_bundle / "references.npz", allow_pickle=False) as refs:
        assert {k: list(v.shape) for k, v in refs.items()} == meta["references"]
        # The shipped default: the ensemble of stats_maha and frame_pca, z-scored per unit (2 members x 3 units).
        assert scorer == "ensemble" and refs["ensemble_moments"].shape == (2, 3, 2)
        assert refs["stats_maha_means"].shape[0] == 3 and refs["frame_pca_eigvec"].shape[0] == 3
    card = (demo_bundle / "MODEL_CARD.md").read_text()
    assert f"AUC {results['average']['auc']:.3f}" in card and "## Limits" in card
    # Examples: 3 per unit, nearest to the unit's centre; their stored embeddings are the bundle's own.
    bundle = Bundle(demo_bundle)  # a graph bundle is data: no trust needed
    assert len(bundle.examples) == 9
    ex = bundle.examples[0]
    out = bundle.score(load_audio(demo_bundle / ex["file"]), ex["machine_type"], ex["machine_id"])
    np.testing.assert_allclose(out["embedding"], ex["embedding"], rtol=1e-5, atol=1e-6)
    near = bundle.nearest_examples(out["embedding"], ex["machine_type"], ex["machine_id"], k=2)
    assert near[0]["file"] == ex["file"] and near[0]["distance"] == pytest.approx(0.0, abs=1e-6)


def _loader(bundle: Path) -> str:
    text = (bundle / "README.md").read_text()
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


def _run_isolated(tmp_path: Path, code: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    script = tmp_path / "use_bundle.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, "-I", str(script)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_readme_loader_runs_with_torch_alone(demo_run, det, demo_bundle_torchscript, tmp_path):
    clip = _clips(demo_run)[-1]
    wave = load_audio(clip)
    (tmp_path / "clip.f32").write_bytes(wave.astype("<f4").tobytes())
    code = _loader(demo_bundle_torchscript) + f"""
import sys
meta, score = load_detector({str(demo_bundle_torchscript)!r})
wave = torch.frombuffer(bytearray(pathlib.Path("clip.f32").read_bytes()), dtype=torch.float32)
s, thr, anomalous = score(wave, "fan", {_parse_id(clip)!r})
heavy = sorted(m for m in ("rcmae", "lightning", "pytorch_lightning", "numpy_not_needed") if m in sys.modules)
print(json.dumps({{"score": s, "threshold": thr, "anomalous": anomalous, "heavy": heavy}}))
"""
    out = _run_isolated(tmp_path, code)
    ref = det.score(clip)
    assert out["heavy"] == []
    assert out["score"] == pytest.approx(ref["score"], rel=1e-5)
    assert out["threshold"] == ref["threshold"] and out["anomalous"] == (ref["decision"] == "anomaly")


def _parse_id(clip: Path) -> str:
    return re.search(r"id_(\d\d)", clip.name).group(1)


def test_onnx_bundle_scores_like_the_run_with_onnxruntime_alone(demo_run, det, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is in requirements.txt; install it for ONNX export")
    out = tmp_path / "onnx"
    assert cli.main(["export", "--run", str(demo_run), "--out", str(out), "--format", "onnx", "--scorer", "knn",
                     "--examples", "0"]) == 0
    assert (out / "detector.onnx").is_file() and not (out / "detector.pt").exists()
    clip = _clips(demo_run)[0]
    wave = load_audio(clip)
    (tmp_path / "clip.f32").write_bytes(wave.astype("<f4").tobytes())
    code = _loader(out) + f"""
import sys
meta, score = load_detector({str(out)!r})
wave = np.frombuffer(pathlib.Path("clip.f32").read_bytes(), dtype="<f4")
s, thr, anomalous = score(wave, "fan", {_parse_id(clip)!r})
print(json.dumps({{"score": s, "torch": "torch" in sys.modules, "rcmae": "rcmae" in sys.modules}}))
"""
    got = _run_isolated(tmp_path, code)
    assert got["torch"] is False and got["rcmae"] is False
    assert got["score"] == pytest.approx(det.score(clip, scorer="knn")["score"], rel=1e-5)


def test_graph_bundle_rebuilds_the_exported_module_exactly_and_its_readme_loader_scores(demo_run, det, demo_bundle,
                                                                                        tmp_path):
    from rcmae.deploy.bundle import load_graph
    from rcmae.deploy.export import build_module

    # Every tensor of the rebuilt graph equals the one export built, bit for bit, under the same names.
    ref, _ = build_module(det, det.default_scorer)
    got = load_graph(demo_bundle / "graph.json", demo_bundle / "graph.npz")
    want, have = ref.state_dict(), got.state_dict()
    assert sorted(have) == sorted(want)
    for k in want:
        assert have[k].dtype == want[k].dtype and torch.equal(have[k], want[k]), k
    spec = json.loads((demo_bundle / "graph.json").read_text())
    names = {n.get("node") or n.get("configured") for n in spec["nodes"]}
    assert {"ExportedDetector", "LogMel"} <= names and not (demo_bundle / "detector.pt").exists()
    # The README's loader (rcmae rebuilds the graph) scores a clip as the run does.
    clip = _clips(demo_run)[-1]
    (tmp_path / "clip.f32").write_bytes(load_audio(clip).astype("<f4").tobytes())
    code = _loader(demo_bundle) + f"""
import json, pathlib
import numpy as np
meta, score = load_detector({str(demo_bundle)!r})
wave = np.frombuffer(pathlib.Path("clip.f32").read_bytes(), dtype="<f4")
s, thr, anomalous = score(wave, "fan", {_parse_id(clip)!r})
print(json.dumps({{"score": s, "threshold": thr, "anomalous": anomalous}}))
"""
    out = _run_isolated(tmp_path, code)
    want_score = det.score(clip)
    assert out["score"] == pytest.approx(want_score["score"], rel=1e-5, abs=1e-5 * abs(want_score["threshold"]))
    assert out["threshold"] == want_score["threshold"]


class _Frames(Scorer):
    name = "frames"

    def score(self, clips):
        return np.zeros(len(clips))


def test_a_scorer_without_a_graph_is_refused(det, demo_run, tmp_path):
    ctx = ExportContext(det.classes, det.models, 313, None, lambda n: None)
    with pytest.raises(ScoringError, match=r"scorer frames cannot be exported: it has no torch graph"):
        build_graph(_Frames(det.cfg.score, demo_run), ctx)
    # Every scorer family of the workbench has a graph.
    assert set(SCORERS) <= set(BUILDERS)
    # An unknown or unavailable scorer name on the command line: one line, exit 2, no bundle left behind.
    assert cli.main(["export", "--run", str(demo_run), "--out", str(tmp_path / "b"), "--scorer", "nope"]) == 2
    assert not (tmp_path / "b").exists()
    export_run(demo_run, tmp_path / "c", scorer="knn", examples=0)
    with pytest.raises(ExportError, match="exists and is not empty; pass a new folder or --overwrite"):
        export_run(demo_run, tmp_path / "c", scorer="knn")


def _with_ensemble(demo_run: Path, run: Path, members: list[str]) -> Detector:
    shutil.copytree(demo_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["score"]["ensemble"] = members
    cfg["score"]["default_scorer"] = "ensemble"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    det = Detector.load(run)
    assert det.default_scorer == "ensemble"
    return det


@pytest.mark.parametrize("members", [["maha", "stats_maha", "frame_pca"], ["stats_maha", "frame_pca"],
                                     ["knn", "maha"]])
def test_the_tiny_default_ensemble_exports_without_a_fallback(demo_run, tmp_path, capsys, members):
    # The tiny preset's default ensembles (band-statistics and frame members, with and without maha), and an
    # ensemble of network scorers.
    det = _with_ensemble(demo_run, tmp_path / "run", members)
    bundle = export_run(tmp_path / "run", tmp_path / "bundle", examples=0)
    assert "instead" not in capsys.readouterr().err
    meta = json.loads((bundle / "detector.json").read_text())
    assert meta["scorer"] == "ensemble"
    prefixes = {"maha": "maha_means", "stats_maha": "stats_maha_means", "frame_pca": "frame_pca_eigvec"}
    assert {prefixes[m] for m in members if m in prefixes} <= set(meta["references"])
    assert meta["references"]["ensemble_moments"] == [len(members), 3, 2]
    b = Bundle(bundle)
    refs, gots = [], []
    for clip in _clips(demo_run):
        ref = det.score(clip)
        got = b.score(load_audio(clip), ref["machine_type"], ref["machine_id"])
        refs.append(ref["score"])
        gots.append(got["score"])
        if abs(ref["score"] - ref["threshold"]) > 1e-5 * max(1.0, abs(ref["threshold"])):
            assert got["decision"] == ref["decision"], clip.name
    assert_close_on_scale(gots, refs, rtol=1e-5)  # z-scored ensemble scores cross zero (docs/DESIGN.md)


def test_stats_maha_without_scaling_exports_the_scores_of_its_run(demo_run, tmp_path):
    # score.stats_scale: none (decision 3's candidate) fits the Gaussian to the statistics as they are; the bundle's
    # graph carries that (a zero mean and unit scale) and scores as the run does.
    run = tmp_path / "run"
    shutil.copytree(demo_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["score"].update(stats_scale="none", default_scorer="stats_maha")
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    det, scaled = Detector.load(run), Detector.load(demo_run)
    bundle = export_run(run, tmp_path / "bundle", examples=0)
    b = Bundle(bundle)
    refs, gots, olds = [], [], []
    for clip in _clips(demo_run):
        ref = det.score(clip)
        refs.append(ref["score"])
        gots.append(b.score(load_audio(clip), ref["machine_type"], ref["machine_id"])["score"])
        olds.append(scaled.score(clip, scorer="stats_maha")["score"])
    assert_close_on_scale(gots, refs, rtol=1e-5)
    assert np.max(np.abs(np.subtract(refs, olds))) > 1e-3 * np.max(np.abs(olds))  # the option changed the scores


def test_a_default_scorer_without_a_graph_falls_back_to_maha_and_says_so(demo_run, tmp_path, capsys, monkeypatch):
    # A family without a graph (as stats_maha and frame_pca were before they had one) in the default ensemble.
    monkeypatch.delitem(BUILDERS, "frame_pca")
    det = _with_ensemble(demo_run, tmp_path / "run", ["maha", "stats_maha", "frame_pca"])
    with pytest.raises(ScoringError, match="cannot be exported"):
        export_run(tmp_path / "run", tmp_path / "refused", scorer="ensemble", examples=0)
    bundle = export_run(tmp_path / "run", tmp_path / "bundle", examples=0)
    assert "exporting maha instead" in capsys.readouterr().err
    assert json.loads((bundle / "detector.json").read_text())["scorer"] == "maha"
    clip = _clips(demo_run)[0]
    ref = det.score(clip, scorer="maha")
    got = Bundle(bundle, trust=True).score(load_audio(clip), ref["machine_type"], ref["machine_id"])
    assert got["score"] == pytest.approx(ref["score"], rel=1e-5)
