"""Safe checkpoint loading: hostile pickles execute nothing, damaged files give one clear line everywhere."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import write_tiny_dcase

from rcmae import cli
from rcmae.run import checkpoint
from rcmae.run import folder as train
from rcmae.run.checkpoint import CheckpointError, load_checkpoint

pytestmark = pytest.mark.reliability  # bad-input cases of the fault-injection suite (issue 11)


class _Payload:
    """Unpickling this calls ``os.system(touch <marker>)``: the classic checkpoint exploit."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_hostile(path: Path, marker: Path) -> Path:
    """A real torch zip checkpoint whose pickle runs a shell command when loaded unsafely."""
    torch.save({"state_dict": {}, "rcmae": {"payload": _Payload(marker)}}, path)
    return path


@pytest.fixture(scope="module")
def run_dir(short_run) -> Path:
    return short_run[1]


def test_payload_fires_when_loaded_unsafely(tmp_path):
    # The control: the crafted file really is an exploit (so the tests below prove something).
    marker = tmp_path / "pwned"
    write_hostile(tmp_path / "evil.ckpt", marker)
    torch.load(tmp_path / "evil.ckpt", weights_only=False)
    assert marker.exists()


def test_load_checkpoint_refuses_hostile_pickle(tmp_path):
    marker = tmp_path / "pwned"
    path = write_hostile(tmp_path / "evil.ckpt", marker)
    with pytest.raises(CheckpointError, match="refused") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()
    assert checkpoint.SAFE_GLOBALS == []


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_damaged_checkpoint_is_one_line(run_dir, tmp_path, damage):
    src = train.checkpoint_path(run_dir, "pretrain", "last")
    path = tmp_path / "pretrain-last.ckpt"
    data = src.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"not a checkpoint" * 10}[damage])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and "\n" not in msg
    assert "pretrain-best.ckpt" in msg and "re-run" in msg
    assert ("empty" if damage == "empty" else "corrupt") in msg


def test_good_checkpoint_loads_weights_only(run_dir):
    state = load_checkpoint(train.checkpoint_path(run_dir, "finetune", "last"))
    assert state["rcmae"]["stage"] == "finetune"
    assert all(isinstance(v, torch.Tensor) for v in state["state_dict"].values())


def _error_lines(stderr: str) -> list[str]:
    """stderr without progress-bar lines."""
    return [ln for ln in stderr.strip().splitlines() if "clip/s" not in ln and "it/s" not in ln]


def _copy_run(run_dir: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    return run


@pytest.mark.parametrize("command", ["score", "evaluate", "finetune-resume"])
def test_hostile_run_executes_nothing(run_dir, tmp_path, capsys, command):
    run = _copy_run(run_dir, tmp_path)
    marker = tmp_path / "pwned"
    for stage in ("pretrain", "finetune"):
        write_hostile(train.checkpoint_path(run, stage, "last"), marker)
    clip = next((Path(train.read_run_json(run)["data"])).rglob("*.wav"))
    argv = {"score": ["score", "--run", str(run), str(clip)], "evaluate": ["evaluate", "--run", str(run)],
            "finetune-resume": ["finetune", "--run", str(run), "--resume"]}[command]
    assert cli.main(argv) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "refused" in err[0] and "checkpoint" in err[0]
    assert not marker.exists()


@pytest.mark.parametrize("command", ["score", "evaluate", "finetune-resume"])
def test_truncated_checkpoint_is_one_line_in_cli(run_dir, tmp_path, capsys, command):
    run = _copy_run(run_dir, tmp_path)
    ckpt = train.checkpoint_path(run, "finetune", "last")
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    clip = next((Path(train.read_run_json(run)["data"])).rglob("*.wav"))
    argv = {"score": ["score", "--run", str(run), str(clip)], "evaluate": ["evaluate", "--run", str(run)],
            "finetune-resume": ["finetune", "--run", str(run), "--resume"]}[command]
    assert cli.main(argv) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1, err
    assert str(ckpt) in err[0] and "corrupt" in err[0] and "finetune-best.ckpt" in err[0]


def test_score_page_shows_one_line_for_hostile_run(run_dir, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    ws = tmp_path / "ws"
    (ws / "runs").mkdir(parents=True)
    monkeypatch.setenv("RCMAE_WORKSPACE", str(ws))
    run = ws / "runs" / "run"
    shutil.copytree(run_dir, run)
    marker = tmp_path / "pwned"
    write_hostile(train.checkpoint_path(run, "finetune", "last"), marker)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "pages" / "score.py"), default_timeout=60)
    at.session_state["workspace"] = str(ws)
    at.run()
    assert not at.exception
    assert any("refused" in e.value for e in at.error)
    assert not marker.exists()


def test_ae_baseline_ignores_hostile_model_cache(tmp_path, capsys):
    from rcmae.evaluation.baselines import ae

    data = write_tiny_dcase(tmp_path / "d", seconds=1.0, seed=2)
    out = tmp_path / "ae"
    (out / "models").mkdir(parents=True)
    marker = tmp_path / "pwned"
    for mtype in ("fan", "valve"):
        write_hostile(out / "models" / f"model_{mtype}.pt", marker)
    from rcmae.data.index import index_dataset

    ae.run_ae(index_dataset(data), out, epochs=1, progress=False)
    assert not marker.exists()
    assert "refused" in capsys.readouterr().err
    # The cache was rebuilt with a clean model that loads weights-only.
    assert "state_dict" in load_checkpoint(out / "models" / "model_fan.pt")
