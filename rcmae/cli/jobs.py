"""`rcmae jobs list|launch|cancel|log|run-queue`."""

from __future__ import annotations

import argparse
import sys

from rcmae.workbench.jobs import ACTIVE, Job, JobError, JobStore, cancel, launch, refresh, start_ready, tail_log
from rcmae.workbench.runner import ensure_runner, revive_runner, run_queue


# ---------------------------------------------------------------- rcmae jobs ...
def _format_row(job: Job) -> str:
    dur = f"{job.duration:7.1f}s" if job.duration is not None else "       -"
    rc = "" if job.returncode is None else f"rc={job.returncode}"
    return f"{job.id:>4}  {job.state:<9}  {job.gpus or 'cpu':<5}  {dur}  {rc:<6}  {job.name}"


def _cmd_jobs(args: argparse.Namespace) -> int:
    """``rcmae jobs list|launch|cancel|log|run-queue`` (see :func:`rcmae.cli._add_jobs`)."""
    from rcmae.workspace import Workspace

    store = JobStore(Workspace.default(args.workspace).jobs_db)
    if args.action != "run-queue" and revive_runner(store):
        print("the queue runner was not running (killed?): restarted it for the queued jobs", file=sys.stderr)
    if args.action == "list":
        jobs = refresh(store)
        if not jobs:
            print("no jobs")
        for job in jobs:
            print(_format_row(job))
        return 0
    if args.action == "launch":
        argv = list(args.argv[1:] if args.argv[:1] == ["--"] else args.argv)
        job = launch(store, argv, gpus=args.gpus, name=args.name)
        started = start_ready(store)
        ensure_runner(store)
        state = "started" if any(j.id == job.id for j in started) else "queued"
        print(f"job {job.id} {state}: {' '.join(argv)} (log {job.log})")
        return 0
    if args.action == "cancel":
        job = cancel(store, args.id)
        print(f"job {job.id}: {job.state}")
        return 0
    if args.action == "log":
        refresh(store)
        print(tail_log(store.get(args.id), args.lines))
        return 0
    if args.action == "run-queue":
        run_queue(store, wait=getattr(args, "wait", False))
        for job in store.list(ACTIVE):
            print(_format_row(job))
        return 0
    raise JobError(f"jobs: unknown action {args.action!r}; use list, launch, cancel, log or run-queue")


# ---------------------------------------------------------------- jobs
def add_jobs(sub) -> None:
    p = sub.add_parser("jobs", help="background jobs: list, launch, cancel, log, run-queue")
    p.add_argument("--workspace", default=None, help="workspace folder (default: $RCMAE_WORKSPACE or ./workspace)")
    js = p.add_subparsers(dest="action", required=True)
    js.add_parser("list", help="list jobs and their state")
    la = js.add_parser("launch", help="queue an rcmae command as a background job")
    la.add_argument("--gpus", default="", help="GPU ids for CUDA_VISIBLE_DEVICES, e.g. 0,1 (default: CPU)")
    la.add_argument("--name", default=None)
    la.add_argument("argv", nargs=argparse.REMAINDER, help="the rcmae subcommand and its arguments")
    c = js.add_parser("cancel", help="cancel a job")
    c.add_argument("id", type=int)
    lg = js.add_parser("log", help="print the end of a job's log")
    lg.add_argument("id", type=int)
    lg.add_argument("--lines", type=int, default=40)
    rq = js.add_parser("run-queue", help="start queued jobs whose GPUs are free")
    rq.add_argument("--wait", action="store_true", help="keep starting jobs until the queue is empty")
    p.set_defaults(func=_cmd_jobs)
