"""Fault-injection figures: run the `reliability` tests and count faults tried, survived and lost.

    python bench/bench_reliability.py            # writes bench/results/reliability.json and .md

Each test marked `reliability` (tests/test_reliability.py and the bad-input suites) injects one fault:
a kill -9 at a random step, a torn or empty file, racing processes, a hostile or broken input. It
*survives* when rcmae recovers exactly (bit-identical weights, same bank sha256) or stops with one
line naming the file and the fix; a failing test is a *lost* fault. The page is drawn from the raw per-test
outcomes alone (``render``; bench/assemble.py redraws it).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, save_raw, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# What each test function injects, in the words of issue 11.
CATEGORIES = {
    "test_sigkill_pretrain_then_resume_is_bit_identical": "kill -9 at a random pretrain step, resume: same weights",
    "test_sigkill_finetune_then_resume_is_bit_identical": "kill -9 at a random finetune step, resume: same weights",
    "test_sigkill_augment_then_resume_is_bit_identical": "kill -9 at a random augment clip, resume: same bank sha256",
    "test_sigkill_queued_pretrain_job_then_resume_is_bit_identical":
        "kill -9 of a queued pretrain job, Resume: same weights",
    "test_damaged_run_file_is_one_line_or_recovered": "torn / empty run file (config, run.json, stats, ckpt, npz...)",
    "test_damaged_eval_file_is_one_line_on_the_results_page": "torn / empty eval file (results.json, scores.csv)",
    "test_damaged_progress_files_do_not_break_the_jobs_page": "torn / empty progress.json, metrics.csv",
    "test_damaged_bank_manifest_is_one_line": "torn / empty bank manifest",
    "test_damaged_bank_wav_is_redone_on_resume": "torn / empty bank wav, resume: same bank sha256",
    "test_damaged_job_database_is_one_line": "torn / empty jobs.sqlite",
    "test_damaged_prompt_library_is_one_line": "torn / empty prompts.yaml",
    "test_eight_processes_racing_on_the_job_database": "8 processes racing on the job database",
    # issue 19
    "test_export_overwrite_refuses_a_run_folder_and_any_other_folder": "export --overwrite onto a run / any folder",
    "test_an_overflowing_clip_is_invalid_never_normal": "1e20-amplitude clip: invalid, never normal",
    "test_two_writers_of_one_run_folder_leave_one_intact_run_and_one_clear_error": "two writers of one run folder",
    "test_smaller_faults_a_fifo_a_null_byte_a_legacy_pickle_and_a_resumed_finetuned_run":
        "a FIFO, a null byte, a legacy pickle, --resume on a fine-tuned run",
    "test_a_partial_evaluation_names_its_units_and_keeps_earlier_results_unless_asked":
        "evaluate on a set with a type without normals",
    "test_a_hostile_torchscript_bundle_runs_nothing_without_trust_and_a_tampered_one_is_refused":
        "hostile TorchScript bundle without --trust; tampered bundle",
    "test_a_graph_bundle_is_data_a_hostile_spec_or_pickled_array_runs_nothing":
        "hostile graph spec / pickled arrays in a default bundle",
}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "reliability.json"
        env = dict(os.environ, RCMAE_RELIABILITY_REPORT=str(report), PYTHONPATH=str(ROOT))
        cmd = [sys.executable, "-m", "pytest", "-m", "reliability", "-q", "-p", "no:cacheprovider"]
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = usage.ru_utime + usage.ru_stime  # pytest and every process it started (load-independent)
        load_after = os.getloadavg()[0]
        rows = json.loads(report.read_text()) if report.is_file() else []
    if not rows:
        sys.exit(f"no reliability results (pytest exit {proc.returncode}):\n{proc.stdout[-2000:]}"
                 f"{proc.stderr[-2000:]}")
    raw = {"header": header("Reliability under faults (issues 11 and 19)"), "wall_s": round(wall, 1),
           "cpu_s": round(cpu, 1), "load_before": load_before, "load_after": load_after,
           "returncode": proc.returncode,
           "rows": [{"nodeid": r["nodeid"], "outcome": r["outcome"], "duration": round(r["duration"], 3)}
                    for r in rows]}
    save_raw("reliability", raw)
    text = render(raw)
    path = write_result("reliability", text)
    if any(r["outcome"] != "passed" for r in rows):
        print(proc.stdout[-6000:])  # pytest's account of the lost faults
    print(text)
    print(f"wrote {path}")


def render(raw: dict) -> str:
    """bench/results/reliability.md from the raw per-test outcomes alone (bench/assemble.py calls it)."""
    rows = raw["rows"]
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        file, _, test = r["nodeid"].partition("::")
        name = test.split("[")[0]
        module = Path(file).stem.removeprefix("test_")
        label = CATEGORIES.get(name, f"bad input: {module}: {name.removeprefix('test_')}")
        groups[label].append(r)
    lines = ["| fault | tried | survived | lost | time (s) |", "|---|---:|---:|---:|---:|"]
    for label in sorted(groups, key=lambda k: (k.startswith("bad input"), k)):
        g = groups[label]
        ok = sum(r["outcome"] == "passed" for r in g)
        lines.append(f"| {label} | {len(g)} | {ok} | {len(g) - ok} | {sum(r['duration'] for r in g):.1f} |")
    total = len(rows)
    survived = sum(r["outcome"] == "passed" for r in rows)
    lost = [r["nodeid"] for r in rows if r["outcome"] != "passed"]
    text = raw["header"]
    text += ("`pytest -m reliability` (tests/test_reliability.py and the bad-input suites test_checkpoint, "
             "test_access, test_inputs, test_jobs_safety, test_llm_client): each test injects one fault. "
             "Survived = exact recovery (bit-identical weights via torch.equal, identical bank sha256) or one "
             "line naming the file and the fix; lost = anything else.\n\n")
    text += "\n".join(lines) + "\n\n"
    text += (f"**{total} faults tried, {survived} survived, {total - survived} lost**; whole suite "
             f"{raw['wall_s']:.0f} s wall, {raw['cpu_s']:.0f} CPU-s (pytest and its subprocesses), load average "
             f"{raw['load_before']:.1f} -> {raw['load_after']:.1f} on the shared machine (pytest exit "
             f"{raw['returncode']}).\n")
    if lost:
        text += "\nLost:\n" + "".join(f"- `{n}`\n" for n in lost)
    return text


if __name__ == "__main__":
    main()
