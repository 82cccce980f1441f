"""``rcmae benchmark`` on the tiny data set: results rechecked with sklearn, failures isolated, table parsed."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import check_results

from rcmae.evaluation.benchmark import SYSTEMS, _split_overrides, aggregate_runs, render_table, run_benchmark

TINY = ["pretrain.epochs=1", "finetune.epochs=1", "ae.epochs=1"]


@pytest.fixture(scope="module")
def bench(tiny_dcase, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    run_benchmark(tiny_dcase, out, ["rcmae", "rcmae-nopretrain", "ae", "knn", "bogus"], preset="tiny",
                  overrides=TINY, progress=False)
    return out


def check_results_dir(folder: Path, data: Path) -> dict:
    res = check_results(folder, data)
    assert len(res["per_id"]) == 4 and set(res["per_type"]) == {"fan", "valve"}
    return res


def test_each_system_writes_valid_results_matching_the_benchmark(bench, tiny_dcase):
    report = json.loads((bench / "benchmark.json").read_text())
    rows = {r["row"]: r for r in report["rows"]}
    folders = {"ae": bench / "systems/ae/seed0/baseline", "knn": bench / "systems/knn/seed0/baseline"}
    scorers = [name.split(":", 1)[1] for name in rows if name.startswith("rcmae:")]
    assert "knn" in scorers and "recon" in scorers
    for system in ("rcmae", "rcmae-nopretrain"):
        for scorer in scorers:
            folders[f"{system}:{scorer}"] = bench / "systems" / system / "seed0/run/eval" / scorer
    for name, folder in folders.items():
        res = check_results_dir(folder, tiny_dcase)
        row = rows[name]
        assert row["status"] == "ok" and row["seeds"] == [0]
        for mtype, vals in res["per_type"].items():
            assert row["per_type"][mtype]["auc"]["mean"] == pytest.approx(vals["auc"])
            assert row["per_type"][mtype]["pauc"]["mean"] == pytest.approx(vals["pauc"])
        assert row["average"]["auc"]["mean"] == pytest.approx(res["average"]["auc"])
        # A python + torch child holds well over 50 MiB; the tiny jobs stay far below 8 GiB.
        assert 50 < row["peak_mib"]["mean"] < 8192
        assert row["wall_s"]["mean"] > 0
    # Per-system wall time and memory: every scorer row of rcmae shares its one child process.
    assert len({rows[f"rcmae:{s}"]["wall_s"]["mean"] for s in scorers}) == 1
    assert report["systems"]["rcmae"]["aug"].endswith("bank")
    assert report["systems"]["rcmae-nopretrain"]["aug"] == "specaugment"
    run_json = json.loads((bench / "systems/rcmae-nopretrain/seed0/run/run.json").read_text())
    assert run_json["stages"]["pretrain"]["epochs"] == 0 and run_json["stages"]["pretrain"]["steps"] == 0


def test_failed_system_is_reported_and_the_others_complete(bench):
    report = json.loads((bench / "benchmark.json").read_text())
    rows = {r["row"]: r for r in report["rows"]}
    assert rows["bogus"]["status"] == "failed"
    assert "unknown system 'bogus'" in rows["bogus"]["error"]
    assert rows["ae"]["status"] == rows["knn"]["status"] == "ok"


def test_benchmark_json_records_machine_date_and_command(bench):
    report = json.loads((bench / "benchmark.json").read_text())
    machine = report["machine"]
    assert {"platform", "cpu", "cores", "gpu", "torch", "memory_gib"} <= set(machine)
    assert machine["torch"].startswith("2.")
    assert report["date"][:2] == "20" and "T" in report["date"]
    assert report["preset"] == "tiny" and report["repeat"] == 1 and report["overrides"] == TINY
    assert isinstance(report["command"], str) and report["command"]


def parse_table(text: str) -> list[dict[str, str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert all(set(c.strip()) <= set("-:") for c in lines[1].strip("|").split("|"))
    rows = []
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        assert len(cells) == len(header), ln
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def test_table_md_parses_and_agrees_with_the_json(bench):
    report = json.loads((bench / "benchmark.json").read_text())
    table = parse_table((bench / "table.md").read_text())
    by_name = {r["system"]: r for r in table}
    assert set(by_name) == {r["row"] for r in report["rows"]}
    for row in report["rows"]:
        cells = by_name[row["row"]]
        if row["status"] == "failed":
            assert cells["avg AUC"] == "-"
            continue
        assert cells["avg AUC"] == f"{100 * row['average']['auc']['mean']:.2f}"
        assert cells["fan pAUC"] == f"{100 * row['per_type']['fan']['pauc']['mean']:.2f}"
        assert float(cells["peak MiB"]) == pytest.approx(row["peak_mib"]["mean"], abs=0.5)
    assert "bogus" in (bench / "table.md").read_text().split("Failures:")[1]


def test_rerun_resumes_finished_systems(bench, tiny_dcase):
    # Each run's record names the code it ran (the raw files committed under bench/results/raw/ carry it).
    import subprocess

    import rcmae

    head = subprocess.run(["git", "-C", str(Path(rcmae.__file__).parent), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or None
    assert json.loads((bench / "systems/ae/seed0/record.json").read_text())["commit"] == head
    before = json.loads((bench / "benchmark.json").read_text())
    stamp = (bench / "systems/ae/seed0/record.json").stat().st_mtime_ns
    run_benchmark(tiny_dcase, bench, ["ae", "knn"], overrides=TINY, progress=False)
    assert (bench / "systems/ae/seed0/record.json").stat().st_mtime_ns == stamp
    after = {r["row"]: r for r in json.loads((bench / "benchmark.json").read_text())["rows"]}
    assert after["ae"]["average"] == {r["row"]: r for r in before["rows"]}["ae"]["average"]


def test_an_override_that_raises_inside_the_child_is_reported(tiny_dcase, tmp_path):
    run_benchmark(tiny_dcase, tmp_path, ["knn"], overrides=["knn.metric=manhattan"], progress=False)
    (row,) = json.loads((tmp_path / "benchmark.json").read_text())["rows"]
    assert row["status"] == "failed"
    assert row["error"].startswith("ValueError: knn metric must be one of")
    assert "Traceback" in (tmp_path / "systems/knn/seed0/log.txt").read_text()


def test_repeat_cells_are_mean_and_sample_std_over_seeds():
    def res(auc_fan: float, auc_valve: float) -> dict:
        per_type = {"fan": {"auc": auc_fan, "pauc": 0.5}, "valve": {"auc": auc_valve, "pauc": 0.6}}
        return {"per_type": per_type, "average": {"auc": (auc_fan + auc_valve) / 2, "pauc": 0.55}}

    records = {"ae": {"runs": [
        {"seed": 0, "status": "ok", "error": None, "wall_s": 10.0, "peak_mib": 100.0, "rows": {"ae": res(0.8, 0.6)}},
        {"seed": 1, "status": "ok", "error": None, "wall_s": 12.0, "peak_mib": 110.0, "rows": {"ae": res(0.9, 0.7)}},
    ]}}
    (row,) = aggregate_runs(records)
    assert row["per_type"]["fan"]["auc"]["mean"] == pytest.approx(0.85)
    assert row["per_type"]["fan"]["auc"]["std"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert row["wall_s"]["mean"] == pytest.approx(11.0) and row["wall_s"]["std"] == pytest.approx(np.sqrt(2))
    bench = {"data": "d", "preset": "tiny", "repeat": 2, "overrides": [], "augmentation": "not used",
             "machine": {"cpu": "x", "usable_cores": 2, "gpu": [], "torch": "2"}, "date": "now", "command": "c",
             "rows": [row]}
    (cells,) = parse_table(render_table(bench))
    assert cells["fan AUC"] == "85.00 ± 7.07"
    assert cells["avg AUC"] == "75.00 ± 7.07"


def test_systems_table_and_override_parsing():
    assert {"rcmae", "rcmae-nodda", "rcmae-novcr", "rcmae-contrastive", "rcmae-mae", "rcmae-nopretrain",
            "ae", "knn"} <= set(SYSTEMS)
    assert SYSTEMS["rcmae-mae"]["overrides"] == ["pretrain.w_nce=0", "pretrain.w_vcr=0"]
    rc, base = _split_overrides(["pretrain.lr=1e-3", "ae.epochs=3", "knn.metric=cosine"])
    assert rc == ["pretrain.lr=1e-3"] and base == {"ae": {"epochs": 3}, "knn": {"metric": "cosine"}}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        _split_overrides(["pretrain.lr"])
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        run_benchmark("/nonexistent/data", "/tmp/unused", ["knn"])


def test_nopretrain_checkpoint_is_read_back_by_the_trainer(tiny_dcase, tmp_path):
    # `rcmae-nopretrain` pretrains for 0 epochs: the run still gets a checkpoint (the seeded initial weights)
    # that fine-tuning reads back, and the same seed gives the same weights.
    import torch

    from rcmae.run.checkpoint import model_from_checkpoint
    from rcmae.run.folder import checkpoint_path
    from rcmae.training import stages as train

    small = ["model.embed_dim=32", "model.depth=1", "model.heads=2", "model.decoder_embed_dim=32",
             "model.decoder_depth=1", "model.decoder_heads=2", "model.proj_dim=32", "pretrain.batch_size=8", "seed=3"]
    saved = []
    for name in ("a", "b"):
        train.pretrain(tiny_dcase, tmp_path / name, epochs=0, overrides=small, progress=False, fit_scores=False)
        model, meta = model_from_checkpoint(checkpoint_path(tmp_path / name, "pretrain", "last"))
        assert meta["stage"] == "pretrain"
        saved.append(model.state_dict())
    assert all(torch.equal(saved[0][k], saved[1][k]) for k in saved[0])
    train.pretrain(tiny_dcase, tmp_path / "trained", epochs=1, overrides=small, progress=False, fit_scores=False)
    trained, _ = model_from_checkpoint(checkpoint_path(tmp_path / "trained", "pretrain", "last"))
    assert not torch.equal(trained.state_dict()["proj.weight"], saved[0]["proj.weight"])
    train.finetune(tmp_path / "a", epochs=1, progress=False, fit_scores=False)
    assert checkpoint_path(tmp_path / "a", "finetune", "last").is_file()



def test_rescore_scores_the_finished_run_again_without_training(bench, tiny_dcase):
    before = json.loads((bench / "systems/rcmae/seed0/record.json").read_text())
    ckpts = {p: p.stat().st_mtime_ns for p in (bench / "systems/rcmae/seed0/run").rglob("*.ckpt")}
    run_benchmark(tiny_dcase, bench, ["rcmae"], preset="tiny", overrides=TINY, progress=False, rescore=True)
    after = json.loads((bench / "systems/rcmae/seed0/record.json").read_text())
    # Same run, same scorers: the same numbers; the training record is kept, the scoring is timed on its own.
    assert set(after["rows"]) == set(before["rows"])
    for name, res in before["rows"].items():
        assert after["rows"][name]["average"]["auc"] == pytest.approx(res["average"]["auc"], abs=1e-9)
    assert after["wall_s"] == before["wall_s"] and after["rescore_wall_s"] > 0 and after["rescore_error"] is None
    assert {p: p.stat().st_mtime_ns for p in ckpts} == ckpts  # nothing retrained
    check_results_dir(bench / "systems/rcmae/seed0/run/eval/knn", tiny_dcase)


def test_rescore_with_score_overrides_equals_a_hand_edited_copy_and_leaves_the_run_alone(bench, tiny_dcase,
                                                                                         tmp_path):
    from rcmae.evaluation.evaluate import evaluate_run

    seed = bench / "systems/rcmae/seed0"
    config_before = (seed / "run/config.yaml").read_bytes()
    members = "score.ensemble=[stats_maha,knn]"
    run_benchmark(tiny_dcase, bench, ["rcmae"], preset="tiny", overrides=[*TINY, members], progress=False,
                  rescore=True)
    after = json.loads((seed / "record.json").read_text())
    assert after["rescore_error"] is None and after["rescore_overrides"] == [members]
    assert (seed / "run/config.yaml").read_bytes() == config_before  # the trained run is never edited
    copy = seed / "rescore/run"
    assert yaml.safe_load((copy / "config.yaml").read_text())["score"]["ensemble"] == ["stats_maha", "knn"]
    assert json.loads((copy / "run.json").read_text())["rescore_overrides"] == [members]
    # The reference: what a hand edit of a copy's config.yaml followed by evaluate gives.
    hand = tmp_path / "hand"
    shutil.copytree(seed / "run", hand, ignore=shutil.ignore_patterns("eval"))
    cfg = yaml.safe_load((hand / "config.yaml").read_text())
    cfg["score"]["ensemble"] = ["stats_maha", "knn"]
    (hand / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    ref = evaluate_run(hand, data=tiny_dcase, progress=False)
    for name in ("ensemble", "stats_maha", "knn"):
        assert after["rows"][f"rcmae:{name}"]["average"]["auc"] == pytest.approx(ref[name]["average"]["auc"], abs=1e-9)
        assert after["rows"][f"rcmae:{name}"]["average"]["pauc"] == pytest.approx(ref[name]["average"]["pauc"],
                                                                                  abs=1e-9)
    # A training setting the run does not have needs retraining: refused for that run, nothing changed.
    run_benchmark(tiny_dcase, bench, ["rcmae"], preset="tiny", overrides=["pretrain.epochs=3", "finetune.epochs=1"],
                  progress=False, rescore=True)
    refused = json.loads((bench / "benchmark.json").read_text())["systems"]["rcmae"]["runs"][0]
    assert "cannot change training settings (pretrain.epochs)" in refused["rescore_error"]
    assert (seed / "run/config.yaml").read_bytes() == config_before


def test_rescored_copy_replaces_only_its_own_copies(tmp_path, monkeypatch):
    from rcmae.evaluation.rescore import rescored_copy
    from rcmae.run.config import load_config, save_config

    run = tmp_path / "run"
    save_config(load_config("tiny"), run / "config.yaml")
    (run / "run.json").write_text(json.dumps({"data": "d"}))
    (run / "weights.bin").write_bytes(b"w")
    dest = tmp_path / "rescore" / "run"
    rescored_copy(run, dest, ["score.knn_k=3"])
    assert yaml.safe_load((dest / "config.yaml").read_text())["score"]["knn_k"] == 3
    assert json.loads((dest / "run.json").read_text()) == {"data": "d", "rescore_overrides": ["score.knn_k=3"],
                                                           "rescored_from": str(run)}
    rescored_copy(run, dest, ["score.knn_k=5"])  # an earlier copy is replaced
    assert yaml.safe_load((dest / "config.yaml").read_text())["score"]["knn_k"] == 5
    assert sorted(p.name for p in dest.parent.iterdir()) == ["run"]  # no staging folder left
    # A trained run (no rescore_overrides) or a foreign folder in its place is refused and kept.
    shutil.copytree(run, tmp_path / "other" / "run")
    with pytest.raises(ValueError, match="not a rescored copy"):
        rescored_copy(run, tmp_path / "other" / "run", ["score.knn_k=5"])
    assert (tmp_path / "other" / "run" / "weights.bin").read_bytes() == b"w"
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="no run.json"):
        rescored_copy(run, tmp_path / "foreign", ["score.knn_k=5"])
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"
    assert yaml.safe_load((run / "config.yaml").read_text())["score"]["knn_k"] == load_config("tiny").score.knn_k
    # A trained run that appears at dest while the copy is made is still refused, kept, and no staging is left.
    import rcmae.evaluation.rescore as rescore_module

    late = tmp_path / "late" / "run"
    real_copytree = shutil.copytree

    def copy_while_someone_writes(src, dst, **kw):
        real_copytree(run, late)  # a trained run (no rescore_overrides) lands at dest meanwhile
        return real_copytree(src, dst, **kw)

    monkeypatch.setattr(rescore_module.shutil, "copytree", copy_while_someone_writes)
    with pytest.raises(ValueError, match="not a rescored copy"):
        rescored_copy(run, late, ["score.knn_k=5"])
    assert (late / "weights.bin").read_bytes() == b"w" and "rescore_overrides" not in (late / "run.json").read_text()
    assert sorted(p.name for p in late.parent.iterdir()) == ["run"]
    # An empty folder at dest is taken (removed with rmdir, which could remove nothing else).
    monkeypatch.setattr(rescore_module.shutil, "copytree", real_copytree)
    empty = tmp_path / "empty" / "run"
    empty.mkdir(parents=True)
    rescored_copy(run, empty, ["score.knn_k=7"])
    assert yaml.safe_load((empty / "config.yaml").read_text())["score"]["knn_k"] == 7
    assert sorted(p.name for p in empty.parent.iterdir()) == ["run"]


def test_benchmark_help_names_every_system():
    """`rcmae benchmark --help` lists each system the benchmark can run (a new system is not hidden from users)."""
    from rcmae.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    help_text = next(a.help for a in sub.choices["benchmark"]._actions if "--systems" in a.option_strings)
    listed = {w.strip(" ,.()") for w in help_text.split("of:", 1)[1].split("(default")[0].split(",")}
    listed = {w.split(" ")[0] for w in listed}
    assert set(SYSTEMS) <= listed, sorted(set(SYSTEMS) - listed)
