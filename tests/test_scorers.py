"""The scorers package: its interface against independent references, and the import arrows of the house."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from rcmae.config import ScoreConfig
from rcmae.scorers import (
    Clips,
    EnsembleScorer,
    KnnScorer,
    NormalSet,
    ScoringError,
    fit_threshold,
    fit_unit_thresholds,
    zscore,
)

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_training_never_imports_scoring():
    # The run folder is the only contract between training and scoring (docs/DESIGN, ARCHITECTURE).
    imported = _imports(ROOT / "rcmae" / "train.py")
    assert not {m for m in imported if m.startswith(("rcmae.score", "rcmae.scorers"))}, imported
    # And at run time, through any module train imports.
    code = "import sys, rcmae.train; bad = [m for m in sys.modules if m.startswith('rcmae.score')]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_scorers_import_numpy_and_torch_only():
    code = ("import sys, rcmae.scorers; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'lightning', 'pytorch_lightning', 'streamlit', 'plotly', 'rcmae.train'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
    for path in (ROOT / "rcmae" / "scorers").glob("*.py"):
        assert not {m for m in _imports(path) if m.startswith(("rcmae.train", "rcmae.score.", "lightning"))
                    or m == "rcmae.score"}, path


def _unit_tables(rng, units, n, d):
    z = rng.normal(size=(len(units) * n, d)).astype(np.float32)
    types = np.array([u[0] for u in units for _ in range(n)])
    ids = np.array([u[1] for u in units for _ in range(n)])
    paths = np.array([f"{t}/{i}/{k}.wav" for t, i in units for k in range(n)])
    return {"z": z, "machine_type": types, "machine_id": ids, "path": paths}


def test_knn_scorer_matches_sklearn_nearest_neighbors(tmp_path):
    rng = np.random.default_rng(0)
    units = [("fan", "00"), ("fan", "02"), ("pump", "00")]
    table = _unit_tables(rng, units, 7, 5)
    cfg = ScoreConfig(knn_k=3, knn_space="pretrain")
    knn = KnnScorer(cfg, tmp_path, spaces=["pretrain"])
    knn.fit(NormalSet({"pretrain": table}))
    q = rng.normal(size=(4, 5)).astype(np.float32)
    qt, qi = ["fan", "pump", "fan", "pump"], ["02", "00", "00", "00"]
    clips = Clips(torch.zeros(4, 2, 3), qt, qi, None, lambda name: q)
    got = knn.score(clips)
    for n, (t, i) in enumerate(zip(qt, qi, strict=True)):
        sel = (table["machine_type"] == t) & (table["machine_id"] == i)
        nn = NearestNeighbors(n_neighbors=3, metric="cosine").fit(table["z"][sel].astype(np.float64))
        dist, _ = nn.kneighbors(q[n : n + 1].astype(np.float64))
        assert got[n] == pytest.approx(dist.mean(), rel=1e-6)
    # The training clips themselves: each is left out of its own references (held-out normal scores).
    train = Clips(torch.zeros(21, 2, 3), table["machine_type"], table["machine_id"], table["path"],
                  lambda name: table["z"])
    held_out = knn.score(train)
    for n in range(21):
        sel = (table["machine_type"] == table["machine_type"][n]) & (table["machine_id"] == table["machine_id"][n])
        sel[n] = False
        nn = NearestNeighbors(n_neighbors=3, metric="cosine").fit(table["z"][sel].astype(np.float64))
        assert held_out[n] == pytest.approx(nn.kneighbors(table["z"][n : n + 1].astype(np.float64))[0].mean(),
                                            rel=1e-6)
    with pytest.raises(ScoringError, match="machine valve id 00 was not in this run's training data"):
        knn.score(Clips(torch.zeros(1, 2, 3), ["valve"], ["00"], None, lambda name: q[:1]))


def test_unit_thresholds_and_moments_are_per_unit_loops():
    rng = np.random.default_rng(1)
    scores = rng.gamma(2.0, 1.0, size=30)
    types = ["a"] * 10 + ["b"] * 20
    ids = ["00"] * 10 + ["00"] * 12 + ["01"] * 8
    thr, mom = fit_unit_thresholds(scores, types, ids, "percentile", 0.8)
    assert sorted(thr) == ["a/00", "b/00", "b/01"]
    for key, sl in {"a/00": slice(0, 10), "b/00": slice(10, 22), "b/01": slice(22, 30)}.items():
        assert thr[key] == pytest.approx(np.quantile(scores[sl], 0.8))
        assert mom[key] == pytest.approx([scores[sl].mean(), scores[sl].std()])
    gthr, _ = fit_unit_thresholds(scores, types, ids)
    assert gthr["b/00"] == pytest.approx(fit_threshold(scores[10:22]))


def test_ensemble_is_the_mean_of_per_unit_zscores(tmp_path):
    members = {"m1": np.array([1.0, 2.0, 3.0]), "m2": np.array([10.0, 0.0, -5.0])}
    moments = {"m1": {"t/0": [1.0, 2.0], "t/1": [0.0, 1.0]}, "m2": {"t/0": [0.0, 5.0], "t/1": [-5.0, 0.5]}}
    ens = EnsembleScorer(ScoreConfig(), tmp_path, lambda: ["m1", "m2"], lambda name, clips: members[name], moments,
                         lambda name: "")
    clips = Clips(torch.zeros(3, 1, 1), ["t", "t", "t"], ["0", "1", "0"], None, lambda name: None)
    # By hand: clip 0 (t/0): (1-1)/2=0, (10-0)/5=2 -> 1; clip 1 (t/1): 2, 10 -> 6; clip 2 (t/0): 1, -1 -> 0.
    assert ens.score(clips) == pytest.approx([1.0, 6.0, 0.0])
    with pytest.raises(ScoringError, match="no training-score moments of m1"):
        zscore(np.zeros(1), ["t"], ["9"], moments["m1"], "m1")
