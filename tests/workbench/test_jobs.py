"""The job registry: real detached processes, states, logs, cancel, restart, GPU queueing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rcmae.workbench import jobs
from rcmae.workbench import processes as jobs_processes
from rcmae.workbench.jobs import Job, JobStore


def _wait(store: JobStore, job_id: int, states=("done", "failed", "cancelled", "killed"),
          timeout: float = 60.0) -> Job:
    """Refresh the store until the job reaches one of ``states`` (test_jobs_safety uses it too)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        jobs.refresh(store)
        job = store.get(job_id)
        if job.state in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} stuck in {store.get(job_id).state}")


def _fake(job_id: int, gpus: str = "", after: int | None = None) -> Job:
    return Job(id=job_id, name=f"j{job_id}", kind="pretrain", argv=(), gpus=gpus, state="queued", pid=None,
               pid_start=None, created=0.0, started=None, ended=None, returncode=None, log="", out="", cwd="",
               after=after, note="")


def test_real_rcmae_job_goes_queued_running_done(tmp_path: Path, tiny_dcase: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    job = jobs.launch(store, ["index", str(tiny_dcase)], name="index tiny")
    assert store.get(job.id).state == "queued"
    (started,) = jobs.start_ready(store, gpus=[])
    assert started.id == job.id and started.state == "running" and started.pid is not None
    # The pid start time matches /proc, which is how a restarted app tells the job from a reused pid.
    stat = jobs_processes.proc_stat(started.pid)
    assert stat is None or stat[1] == started.pid_start
    done = _wait(store, job.id)
    assert (done.state, done.returncode) == ("done", 0), jobs.tail_log(done, 50)
    log = jobs.tail_log(done, 100)
    # `rcmae index` prints the count table: 6 normal train clips per ID, 4 normal + 4 anomalous test clips.
    assert "fan" in log and "valve" in log
    rows = [line.split() for line in log.splitlines() if line.split()[:1] in (["fan"], ["valve"])]
    counts = sorted(int(r[-1]) for r in rows)
    assert counts == sorted([6] * 4 + [4] * 8)
    assert "[exit 0]" in log


def test_failing_job_is_failed_with_log_tail(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    job = jobs.launch(store, ["-c", "import sys; print('about to fail'); sys.exit(3)"], raw_python=True)
    jobs.start_ready(store, gpus=[])
    end = _wait(store, job.id)
    assert (end.state, end.returncode) == ("failed", 3)
    assert "about to fail" in jobs.tail_log(end, 5)
    # A bad rcmae command (missing folder) fails with the CLI's one-line error in the log.
    bad = jobs.launch(store, ["index", str(tmp_path / "nowhere")])
    jobs.start_ready(store, gpus=[])
    end = _wait(store, bad.id)
    assert end.state == "failed" and end.returncode == 2
    assert "rcmae index: error:" in jobs.tail_log(end, 5)


def test_cancel_kills_the_process_group(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    # The job itself spawns a grandchild: cancel must take down the whole group, not just the wrapper.
    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
            "print('sleeping', flush=True); time.sleep(60)")
    job = jobs.launch(store, ["-c", code], raw_python=True)
    queued = jobs.launch(store, ["-c", "print('never')"], raw_python=True)
    jobs.start_ready(store, gpus=[])
    deadline = time.time() + 30
    while "sleeping" not in jobs.tail_log(store.get(job.id)) and time.time() < deadline:
        time.sleep(0.05)
    running = store.get(job.id)
    assert running.state == "running" and store.get(queued.id).state == "queued"  # one CPU job at a time
    assert jobs_processes.process_group_alive(running.pid)
    assert jobs.cancel(store, job.id).state == "cancelled"
    assert not jobs_processes.process_group_alive(running.pid)
    assert jobs.cancel(store, queued.id).state == "cancelled"
    jobs.refresh(store)
    assert [j.state for j in store.list()] == ["cancelled", "cancelled"]
    assert "never" not in jobs.tail_log(store.get(queued.id))


def test_new_store_sees_same_jobs_and_reaps_finished(tmp_path: Path) -> None:
    db = tmp_path / "ws" / "jobs.sqlite"
    store = JobStore(db)
    job = jobs.launch(store, ["-c", "print('hello from job')"], raw_python=True, name="hello")
    jobs.start_ready(store, gpus=[])
    # "Restart the app": forget our Popen handles; a new store must reconcile from /proc and the .rc file.
    jobs._CHILDREN.clear()
    again = JobStore(db)
    end = _wait(again, job.id)
    assert (end.name, end.state, end.returncode) == ("hello", "done", 0)
    assert "hello from job" in jobs.tail_log(end)
    assert [j.id for j in JobStore(db).list()] == [job.id]


def test_env_gets_cuda_visible_devices(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    code = "import os; print('CVD=[' + os.environ['CUDA_VISIBLE_DEVICES'] + ']')"
    cpu = jobs.launch(store, ["-c", code], raw_python=True)
    gpu = jobs.launch(store, ["-c", code], raw_python=True, gpus="1")
    jobs.start_ready(store, gpus=["0", "1"])  # pretend two GPUs: the GPU job may run beside the CPU job
    assert _wait(store, cpu.id).state == "done" and _wait(store, gpu.id).state == "done"
    assert "CVD=[]" in jobs.tail_log(store.get(cpu.id))
    assert "CVD=[1]" in jobs.tail_log(store.get(gpu.id))


def test_after_chains_and_cancels_on_failure(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    a = jobs.launch(store, ["-c", "import sys; sys.exit(1)"], raw_python=True)
    b = jobs.launch(store, ["-c", "print('b')"], raw_python=True, after=a.id)
    jobs.start_ready(store, gpus=[])
    assert store.get(b.id).state == "queued"
    _wait(store, a.id)
    jobs.start_ready(store, gpus=[])
    b_end = store.get(b.id)
    assert b_end.state == "cancelled" and f"job {a.id}" in b_end.note


def test_plan_starts_gpu_queueing() -> None:
    # Two GPUs; job 1 holds GPU 0.
    running = [_fake(1, "0")]
    queued = [_fake(2, "0"), _fake(3, "1"), _fake(4, "0,1"), _fake(5, ""), _fake(6, ""), _fake(7, "2")]
    start, invalid = jobs.plan_starts(queued, running, gpus=["0", "1"], cpu_slots=1)
    # 2 waits for GPU 0; 3 takes GPU 1; 4 needs both (busy); one CPU slot -> 5 only; 7 asks for a missing GPU.
    assert [j.id for j in start] == [3, 5]
    assert [(j.id, "GPU 2 not detected" in why) for j, why in invalid] == [(7, True)]
    # A blocked multi-GPU job reserves its GPUs: job 9 (GPU 1) must not jump ahead of job 8 (GPUs 0,1).
    start, _ = jobs.plan_starts([_fake(8, "0,1"), _fake(9, "1")], [_fake(1, "0")], gpus=["0", "1"])
    assert start == []
    # Free machine, two CPU slots, dependency not yet met for job 12.
    start, _ = jobs.plan_starts([_fake(10), _fake(11), _fake(12, after=99)], [], gpus=[], cpu_slots=2)
    assert [j.id for j in start] == [10, 11]
    start, _ = jobs.plan_starts([_fake(12, after=99)], [], gpus=[], cpu_slots=1, finished_ok={99})
    assert [j.id for j in start] == [12]


def test_bad_requests_raise_one_line(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    with pytest.raises(jobs.JobError, match="gpus: 'x' is not a GPU index"):
        jobs.launch(store, ["index", "."], gpus="x")
    with pytest.raises(jobs.JobError, match="empty command"):
        jobs.launch(store, [])
    with pytest.raises(jobs.JobError, match="job 42: no such job"):
        store.get(42)
    job = jobs.launch(store, ["evaluate", "--run", str(tmp_path / "r")])
    assert job.out == str((tmp_path / "r").resolve())
    with pytest.raises(jobs.JobError, match="only pretrain and finetune"):
        jobs.resume_argv(job)
    pre = jobs.launch(store, ["pretrain", "--data", "d", "--out", "o"])
    assert jobs.resume_argv(pre)[-1] == "--resume"


def test_cli_jobs_list_launch_log(tmp_path: Path, capsys) -> None:
    from rcmae import cli

    ws = tmp_path / "ws"
    # Run the CLI in-process; the queue runner it spawns is detached and exits once the queue is empty.
    assert cli.main(["jobs", "--workspace", str(ws), "launch", "--name", "n1", "index", str(tmp_path)]) == 0
    store = JobStore(ws / "jobs.sqlite")
    (job,) = store.list()
    assert job.name == "n1" and job.argv == ("index", str(tmp_path))
    end = _wait(store, job.id)
    assert end.state == "failed"  # an empty folder is not a data set
    capsys.readouterr()
    assert cli.main(["jobs", "--workspace", str(ws), "log", str(job.id), "--lines", "3"]) == 0
    assert "rcmae index: error:" in capsys.readouterr().out
    assert cli.main(["jobs", "--workspace", str(ws), "list"]) == 0
    assert f"{job.id}  failed" in capsys.readouterr().out


def test_demo_app_jobs_hold_no_cpu_slot() -> None:
    import dataclasses

    demo = dataclasses.replace(_fake(20), kind="demo-app")
    # A running demo app does not block the one CPU slot; a queued one starts even when the slot is taken.
    start, _ = jobs.plan_starts([_fake(21)], [dataclasses.replace(demo, state="running")], gpus=[], cpu_slots=1)
    assert [j.id for j in start] == [21]
    start, _ = jobs.plan_starts([_fake(22), dataclasses.replace(demo, id=23)], [_fake(1)], gpus=[], cpu_slots=1)
    assert [j.id for j in start] == [23]


# ---------------------------------------------------------------- progress lines (Jobs and Start pages)
def test_progress_label_and_fraction_for_each_kind_of_work():
    from rcmae.workbench import progress_fraction, progress_label

    train = {"stage": "pretrain", "epoch": 3, "epochs": 8, "step": 30, "steps": 80, "loss": 0.5, "state": "running"}
    assert progress_label(train) == "pretrain epoch 3/8, step 30/80, loss 0.5000"
    assert progress_fraction(train) == pytest.approx(30 / 80)
    fitting = {**train, "state": "fitting", "fit_step": 1, "fit_steps": 4, "scorer": "frame_pca"}
    assert progress_label(fitting) == "pretrain: fitting scorers, 1/4 (frame_pca)"
    assert progress_fraction(fitting) == pytest.approx(0.25)
    evaluating = {"stage": "evaluate", "state": "running", "eval_step": 2, "eval_steps": 5, "scorer": "knn"}
    assert progress_label(evaluating) == "evaluate: scorer 2/5 (knn)"
    assert progress_fraction(evaluating) == pytest.approx(0.4)
    assert progress_fraction({**evaluating, "state": "done"}) == 1.0
    assert progress_label(None) == "" and progress_fraction(None) == 0.0


def test_chain_eta_from_the_running_rate_and_past_durations(tmp_path):
    from types import SimpleNamespace as Job

    from rcmae.workbench import chain_eta

    run = tmp_path / "run"
    run.mkdir()
    (run / "progress.json").write_text(json.dumps({"stage": "pretrain", "step": 25, "steps": 100,
                                                   "state": "running"}))
    running = Job(kind="pretrain", state="running", out=str(run), duration=30.0)
    queued = Job(kind="evaluate", state="queued", out=None, duration=None)
    history = [Job(kind="evaluate", state="done", duration=d) for d in (20.0, 40.0, 60.0)]
    # 25 % in 30 s: 90 s left of it, then the median evaluate (40 s).
    assert chain_eta([running, queued], history) == "About 2 min left"
    assert chain_eta([running], history) == "About 90 s left"
    assert chain_eta([running, queued], []) == ""  # an unknown duration: no guess
