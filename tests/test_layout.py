"""The house rules of docs/DESIGN.md: names the docs show resolve, old module paths still import, modules stay small,
and the import contracts really catch an upward import (the checker itself is run by `make test`)."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOTTED = re.compile(r"(?<![\w./-])rcmae(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def _resolve(dotted: str):
    """Import the longest importable module prefix of ``dotted``, then walk the rest as attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def _doc_names() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for name in sorted(set(DOTTED.findall(doc.read_text()))):
            found.append((doc.name, name.rstrip(".")))
    return found


def test_the_docs_show_names():
    names = {n for _, n in _doc_names()}
    # The README's API line, and the packages DESIGN.md describes, are among them.
    assert {"rcmae.scorers.Detector.load", "rcmae.score.Detector", "rcmae.run.checkpoint.load_checkpoint"} <= names
    assert len(names) > 60


@pytest.mark.parametrize("doc,name", _doc_names())
def test_every_name_the_docs_show_imports(doc, name):
    assert _resolve(name) is not None, f"{doc}: {name}"


def test_old_module_paths_keep_every_public_name():
    # tests/fixtures/legacy_names.json: the public top-level names of every rcmae 0.1 module (read from its source
    # before the move). Each still resolves through the old path.
    old = json.loads((ROOT / "tests" / "fixtures" / "legacy_names.json").read_text())
    missing = [f"{mod}.{name}" for mod, names in old.items() for name in names
               if not hasattr(importlib.import_module(mod), name)]
    assert missing == []
    assert sum(map(len, old.values())) > 400


def test_old_paths_are_the_new_objects():
    import rcmae.audio
    import rcmae.score
    import rcmae.train

    from rcmae.data import audio
    from rcmae.evaluation.evaluate import evaluate_run
    from rcmae.run.folder import read_run_json
    from rcmae.scorers.detector import Detector, fit_run
    from rcmae.training.stages import pretrain

    assert rcmae.audio is audio  # a moved module is the very module: monkeypatching one patches the other
    assert rcmae.score.Detector is Detector and rcmae.score.fit_run is fit_run
    assert rcmae.score.evaluate_run is evaluate_run
    assert rcmae.train.pretrain is pretrain and rcmae.train.read_run_json is read_run_json
    from rcmae.scorers import Detector as lazy

    assert lazy is Detector


def test_unknown_old_path_still_fails():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("rcmae.no_such_module")


# Modules allowed past ~500 lines, each with its reason in docs/DESIGN.md ("Module size").
LONG_OK = {"rcmae/models/rcmae.py", "rcmae/augment/bank.py", "rcmae/scorers/detector.py"}


def test_no_module_over_about_500_lines_without_a_reason():
    design = (ROOT / "docs" / "DESIGN.md").read_text()
    long = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in (ROOT / "rcmae").rglob("*.py")}
    over = {p: n for p, n in long.items() if n > 500}
    assert set(over) <= LONG_OK, over
    assert all(f"`{p}`" in design for p in LONG_OK)
    assert all(n <= 550 for n in over.values()), over


@pytest.mark.skipif(shutil.which("lint-imports", path=str(Path(sys.executable).parent)) is None,
                    reason="import-linter is installed by `make` (requirements.txt)")
def test_import_contracts_catch_an_upward_import(tmp_path):
    # A copy of the package with one planted upward import (data -> training) must break the layers contract;
    # the untouched copy keeps it. This is what `make test` relies on.
    for name in ("rcmae", "pyproject.toml"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    lint = str(Path(sys.executable).parent / "lint-imports")

    def check() -> subprocess.CompletedProcess:
        return subprocess.run([lint, "--no-cache"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={"PYTHONPATH": str(tmp_path), "PATH": str(Path(sys.executable).parent)})

    kept = check()
    assert kept.returncode == 0, kept.stdout[-3000:]
    planted = tmp_path / "rcmae" / "data" / "names.py"
    planted.write_text(planted.read_text() + "\n\ndef _upward():\n    from rcmae.training import stages  # noqa\n")
    broken = check()
    assert broken.returncode != 0
    assert "rcmae.data is not allowed to import rcmae.training" in broken.stdout


def test_committed_tables_equal_their_rebuild_from_the_committed_raw_results():
    """The suite tables, their intervals page, README's "What to expect" and BENCHMARKS.md are what
    ``bench/assemble.py`` draws from bench/results/raw/ and the raw JSON beside them: none was edited by hand."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "assemble.py"), "--check"], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_benchmark_page_is_rebuilt_from_raw_results():
    """Every page in bench/results/ is drawn from committed raw numbers (a suite, mutation, or a script's
    ``render``), but the hand-written decisions log; BENCHMARKS.md includes every page a section names."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import assemble
    finally:
        sys.path.remove(str(ROOT / "bench"))
    rebuilt = {p.name for p in assemble.rebuilt()}
    pages = {p.name for p in (ROOT / "bench" / "results").glob("*.md")}
    assert pages - rebuilt == {"decisions.md"}, f"pages not rebuilt from raw results: {sorted(pages - rebuilt)}"
    named = {f for _, files in assemble.SECTIONS for f in files}
    gpu_only = {"frontend-cuda.md"}  # written once a session with a GPU measures it
    assert named - gpu_only <= pages, f"sections name missing pages: {sorted(named - gpu_only - pages)}"
    orphans = pages - named
    assert not orphans, f"pages BENCHMARKS.md leaves out: {sorted(orphans)}"


def test_study_logs_say_they_are_not_rebuilt_and_nothing_points_at_their_old_place():
    """docs/studies/ holds the hand-written study logs: each says so under its title, the folder's README lists
    every one, and no file still links to them under bench/results/."""
    studies = ROOT / "docs" / "studies"
    logs = {p.name for p in studies.glob("*.md")} - {"README.md"}
    assert logs
    index = (studies / "README.md").read_text()
    for name in logs:
        text = (studies / name).read_text()
        assert text.split("\n")[2].startswith("> **Study log, not rebuilt from raw results.**"), name
        assert f"]({name})" in index, name
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT).stdout.split()
    stale = [f for f in tracked if f.endswith((".md", ".py", ".yaml")) and not f.startswith("docs/studies/")
             and any(f"bench/results/{n}" in (ROOT / f).read_text() for n in logs)]
    assert not stale, f"still pointing at bench/results/ for a study log: {stale}"


def _readme_design_rows() -> dict[str, list[str]]:
    text = (ROOT / "README.md").read_text()
    block = text[text.index("<!-- design:start"):text.index("<!-- design:end -->")]
    rows = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 5:
            rows[cells[0]] = cells[1:]
    return rows


def test_readme_design_table_is_the_seed_mean_of_the_raw_per_unit_results():
    """The README's design-suite cells, recomputed here by plain loops from the committed raw runs: per seed, the
    mean over sets of (mean over machine types of the mean over units); then the mean and sample std over seeds."""
    base = ROOT / "bench" / "results" / "raw" / "suite-design"
    sets = [s["name"] for s in json.loads((base / "suite.json").read_text())["sets"] if s["status"] == "ok"]
    rows = _readme_design_rows()
    checks = {"rcmae:ensemble": ("rcmae", "**the `tiny` default**"), "ae": ("ae", "DCASE 2020 AE baseline"),
              "rcmae:stats_maha": ("rcmae", "scorer `stats_maha`")}
    for row, (system, label) in checks.items():
        per_seed: dict[int, dict[str, list[float]]] = {}
        for name in sets:
            for path in sorted((base / name).glob(f"{system}-seed*.json")):
                run = json.loads(path.read_text())
                by_type: dict[str, dict[str, list[float]]] = {}
                for unit in run["rows"][row]["per_id"]:
                    for m in ("auc", "pauc"):
                        by_type.setdefault(unit["machine_type"], {}).setdefault(m, []).append(unit[m])
                for m in ("auc", "pauc"):
                    type_means = [sum(v[m]) / len(v[m]) for v in by_type.values()]
                    per_seed.setdefault(run["seed"], {}).setdefault(m, []).append(sum(type_means) / len(type_means))
        (cells,) = [c for lab, c in rows.items() if label in lab]
        for col, m in enumerate(("auc", "pauc")):
            seed_means = [sum(v[m]) / len(sets) for v in per_seed.values() if len(v[m]) == len(sets)]
            mean = sum(seed_means) / len(seed_means)
            shown = [float(x) for x in cells[col].split("±")]
            assert shown[0] == pytest.approx(mean, abs=5e-4), (row, m)
            if len(seed_means) > 1:
                std = (sum((x - mean) ** 2 for x in seed_means) / (len(seed_means) - 1)) ** 0.5
                assert shown[1] == pytest.approx(std, abs=5e-4), (row, m)
