"""Running the reproduction: every planned step that is not done yet, each logged, then the report."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from rcmae.evaluation.reproduce.fetch import ReproduceError, check_layout, fetch_dcase2020, pretrain_view
from rcmae.evaluation.reproduce.plan import Options, plan, pretrain_view_path
from rcmae.evaluation.reproduce.report import write_report
from rcmae.files import read_json, write_json


# ---------------------------------------------------------------- running
def _run_child(argv: list[str], log_path: Path, log: Callable[[str], None],
               cli_main: Callable[[list[str]], int] | None = None) -> None:
    """Run one ``python -m rcmae.cli ...`` step with its output in ``log_path``.

    ``cli_main`` (the ``rcmae`` command's ``main``, passed down by the CLI) runs the step here instead (one
    device: no DDP relaunch to allow for, and no second interpreter start-up); several GPUs always get a child
    process, which Lightning's DDP relaunches.
    """
    import contextlib

    log_path.parent.mkdir(parents=True, exist_ok=True)
    log(f"  $ {' '.join(argv)}  > {log_path}")
    with open(log_path, "a") as fh:
        if cli_main is not None:
            with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
                rc = cli_main(argv[3:])
        else:
            rc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0:
        tail = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()][-1:]
        raise ReproduceError(f"{' '.join(argv[3:5])} failed (exit {rc}): {tail[0] if tail else ''}; "
                             f"see {log_path}; run `rcmae reproduce` again to resume")


def check_bank_covers(view: Path, bank: Path) -> None:
    """Refuse the with-DDA arm unless every pretraining clip has an AudioLDM copy in the bank.

    ``rcmae pretrain`` pairs a clip without a copy with a SpecAugment twin (and says so); in the reproduction
    that would make the Table 3 comparison part SpecAugment against SpecAugment, so it stops here instead.
    """
    from rcmae.augment.bank import BankPairs
    from rcmae.data.checks import drop_train_anomalies
    from rcmae.data.index import index_dataset

    index = drop_train_anomalies(index_dataset(view), view)
    clips = list(index.loc[index["split"] == "train", "path"])
    try:
        pairs = BankPairs(bank)
    except FileNotFoundError:
        pairs = None
    missing = [c for c in clips if pairs is None or c not in pairs]
    if missing:
        raise ReproduceError(f"bank {bank}: {len(missing)} of {len(clips)} pretraining clips have no AudioLDM copy "
                             f"(e.g. {Path(missing[0]).name}); the with-DDA arm would pair them with SpecAugment "
                             "twins. Run `rcmae reproduce` again to resume the bank, then pretraining")


def _stage_done(run: Path, stage: str) -> bool:
    path = run / "run.json"
    return path.is_file() and stage in read_json(path).get("stages", {})


def run_all(opts: Options, log: Callable[[str], None] = print,
            cli_main: Callable[[list[str]], int] | None = None) -> Path:
    """Run every step of :func:`plan` that is not done yet, then write the report; returns ``OUT/report.md``.

    ``cli_main`` lets single-device steps run in this process (the CLI passes its own ``main``); without it
    every step is a ``python -m rcmae.cli`` child process.
    """
    out = opts.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = opts.data.resolve() if opts.data else out / "data" / "dcase2020"
    if opts.data is None:
        fetch_dcase2020(data, base=opts.mirror, log=log)
    elif not data.is_dir():
        raise FileNotFoundError(f"{data}: data folder not found; pass --data a DCASE 2020 Task 2 folder")
    layout = check_layout(data)
    write_json(out / "data.json", layout)
    log(f"data: {layout['train_clips']} training clips, {len(layout['classes'])} machine-ID classes "
        f"(the paper: 41), {layout['test_clips']} labelled test clips")
    pretrain_view(data, pretrain_view_path(opts, data), opts.pretrain_data)
    logs = out / "logs"
    bank_steps = [s for s in plan(opts) if s["step"].startswith("bank ")]
    single = opts.n_gpus <= 1
    if len(bank_steps) == 1:
        log("bank: 1 shard")
        _run_child(bank_steps[0]["argv"], logs / "bank-0-of-1.log", log, cli_main=cli_main)
    elif bank_steps:
        # Shards run side by side, one per GPU; build_bank resumes each from its manifest.
        log(f"bank: {len(bank_steps)} shard(s)")
        procs = []
        for step in bank_steps:
            path = logs / f"bank-{step['step'].split()[1].replace('/', '-of-')}.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(path, "a")  # noqa: SIM115 - closed below, after the process ends
            procs.append((subprocess.Popen(step["argv"], stdout=fh, stderr=subprocess.STDOUT), fh, path))
        failed = []
        for proc, fh, path in procs:
            if proc.wait() != 0:
                failed.append(str(path))
            fh.close()
        if failed:
            raise ReproduceError(f"bank: {len(failed)} shard(s) failed, see {', '.join(failed)}; "
                                 "run `rcmae reproduce` again to resume")
    for step in plan(opts):
        name = step["step"]
        if step["argv"] is None or name.startswith("bank "):
            continue
        kind, arm = name.split()
        run = out / "runs" / arm
        argv = list(step["argv"])
        if kind == "pretrain":
            if _stage_done(run, "pretrain"):
                continue
            if arm == "rcmae":
                check_bank_covers(pretrain_view_path(opts, data), out / "bank-audioldm")
            if (run / "checkpoints" / "pretrain-last.ckpt").is_file():
                argv.append("--resume")
        elif kind == "finetune":
            if _stage_done(run, "finetune"):
                continue
            if (run / "checkpoints" / "finetune-last.ckpt").is_file():
                argv.append("--resume")
        elif kind == "evaluate" and (run / "eval" / "results.json").is_file() and \
                "evaluated" in read_json(run / "run.json"):
            continue
        elif kind == "figures" and (out / "figures" / arm / "tsne_finetune.png").is_file():
            continue
        log(f"{name}")
        _run_child(argv, logs / f"{kind}-{arm}.log", log, cli_main=cli_main if single else None)
    return write_report(out, opts)
