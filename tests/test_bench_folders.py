"""Bench scripts delete only folders they made: a run folder (its run.json / config.yaml / progress.json), or the
mutation bench's scratch copy (its marker); a folder of anything else is refused and kept."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import mutation  # noqa: E402
from _machine import remove_run  # noqa: E402


def test_remove_run_removes_a_run_or_its_part_and_refuses_anything_else(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    (run / "checkpoints" / "pretrain-last.ckpt").write_bytes(b"w")
    remove_run(run, "checkpoints")
    assert sorted(p.name for p in run.iterdir()) == ["run.json"]
    remove_run(run)
    assert not run.exists()
    remove_run(run)  # nothing there: nothing to do
    mine = tmp_path / "mine"
    (mine / "checkpoints").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep")
    for part in (None, "checkpoints"):
        with pytest.raises(ValueError, match="not a run folder"):
            remove_run(mine, part)
    assert (mine / "notes.txt").read_text() == "keep" and (mine / "checkpoints").is_dir()


def test_mutation_scratch_copy_replaces_only_its_own_folder(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("keep")
    with pytest.raises(SystemExit, match="not a scratch copy"):
        mutation.prepare(work, ["metrics"])
    assert (work / "thesis.tex").read_text() == "keep"


def test_paper_page_keeps_a_gpu_measurement_and_draws_it_from_the_raw_numbers(tmp_path, monkeypatch):
    """Without a GPU, ``--record-unmeasured`` never replaces a measured paper.json; a measured record draws samples/s
    as batch / step time and the schedule's hours from the record alone."""
    import _machine
    import bench_paper

    monkeypatch.setattr(_machine, "raw_path", lambda name: tmp_path / f"{name}.json")
    monkeypatch.setattr(bench_paper, "write_result", lambda name, text: tmp_path / f"{name}.md")
    monkeypatch.setattr(bench_paper.torch.cuda, "is_available", lambda: False)
    measured = {"header": "## h\n\n", "measured": True, "preset": "paper", "gpus": 2, "per_clip": 4, "clips": None,
                "estimate": None,
                "times": {"batch": {"pretrain": 128}, "pretrain_step_s": 0.4, "finetune_step_s": 0.25,
                          "audioldm_s_per_clip": {"10": 1.5, "50": 6.25}}}
    _machine.save_raw("paper", measured)
    monkeypatch.setattr(sys, "argv", ["bench_paper.py", "--record-unmeasured"])
    with pytest.raises(SystemExit, match="holds a GPU measurement"):
        bench_paper.main()
    assert _machine.load_raw("paper") == measured
    page = bench_paper.render(measured)
    assert "0.400 s/step = 320.0 samples/s; fine-tuning 0.250 s/step" in page
    assert "S = 10: 1.50 s/clip, S = 50: 6.25 s/clip" in page
    (tmp_path / "paper.json").unlink()
    bench_paper.main()
    assert _machine.load_raw("paper")["measured"] is False


def _run(seed: int, row: str, per_type: dict[str, tuple[float, float]]) -> dict:
    """One benchmark run as benchmark.json keeps it: one row with per-type AUC / pAUC and their mean."""
    result = {"per_type": {t: {"auc": a, "pauc": p} for t, (a, p) in per_type.items()},
              "average": {"auc": sum(a for a, _ in per_type.values()) / len(per_type),
                          "pauc": sum(p for _, p in per_type.values()) / len(per_type)}}
    return {"seed": seed, "status": "ok", "error": None, "wall_s": 10.0 + seed, "peak_mib": 100.0, "commit": "abc",
            "rows": {row: result}}


def test_benchmark_page_draws_seed_means_and_the_lead_from_the_raw_runs():
    """A two-seed, two-type raw record drawn by bench/benchmark_pages.py: the table's cells and the lead sentence
    are the seed means computed by hand here, and a type where the AE is ahead on pAUC is not counted as won."""
    import benchmark_pages

    systems = {
        "rcmae": {"runs": [_run(0, "rcmae:ensemble", {"fan": (0.9, 0.8), "pump": (0.7, 0.5)}),
                           _run(1, "rcmae:ensemble", {"fan": (0.8, 0.6), "pump": (0.9, 0.7)})]},
        "ae": {"runs": [_run(0, "ae", {"fan": (0.6, 0.5), "pump": (0.6, 0.7)}),
                        _run(1, "ae", {"fan": (0.7, 0.5), "pump": (0.6, 0.7)})]}}
    machine = {"cpu": "x", "usable_cores": 2, "gpu": [], "torch": "2"}
    raw = {"page": "baselines", "header": "## t\n\n- machine: m\n", "data_command": "rcmae demo-data SET",
           "bench": {"data": "SET", "preset": "tiny", "repeat": 2, "overrides": [], "date": "d", "command": "c",
                     "augmentation": "procedural", "machine": machine},
           "systems": systems}
    text = benchmark_pages.render(raw)
    # rcmae: fan (0.85, 0.70), pump (0.80, 0.60) -> average 82.5 / 65.0; AE: fan (0.65, 0.50), pump (0.60, 0.70)
    # -> 62.5 / 60.0. Ahead on both metrics: fan only (pump's pAUC 60.0 < 70.0).
    assert "averages **82.5 AUC / 65.0 pAUC** against **62.5 / 60.0**" in text
    assert "ahead on both on 1 of the 2 machine types" in text
    (row,) = [line for line in text.splitlines() if line.startswith("| rcmae:ensemble |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1].startswith("85.00") and cells[4].startswith("60.00")  # fan AUC, pump pAUC
    # The ablations page's summary: one line per system, the seed-mean average per scorer, "-" where absent.
    from rcmae.evaluation.benchmark import aggregate_runs

    lines = benchmark_pages.summary(aggregate_runs(systems)).splitlines()
    assert lines[2] == "| rcmae | 82.5 / 65.0 | - | - | - | - | 10 |"  # wall: mean of 10 and 11 s, rounded to even
