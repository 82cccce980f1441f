"""Fault injection: kill -9 mid-training/augmenting/queued, torn and empty files, racing processes.

Every case here is one fault. A fault *survives* when rcmae either recovers exactly (a resumed run
ends with weights bit-identical to an uninterrupted one; a resumed bank has the same sha256 for
every file) or stops with one line that names the damaged file; it is *lost* otherwise. The
``reliability`` marker selects these tests with the other bad-input suites; ``bench/bench_reliability.py``
runs them and writes bench/results/reliability.md (faults tried, survived, lost).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHORT_OVERRIDES

from rcmae import cli, workbench
from rcmae.run import folder as train
from rcmae.run.checkpoint import load_checkpoint
from rcmae.training import stages
from rcmae.workbench import jobs, runner

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3  # 24 clips, batch 8: 3 steps an epoch, 9 in all
SEEDS = [0, 1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")

# Runs a stage and SIGKILLs itself right after optimizer step `step` (no clean-up of any kind can run).
_KILL_AT = """
import os, signal, sys
from lightning.pytorch.callbacks import Callback
from rcmae.training import stages

class KillAt(Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= STEP:
            os.kill(os.getpid(), signal.SIGKILL)

stage, data, run, STEP, epochs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
if stage == "pretrain":
    stages.pretrain(data, run, epochs=epochs, overrides=sys.argv[6:], progress=False, callbacks=[KillAt()])
else:
    stages.finetune(run, epochs=epochs, progress=False, callbacks=[KillAt()])
"""


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(ckpt)["state_dict"]


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def reference(short_run, tmp_path_factory) -> dict[str, Path]:
    """Uninterrupted runs: pretrain EPOCHS epochs, then finetune EPOCHS epochs (the bit-exact targets)."""
    data, _ = short_run
    root = tmp_path_factory.mktemp("reliability_ref")
    pre = root / "pre"
    stages.pretrain(data, pre, epochs=EPOCHS, overrides=SHORT_OVERRIDES, progress=False)
    fin = root / "fin"
    shutil.copytree(pre, fin)
    stages.finetune(fin, epochs=EPOCHS, progress=False)
    return {"data": data, "pre": pre, "fin": fin}


def _kill_run(stage: str, data: Path, run: Path, step: int) -> int:
    proc = subprocess.run([sys.executable, "-c", _KILL_AT, stage, str(data), str(run), str(step), str(EPOCHS),
                           *SHORT_OVERRIDES], env=ENV, capture_output=True, text=True, timeout=300)
    return proc.returncode


@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_pretrain_then_resume_is_bit_identical(reference, tmp_path, seed):
    step = random.Random(100 + seed).randint(1, EPOCHS * 3 - 1)
    run = tmp_path / "run"
    assert _kill_run("pretrain", reference["data"], run, step) == -signal.SIGKILL
    resume = train.checkpoint_path(run, "pretrain", "last").is_file()
    stages.pretrain(reference["data"], run, epochs=EPOCHS, overrides=SHORT_OVERRIDES, progress=False, resume=resume)
    assert _same_weights(train.checkpoint_path(run, "pretrain"), train.checkpoint_path(reference["pre"], "pretrain"))


@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_finetune_then_resume_is_bit_identical(reference, tmp_path, seed):
    step = random.Random(200 + seed).randint(1, EPOCHS * 3 - 1)
    run = tmp_path / "run"
    shutil.copytree(reference["pre"], run)
    assert _kill_run("finetune", reference["data"], run, step) == -signal.SIGKILL
    resume = train.checkpoint_path(run, "finetune", "last").is_file()
    stages.finetune(run, epochs=EPOCHS, progress=False, resume=resume)
    assert _same_weights(train.checkpoint_path(run, "finetune"), train.checkpoint_path(reference["fin"], "finetune"))


def _bank_digest(bank: Path) -> dict[str, str]:
    return {p.relative_to(bank).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(bank.rglob("*")) if p.is_file() and not p.name.startswith(".")}


@pytest.fixture(scope="module")
def reference_bank(reference, tmp_path_factory) -> Path:
    from rcmae.augment.bank import build_bank

    bank = tmp_path_factory.mktemp("reliability_bank") / "bank"
    build_bank(reference["data"], bank, per_clip=1, progress=False)
    return bank


@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_augment_then_resume_is_bit_identical(reference, reference_bank, tmp_path, seed):
    from rcmae.augment.bank import build_bank

    target = random.Random(300 + seed).randint(1, 20)  # kill once this many clips are in the manifest
    bank = tmp_path / "bank"
    proc = subprocess.Popen([sys.executable, "-m", "rcmae.cli", "augment", "--data", str(reference["data"]),
                             "--out", str(bank), "--per-clip", "1"], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        manifests = list(bank.glob("manifest*.csv"))
        if manifests and manifests[0].read_text().count("\n") > target:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    build_bank(reference["data"], bank, per_clip=1, progress=False)
    assert _bank_digest(bank) == _bank_digest(reference_bank)


def test_sigkill_queued_pretrain_job_then_resume_is_bit_identical(reference, tmp_path):
    store = jobs.JobStore(tmp_path / "ws" / "jobs.sqlite")
    run = tmp_path / "run"
    argv = ["pretrain", "--data", str(reference["data"]), "--out", str(run), "--epochs", str(EPOCHS),
            *[f"--set={o}" for o in SHORT_OVERRIDES]]
    job = jobs.launch(store, argv, cwd=tmp_path)
    jobs.start_ready(store, gpus=[], cpu_slots=1)
    ckpt = train.checkpoint_path(run, "pretrain")
    delay = random.Random(400).uniform(0.0, 0.5)
    deadline = time.time() + 180
    while not ckpt.is_file() and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(delay)
    os.killpg(store.get(job.id).pid, signal.SIGKILL)
    deadline = time.time() + 30
    while store.get(job.id).state == "running" and time.time() < deadline:
        jobs.refresh(store)
        time.sleep(0.05)
    killed = store.get(job.id)
    if killed.state == "killed":  # it could have finished inside the delay: then there is nothing to resume
        assert str(ckpt) in killed.note
        again = workbench.relaunch(store, killed, resume=True)
        runner.run_queue(store, wait=True, poll_s=0.1)
        assert store.get(again.id).state == "done", jobs.tail_log(store.get(again.id), 20)
    assert _same_weights(ckpt, train.checkpoint_path(reference["pre"], "pretrain"))


# ----------------------------------------------------------------------------------- torn and empty files
# Every file type a run (and the workbench) writes, with the command that reads it back.
RUN_FILES = ["config.yaml", "run.json", "stats.json", "thresholds.json", "checkpoints/pretrain-last.ckpt",
             "checkpoints/finetune-last.ckpt", "embeddings/finetune.npz", "embeddings/pretrain.npz",
             "references/clipstats.npz"]
EVAL_FILES = ["eval/results.json", "eval/scores.csv"]
PROGRESS_FILES = ["progress.json", "metrics.csv"]


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(b"" if how == "empty" else data[: max(1, len(data) // 2)])


def _one_line_naming(stderr: str, name: str) -> bool:
    lines = [ln for ln in stderr.strip().splitlines() if "clip/s" not in ln and "it/s" not in ln]
    errors = [ln for ln in lines if "error" in ln.lower() or "traceback" in ln.lower()]
    return len(errors) == 1 and name in errors[0] and "Traceback" not in stderr


@pytest.fixture(scope="module")
def evaluated(short_run, tmp_path_factory) -> Path:
    _, run0 = short_run
    run = tmp_path_factory.mktemp("reliability_eval") / "run"
    shutil.copytree(run0, run)
    assert cli.main(["evaluate", "--run", str(run)]) == 0
    return run


@pytest.mark.parametrize("how", ["torn", "empty"])
@pytest.mark.parametrize("name", RUN_FILES)
def test_damaged_run_file_is_one_line_or_recovered(evaluated, short_run, tmp_path, capsys, name, how):
    data, _ = short_run
    run = tmp_path / "run"
    shutil.copytree(evaluated, run)
    _damage(run / name, how)
    clip = next((data / "dev_data" / "fan" / "test").glob("normal_*.wav"))
    capsys.readouterr()
    rc = cli.main(["score", "--run", str(run), str(clip)])
    captured = capsys.readouterr()
    if rc == 0:  # recovered: a derived file (thresholds, embeddings) was refitted from the run's data
        assert "score" in captured.out
    else:
        assert rc == 2 and _one_line_naming(captured.err, Path(name).name), captured.err


@pytest.mark.parametrize("how", ["torn", "empty"])
@pytest.mark.parametrize("name", EVAL_FILES)
def test_damaged_eval_file_is_one_line_on_the_results_page(evaluated, tmp_path, name, how):
    run = tmp_path / "run"
    shutil.copytree(evaluated, run)
    _damage(run / name, how)
    try:
        found = workbench.eval_results(run)
        workbench.score_table(run, next(iter(found)) if found else "knn")
    except ValueError as err:
        assert Path(name).name in str(err) and "\n" not in str(err)


@pytest.mark.parametrize("how", ["torn", "empty"])
@pytest.mark.parametrize("name", PROGRESS_FILES)
def test_damaged_progress_files_do_not_break_the_jobs_page(evaluated, tmp_path, name, how):
    from rcmae import views as viz

    run = tmp_path / "run"
    shutil.copytree(evaluated, run)
    _damage(run / name, how)
    assert workbench.read_progress(run) is None or isinstance(workbench.read_progress(run), dict)
    if name == "metrics.csv":
        try:
            viz.loss_figure(run / name)
        except ValueError:
            # The Jobs page catches exactly this and shows "loss curves unavailable (<path>: <reason>)".
            assert "(ValueError, pd.errors.ParserError)" in (ROOT / "pages" / "jobs.py").read_text()


@pytest.mark.parametrize("how", ["torn", "empty"])
def test_damaged_bank_manifest_is_one_line(reference_bank, tmp_path, how):
    from rcmae.augment.bank import read_manifest

    bank = tmp_path / "bank"
    shutil.copytree(reference_bank, bank)
    manifest = next(bank.glob("manifest*.csv"))
    _damage(manifest, how)
    try:
        rows = read_manifest(bank)
    except ValueError as err:
        assert manifest.name in str(err) and "\n" not in str(err)
    else:
        # A torn last row is dropped (the bank resumes it); never a half row.
        assert len(rows) < 24 and rows["sha256"].str.len().eq(64).all()


@pytest.mark.parametrize("how", ["torn", "empty"])
def test_damaged_bank_wav_is_redone_on_resume(reference, reference_bank, tmp_path, how):
    from rcmae.augment.bank import build_bank

    bank = tmp_path / "bank"
    shutil.copytree(reference_bank, bank)
    wav = sorted(bank.rglob("*.wav"))[3]
    _damage(wav, how)
    capture = build_bank(reference["data"], bank, per_clip=1, progress=False)
    assert _bank_digest(bank) == _bank_digest(reference_bank), capture


@pytest.mark.parametrize("how", ["torn", "empty"])
def test_damaged_job_database_is_one_line(tmp_path, capsys, how):
    db = tmp_path / "jobs.sqlite"
    store = jobs.JobStore(db)
    jobs.launch(store, ["index", "x"])
    _damage(db, how)
    for extra in db.parent.glob("jobs.sqlite-*"):
        extra.unlink()
    rc = cli.main(["jobs", "--workspace", str(tmp_path), "list"])
    captured = capsys.readouterr()
    assert rc in (0, 2)
    if rc == 2:
        assert _one_line_naming(captured.err, "jobs.sqlite"), captured.err


@pytest.mark.parametrize("how", ["torn", "empty"])
def test_damaged_prompt_library_is_one_line(tmp_path, how):
    from rcmae.augment.prompts import PromptLibrary, PromptLibraryError

    lib = PromptLibrary(tmp_path / "prompts.yaml")
    lib.add("Add the steady rhythmic thumping of a stamping press in a car parts factory")
    _damage(tmp_path / "prompts.yaml", how)
    try:
        items = PromptLibrary(tmp_path / "prompts.yaml").list()
    except PromptLibraryError as err:
        assert "prompts.yaml" in str(err) and "\n" not in str(err)
    else:
        assert isinstance(items, list)


def test_eight_processes_racing_on_the_job_database(tmp_path):
    """8 processes add, claim and cancel at once: every job is claimed at most once, none is lost."""
    db = tmp_path / "jobs.sqlite"
    jobs.JobStore(db)
    code = (
        "import sys, random; from rcmae.workbench import jobs\n"
        "store = jobs.JobStore(sys.argv[1]); rnd = random.Random(int(sys.argv[2]))\n"
        "mine = [jobs.launch(store, ['-c', 'pass'], raw_python=True).id for _ in range(6)]\n"
        "for _ in range(4):\n"
        "    jobs.start_ready(store, gpus=[], cpu_slots=3)\n"
        "    jobs.cancel(store, rnd.choice(mine))\n"
        "print(' '.join(map(str, mine)))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(db), str(seed)], stdout=subprocess.PIPE, text=True,
                              env=ENV) for seed in range(8)]
    ids = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        ids += [int(i) for i in out.split()]
    store = jobs.JobStore(db)
    assert sorted(ids) == list(range(1, 49))  # every insert landed, each with its own id
    runner.run_queue(store, wait=True, poll_s=0.1)
    final = {j.id: j for j in store.list()}
    assert set(final) == set(ids)
    assert all(j.state in ("done", "cancelled") for j in final.values()), {j.state for j in final.values()}
    for j in final.values():
        if j.state == "done":
            # Each job's log has exactly one run: no job was started twice.
            assert jobs.tail_log(j, 100).count("[exit 0]") == 1


# ---------------------------------------------------------------- issue 19: flags that cannot destroy, NaN, one writer
def test_export_overwrite_refuses_a_run_folder_and_any_other_folder(short_run, tmp_path, capsys):
    _, trained = short_run
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"\xff\xd8 not a bundle")
    for target, why in ((run, "is the run folder"), (run / "checkpoints", "inside or around it"),
                        (other, "not a bundle (no detector.json)")):
        assert cli.main(["export", "--run", str(run), "--out", str(target), "--overwrite"]) == 2
        assert why in capsys.readouterr().err
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before  # nothing deleted
    assert (other / "holiday.jpg").read_bytes() == b"\xff\xd8 not a bundle"
    # A bundle may be replaced by a bundle.
    bundle = tmp_path / "bundle"
    assert cli.main(["export", "--run", str(run), "--out", str(bundle), "--examples", "0"]) == 0
    assert cli.main(["export", "--run", str(run), "--out", str(bundle), "--examples", "0", "--overwrite"]) == 0


def test_an_overflowing_clip_is_invalid_never_normal(short_run, tmp_path, capsys):
    import json

    import soundfile as sf

    from rcmae.deploy.monitor import find_events

    data, trained = short_run
    clip = sorted((data / "dev_data" / "fan" / "test").glob("normal_id_00_*.wav"))[0]
    loud = tmp_path / "fan" / "test" / clip.name
    loud.parent.mkdir(parents=True)
    y, sr = sf.read(clip, dtype="float32")
    sf.write(loud, y * np.float32(1e20), sr, subtype="FLOAT")  # finite samples whose power overflows float32
    rc = cli.main(["score", "--run", str(trained), str(loud), "--json"])
    out = capsys.readouterr().out
    rows = json.loads(out, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    assert rc != 0 and rows[0]["decision"] == "invalid" and rows[0]["score"] is None
    assert loud.name in rows[0]["error"]
    # The monitor reports such windows as their own kind of event, whatever their length.
    ev = find_events([5.0, 6.0, 7.0, 8.0], [0.1, float("nan"), float("inf"), 0.2], threshold=1.0, hop=1.0,
                     min_duration=5.0)
    assert ev[["start_s", "end_s", "kind"]].values.tolist() == [[5.5, 7.5, "invalid"]]


def test_two_writers_of_one_run_folder_leave_one_intact_run_and_one_clear_error(short_run, tmp_path):
    import yaml

    data, _ = short_run
    run = tmp_path / "run"
    cmds = [[sys.executable, "-m", "rcmae.cli", "pretrain", "--data", str(data), "--out", str(run), "--epochs", "2",
             *[f"--set={o}" for o in SHORT_OVERRIDES], f"--set=seed={seed}"] for seed in (0, 5)]
    procs = [subprocess.Popen(c, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 2], outs
    loser = codes.index(2)
    # Which message the loser gets depends on timing: the holder's lock while it trains, or, when the winner was
    # already done, the finished run it would overwrite. Either way it wrote nothing.
    assert ("in use by PID" in outs[loser][1] or "already holds a trained run" in outs[loser][1]), outs[loser][1]
    assert str(run) in outs[loser][1]
    winner_seed = (0, 5)[codes.index(0)]
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == winner_seed
    state = load_checkpoint(train.checkpoint_path(run, "pretrain"))
    assert state["rcmae"]["config"]["seed"] == winner_seed  # config and weights from the same writer
    # A writer that meets a held lock stops at once, names the holder, and writes nothing.
    from rcmae.run.folder import writer_lock

    fresh = tmp_path / "fresh"
    with writer_lock(fresh, command="the test's own stage"):
        late = subprocess.run([*cmds[0][:7], str(fresh), *cmds[0][8:]], env=ENV, capture_output=True, text=True,
                              timeout=300)
    assert late.returncode == 2 and f"in use by PID {os.getpid()} (the test's own stage)" in late.stderr
    assert sorted(p.name for p in fresh.iterdir()) == [".lock"]
    # The lock went with its holder: the run can be resumed now.
    assert subprocess.run(cmds[codes.index(0)] + ["--resume", "--epochs", "3"], env=ENV,
                          capture_output=True).returncode == 0


def test_smaller_faults_a_fifo_a_null_byte_a_legacy_pickle_and_a_resumed_finetuned_run(short_run, tmp_path, capsys):
    import pickle

    from rcmae.run.checkpoint import CheckpointError
    from rcmae.scorers.detector import Detector
    from rcmae.workspace import Workspace

    data, trained = short_run
    # A FIFO named .wav is skipped with a reason (reading it would block forever).
    fifo = tmp_path / "fan" / "test" / "normal_id_00_00000000.wav"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    (row,) = Detector.load(trained).score_paths([fifo])
    assert row["score"] is None and "not a regular file" in row["error"]
    # A null byte in a typed path gets the ordinary refusal, not a ValueError from the OS.
    ws = Workspace(tmp_path / "ws").ensure()
    with pytest.raises(workbench.PathNotAllowed, match="null byte"):
        workbench.resolve_path(ws, "runs/a\x00b")
    # A pickle the safe loader refuses is called what it is, and no other checkpoint of the run is suggested.
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "pretrain-last.ckpt"
    bad.write_bytes(pickle.dumps({"state_dict": Evil()}, protocol=0))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    assert "refused" in str(err.value) and "may hold code" in str(err.value) and "best" not in str(err.value)
    assert not marker.exists()
    # Resuming the pretraining of a fine-tuned run says what that does to the fine-tuned weights.
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    stages.pretrain(data, run, epochs=2, overrides=SHORT_OVERRIDES, progress=False, resume=True)
    assert "run `rcmae finetune --run" in capsys.readouterr().err


def test_a_partial_evaluation_names_its_units_and_keeps_earlier_results_unless_asked(short_run, tmp_path, capsys):
    data, trained = short_run
    run, partial = tmp_path / "run", tmp_path / "partial"
    shutil.copytree(trained, run)
    shutil.copytree(data, partial)
    assert cli.main(["evaluate", "--run", str(run)]) == 0
    results = run / "eval" / "results.json"
    before = results.read_bytes()
    for f in (partial / "dev_data" / "fan" / "test").glob("normal_id_00_*.wav"):
        f.unlink()  # fan/00 keeps only anomalies: its AUC cannot be measured
    capsys.readouterr()
    assert cli.main(["evaluate", "--run", str(run), "--data", str(partial / "dev_data")]) == 2
    err = capsys.readouterr().err
    assert "fan/00" in err and "earlier eval/ results are kept" in err and "--allow-partial" in err
    assert results.read_bytes() == before
    assert cli.main(["evaluate", "--run", str(run), "--data", str(partial / "dev_data"), "--allow-partial"]) == 0
    assert "fan/00" in capsys.readouterr().err and results.read_bytes() != before


def test_a_hostile_torchscript_bundle_runs_nothing_without_trust_and_a_tampered_one_is_refused(
        demo_bundle_torchscript, tmp_path, capsys):
    import json

    from rcmae.deploy.bundle import MANIFEST, Bundle, BundleTrustError, file_hashes

    marker = tmp_path / "marker"

    class Hostile(torch.nn.Module):  # what a crafted detector.pt can do: write files when it runs
        def __init__(self, path: str) -> None:
            super().__init__()
            self.path = path

        def forward(self, wave: torch.Tensor, unit: torch.Tensor):
            side = torch.from_file(self.path, shared=True, size=8).sum().double() * 0  # used: not optimised away
            n = wave.shape[0]
            return torch.full([n], -1e9, dtype=torch.float64) + side, torch.zeros(n, 4), torch.zeros(n, 128, 313)

    bundle = tmp_path / "hostile"
    shutil.copytree(demo_bundle_torchscript, bundle)
    torch.jit.script(Hostile(str(marker))).save(str(bundle / "detector.pt"))
    # An attacker writes a matching manifest too: the hashes pass, so only trust stands in the way.
    (bundle / MANIFEST).write_text(json.dumps({"sha256": file_hashes(bundle)}))
    rec = tmp_path / "fan" / "rec.wav"
    rec.parent.mkdir()
    import soundfile as sf

    sf.write(rec, np.zeros(16000 * 12, dtype=np.float32), 16000)
    assert cli.main(["monitor", "--bundle", str(bundle), str(rec), "--machine-type", "fan", "--machine-id", "00",
                     "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "TorchScript bundle is code" in capsys.readouterr().err
    with pytest.raises(BundleTrustError):
        Bundle(bundle).score(np.zeros(160000, dtype=np.float32), "fan", "00")
    assert not marker.exists()  # nothing of it ran
    # With --trust it does run (that is what trust means): the marker appears.
    Bundle(bundle, trust=True).score(np.zeros(160000, dtype=np.float32), "fan", "00")
    assert marker.exists()
    # A file changed after export no longer matches the manifest: refused before anything is read.
    tampered = tmp_path / "tampered"
    shutil.copytree(demo_bundle_torchscript, tampered)
    (tampered / "thresholds.json").write_text("{}")
    with pytest.raises(ValueError, match=r"do not match manifest.json \(thresholds.json\)"):
        Bundle(tampered, trust=True)


def test_a_graph_bundle_is_data_a_hostile_spec_or_pickled_array_runs_nothing(demo_bundle, tmp_path, capsys):
    """The default bundle format names only rcmae's graph classes: a spec that names anything else, or arrays
    that hide a pickle, is refused with one line and runs nothing, even with a matching manifest."""
    import json

    from rcmae.deploy.bundle import MANIFEST, Bundle, ExportError, file_hashes

    marker = tmp_path / "marker"
    wave = np.zeros(160000, dtype=np.float32)

    def hostile_copy(name: str) -> Path:
        b = tmp_path / name
        shutil.copytree(demo_bundle, b)
        return b

    def seal(b: Path) -> None:  # an attacker recomputes the manifest: only the format's rules stand in the way
        (b / MANIFEST).write_text(json.dumps({"sha256": file_hashes(b)}))

    assert json.loads((demo_bundle / "detector.json").read_text())["format"] == "graph"
    # 1. The spec's root names a class outside rcmae's graph classes (os.system, by its module path or name).
    for name in ("os.system", "system", "Popen"):
        b = hostile_copy(f"spec_{name}")
        spec = json.loads((b / "graph.json").read_text())
        spec["nodes"].append({"node": name, "args": {"dict": {"command": f"touch {marker}"}}})
        spec["root"] = {"ref": len(spec["nodes"]) - 1}
        (b / "graph.json").write_text(json.dumps(spec))
        seal(b)
        with pytest.raises(ExportError, match=rf"names class '{re.escape(name)}', which is not an rcmae graph class"):
            Bundle(b).score(wave, "fan", "00")
    # 2. An array file that holds a pickle whose loading would touch the marker.
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    b = hostile_copy("pickled")
    with np.load(b / "graph.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    first = sorted(arrays)[0]
    arrays[first] = np.array([Payload()], dtype=object)
    np.savez(b / "graph.npz", **arrays)
    seal(b)
    with pytest.raises(ExportError, match=r"graph.json: .*pickle.*; re-export the bundle"):
        Bundle(b).score(wave, "fan", "00")
    assert not marker.exists()  # nothing of either ran
    # The untouched bundle loads without trust and scores.
    assert np.isfinite(Bundle(demo_bundle).score(wave, "fan", "00")["score"])
