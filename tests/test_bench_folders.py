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
