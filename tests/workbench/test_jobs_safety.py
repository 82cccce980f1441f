"""Job queue under races and kills: cancel at every state, dead runners revived, cwd kept, kills recorded."""

from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest
from test_jobs import _wait

from rcmae import cli, workbench
from rcmae.workbench import jobs, processes
from rcmae.workbench import runner as jobs_runner
from rcmae.workbench.jobs import JobStore

pytestmark = pytest.mark.reliability  # bad-input cases of the fault-injection suite (issue 11)

# A job that would leave a marker if it ran to its end.
_SLOW = "import pathlib, sys, time; time.sleep(1.5); pathlib.Path(sys.argv[1]).write_text('ran')"


def _group_gone(pgid: int | None, timeout: float = 10.0) -> bool:
    if pgid is None:
        return True
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not processes.process_group_alive(pgid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("when", ["queued", "claimed", "spawned", "running"])
def test_cancel_at_every_state_stops_the_job(tmp_path, when):
    store = JobStore(tmp_path / "jobs.sqlite")
    marker = tmp_path / "marker"
    job = jobs.launch(store, ["-c", _SLOW, str(marker)], raw_python=True)
    hooks = {}
    if when == "queued":
        jobs.cancel(store, job.id)
    elif when in ("claimed", "spawned"):
        # Cancel lands between the claim (state running, no pid) and the pid being recorded.
        hooks[when] = lambda job_id: jobs.cancel(store, job_id)
    started = jobs.start_ready(store, gpus=[], cpu_slots=1, _hooks=hooks)
    if when == "running":
        assert [j.id for j in started] == [job.id] and started[0].pid is not None
        jobs.cancel(store, job.id)
    else:
        assert started == []
    end = store.get(job.id)
    assert end.state == "cancelled"
    assert _group_gone(end.pid)
    time.sleep(2.0)  # longer than the job would need to finish
    jobs.refresh(store)
    assert not marker.exists(), f"a job cancelled when {when} still ran to its end"
    assert store.get(job.id).state == "cancelled"


def test_cancel_done_job_is_a_no_op(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    job = jobs.launch(store, ["-c", "pass"], raw_python=True)
    jobs.start_ready(store, gpus=[], cpu_slots=1)
    assert _wait(store, job.id).state == "done"
    assert jobs.cancel(store, job.id).state == "done"


def test_cancelled_claim_does_not_run_beside_the_next_job(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    first = jobs.launch(store, ["-c", _SLOW, str(tmp_path / "a")], raw_python=True)
    second = jobs.launch(store, ["-c", "import time; time.sleep(0.2)"], raw_python=True)
    jobs.start_ready(store, gpus=[], cpu_slots=1, _hooks={"spawned": lambda i: jobs.cancel(store, i)})
    started = jobs.start_ready(store, gpus=[], cpu_slots=1)
    assert [j.id for j in started] == [second.id]
    assert _group_gone(store.get(first.id).pid, timeout=0.5)  # already dead when the next one starts
    assert _wait(store, second.id).state == "done"
    time.sleep(1.6)
    assert not (tmp_path / "a").exists()


def _runner_pids(store: JobStore) -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"])
            if p.info["cmdline"] and "_runner" in p.info["cmdline"] and str(store.db_path) in p.info["cmdline"]]


def test_dead_runner_is_revived_by_the_next_cli_call(tmp_path, capsys):
    store = JobStore(tmp_path / "jobs.sqlite")
    first = jobs.launch(store, ["-c", "import time; time.sleep(1.0)"], raw_python=True)
    second = jobs.launch(store, ["-c", "import pathlib, sys; pathlib.Path(sys.argv[1]).write_text('ok')",
                                 str(tmp_path / "second")], raw_python=True)
    jobs_runner.ensure_runner(store)
    _wait(store, first.id, states=("running",), timeout=30)
    # Kill the runner once the job's wrapper runs (claimed is not yet spawned: a job killed before its spawn
    # never starts, the other test below).
    deadline = time.time() + 10
    while (not _runner_pids(store) or processes.read_pid_file(store.get(first.id)) is None) and time.time() < deadline:
        time.sleep(0.05)
    for pid in _runner_pids(store):
        os.kill(pid, signal.SIGKILL)
    assert _wait(store, first.id).state == "done"
    time.sleep(1.0)
    assert store.get(second.id).state == "queued" and not jobs_runner.runner_alive(store)
    assert cli.main(["jobs", "--workspace", str(tmp_path), "list"]) == 0
    assert "queue runner was not running" in capsys.readouterr().err
    assert _wait(store, second.id, timeout=60).state == "done"
    assert (tmp_path / "second").read_text() == "ok"


def test_jobs_record_cwd_and_absolute_paths(tmp_path, monkeypatch):
    store = JobStore(tmp_path / "ws" / "jobs.sqlite")
    work = tmp_path / "work"
    work.mkdir()
    job = jobs.launch(store, ["pretrain", "--data", "data/dev", "--out=runs/r1", "--preset", "tiny", "--aug",
                              "specaugment"], cwd=work)
    assert job.cwd == str(work)
    assert list(job.argv) == ["pretrain", "--data", str(work / "data" / "dev"), f"--out={work / 'runs' / 'r1'}",
                              "--preset", "tiny", "--aug", "specaugment"]
    assert job.out == str(work / "runs" / "r1")
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    jobs.cancel(store, job.id)
    again = workbench.relaunch(store, store.get(job.id), resume=True)
    assert again.cwd == str(work) and again.argv == (*job.argv, "--resume")
    jobs.cancel(store, again.id)


def test_run_again_runs_in_the_original_folder(tmp_path, monkeypatch):
    store = JobStore(tmp_path / "jobs.sqlite")
    work = tmp_path / "work"
    (work / "in").mkdir(parents=True)
    (work / "in" / "x.txt").write_text("hi")
    # `rcmae index` with a relative folder: only works from the job's own working directory.
    job = jobs.launch(store, ["index", "in"], cwd=work)
    jobs.start_ready(store, gpus=[], cpu_slots=1)
    first = _wait(store, job.id)
    monkeypatch.chdir(tmp_path)
    again = workbench.relaunch(store, first)
    end = _wait(store, again.id)
    assert again.cwd == str(work) and end.state == first.state and end.returncode == first.returncode
    assert "not found" not in jobs.tail_log(end, 5)


_FAKE_TRAIN = """
import json, pathlib, sys, time
out = pathlib.Path(sys.argv[sys.argv.index('--out') + 1])
(out / 'checkpoints').mkdir(parents=True, exist_ok=True)
(out / 'checkpoints' / 'pretrain-last.ckpt').write_bytes(b'x')
(out / 'tmp.json').write_text(json.dumps({'stage': 'pretrain', 'state': 'running', 'epoch': 1}))
(out / 'tmp.json').replace(out / 'progress.json')  # atomic, as rcmae writes it
time.sleep(60)
"""


@pytest.mark.parametrize("target", ["group", "child"])
def test_kill_marks_job_and_progress_killed(tmp_path, target):
    store = JobStore(tmp_path / "jobs.sqlite")
    out = tmp_path / "run"
    job = jobs.launch(store, ["-c", _FAKE_TRAIN, "--out", str(out)], raw_python=True)
    jobs.start_ready(store, gpus=[], cpu_slots=1)
    deadline = time.time() + 30
    while not (out / "progress.json").is_file() and time.time() < deadline:
        time.sleep(0.05)
    running = store.get(job.id)
    if target == "group":  # kill -9 of everything: the wrapper cannot write a return code
        os.killpg(running.pid, signal.SIGKILL)
    else:  # kill -9 of the command only: the wrapper records -9
        child = psutil.Process(running.pid).children()[0]
        child.send_signal(signal.SIGKILL)
    end = _wait(store, job.id)
    assert end.state == "killed"
    ckpt = out / "checkpoints" / "pretrain-last.ckpt"
    assert str(ckpt) in end.note and "Resume" in end.note
    progress = json.loads((out / "progress.json").read_text())
    assert progress["state"] == "killed" and progress["checkpoint"] == str(ckpt)
    assert end.returncode == (None if target == "group" else -9)


def test_a_wrapper_whose_launcher_died_before_recording_its_pid_is_adopted(tmp_path):
    # The launcher claimed the job (running, no pid) and spawned the wrapper, then died before writing the pid.
    # Long after the start grace, refresh must find the wrapper by the pid file it wrote, not call it failed.
    import subprocess
    import sys
    from pathlib import Path

    store = JobStore(tmp_path / "jobs.sqlite")
    job = jobs.launch(store, ["-c", "import time; time.sleep(0.5)"], raw_python=True)
    store.update(job.id, state="running", started=time.time() - 10 * jobs._START_GRACE_S)
    job = store.get(job.id)
    Path(job.log).parent.mkdir(parents=True, exist_ok=True)  # as the launcher's spawn does
    wrapper = subprocess.Popen([sys.executable, "-m", "rcmae.workbench.runner", "_exec", "--rc", str(job.rc_path),
                                "--", *job.command], stdout=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 30
    while processes.read_pid_file(job) is None and time.time() < deadline:
        time.sleep(0.02)
    pid, start = processes.read_pid_file(job)
    assert pid == wrapper.pid and start == processes.proc_stat(wrapper.pid)[1]
    jobs.refresh(store)
    adopted = store.get(job.id)
    assert (adopted.state, adopted.pid, adopted.pid_start) == ("running", wrapper.pid, start)
    wrapper.wait(timeout=30)
    final = _wait(store, job.id)
    assert (final.state, final.returncode) == ("done", 0)
