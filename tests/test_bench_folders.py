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
