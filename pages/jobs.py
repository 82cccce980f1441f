"""Jobs: launch training, augmentation, evaluation and benchmark jobs in the background; follow, cancel, resume."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import streamlit as st

from rcmae import views as viz
from rcmae import workbench
from rcmae.workbench import jobs
from rcmae.workbench import processes as jobs_processes
from rcmae.workbench import runner as jobs_runner

ws = workbench.page_workspace(st.session_state.get("workspace"))
store = jobs.JobStore(ws.jobs_db)

st.title("Jobs")
st.write("Jobs run as separate processes: they keep going when the browser closes or the app restarts, "
         "and this page picks them up again from the job database.")


@st.cache_resource(show_spinner=False)
def _gpus() -> list[str]:
    return jobs_processes.detect_gpus()


gpus = _gpus()
datasets = workbench.list_datasets(ws)
runs = workbench.list_runs(ws)

with st.expander("Launch a job", expanded=not store.list()):
    kind = st.selectbox("Kind", workbench.JOB_KINDS,
                        help="fit: the training-free default detector, in seconds; pretrain: self-supervised RC-MAE; "
                             "finetune: machine-ID classes; "
                             "evaluate: test AUC/pAUC; augment: build a procedural/AudioLDM bank; "
                             "benchmark: RC-MAE vs baselines; reproduce: the paper's DCASE 2020 Tables 3 and 4 "
                             "(GPU machine).")
    c1, c2 = st.columns(2)
    data = run = out = None
    if kind in ("fit", "pretrain", "augment", "benchmark", "reproduce"):
        if not datasets:
            st.info("No data set yet: create the demo data on **Data** (or launch a demo-data job).",
                    icon=":material/info:")
        data = c1.selectbox("Data set", [str(p) for p in datasets]) if datasets else None
        parent = {"fit": ws.runs, "pretrain": ws.runs, "augment": ws.banks, "benchmark": ws.benchmarks,
                  "reproduce": ws.benchmarks}[kind]
        # The suggested name is made once per (kind, data set): the page reruns every few seconds, and a default
        # that changed with the clock would throw away what the user typed.
        name_key = f"out_name_{kind}_{Path(data).name if data else ''}"
        if name_key not in st.session_state:
            st.session_state[name_key] = workbench.new_name(parent, Path(data).name if data else kind)
        out = c2.text_input("Output name", key=name_key, help=f"a folder under {parent}")
        out = (parent, out)
    elif kind in ("finetune", "evaluate"):
        if not runs:
            st.info("No run yet: launch a pretrain job first (or the quick demo run on **Start**).",
                    icon=":material/info:")
        run = c1.selectbox("Run", [str(p) for p in runs], format_func=lambda p: Path(p).name) if runs else None
    else:
        out = (ws.data, c1.text_input("Folder name", "demo"))
    preset, epochs, overrides = "tiny", None, []
    options: dict = {}
    if kind == "pretrain":
        banks = workbench.list_banks(ws)
        options["aug"] = st.selectbox(
            "Augmentation", ["specaugment", *[str(b) for b in banks]], format_func=lambda v: Path(v).name,
            help="specaugment: the paper's 'without DDA' arm; a bank: pairs of each clip with its augmented copies "
                 "(build banks with an augment job or keep auditions)")
    elif kind == "augment":
        c1, c2 = st.columns(2)
        options["backend"] = c1.radio("Backend", ["procedural", "audioldm"], horizontal=True,
                                      help="audioldm needs local weights (see Start)")
        options["per_clip"] = int(c2.number_input("Augmentations per clip", 1, 20, 1))
    elif kind == "benchmark":
        options["systems"] = st.text_input("Systems", "rcmae,ae,knn", help="comma list: rcmae, ae, knn, ablations")
    elif kind == "reproduce":
        st.caption("Runs `rcmae reproduce` on the chosen DCASE 2020 folder (dev_data + eval_data): AudioLDM bank, "
                   "both Table 3 arms, report beside the paper. Plan it first with `rcmae reproduce --dry-run`.")
    if kind in ("pretrain", "finetune", "benchmark", "reproduce"):
        c1, c2 = st.columns(2)
        if kind != "finetune":
            preset = c1.selectbox("Preset", workbench.presets(),
                                  help="tiny: CPU-sized; paper: the paper's ViT (needs a GPU)")
        if kind not in ("benchmark", "reproduce"):
            epochs = c2.number_input("Epochs (0 = the preset's)", 0, 10_000, 0) or None
        text = st.text_area("Overrides (key=value, one per line)",
                            placeholder="pretrain.lr=5e-4\nfinetune.batch_size=16")
        try:
            overrides = workbench.parse_overrides(text)
        except ValueError as err:
            st.error(str(err), icon=":material/error:")
    if gpus and kind in ("pretrain", "finetune", "augment", "benchmark", "evaluate", "reproduce"):
        chosen = st.multiselect("GPUs", [str(i) for i in range(len(gpus))], default=["0"],
                                format_func=lambda i: f"{i}: {gpus[int(i)]}",
                                help="CUDA_VISIBLE_DEVICES of the job; none = CPU. "
                                     "A job waits until its GPUs are free.")
    else:
        chosen = []
        st.caption("No GPU detected: the job runs on the CPU (one CPU job at a time; set RCMAE_CPU_JOBS for more).")
    if st.button("Launch", type="primary", icon=":material/play_arrow:"):
        try:
            # Typed names must stay inside the workspace (or an allowed root): no ../, absolute paths, symlinks out.
            out = workbench.resolve_path(ws, out[1], under=out[0]) if out else None
            argv = workbench.job_argv(kind, data=data, run=run, out=out, preset=preset, overrides=overrides,
                                      epochs=epochs, **options)
            job = workbench.launch_and_start(store, argv, gpus=",".join(chosen))
        except ValueError as err:
            st.error(str(err), icon=":material/error:")
        else:
            st.session_state["job_id"] = job.id
            st.success(f"Job {job.id} {job.state}: `rcmae {' '.join(argv)}`")


def _when(t: float | None) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%H:%M:%S") if t else ""


@st.fragment(run_every=2.0)
def _live() -> None:
    if jobs_runner.revive_runner(store):
        st.toast("The queue runner had stopped (killed?): restarted it for the queued jobs.")
    jobs.start_ready(store)
    all_jobs = store.list()
    if not all_jobs:
        st.write("No jobs yet.")
        return
    rows = [{"id": j.id, "name": j.name, "state": j.state, "device": f"GPU {j.gpus}" if j.gpus else "CPU",
             "started": _when(j.started), "duration": f"{j.duration:.0f} s" if j.duration is not None else "",
             "returncode": "" if j.returncode is None else str(j.returncode), "note": j.note or ""}
            for j in reversed(all_jobs)]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    ids = [j.id for j in reversed(all_jobs)]
    current = st.session_state.get("job_id")
    if current not in ids:
        # First visit: follow the running job, else the newest.
        current = next((j.id for j in all_jobs if j.state == "running"), ids[0])
    names = {j.id: j.name for j in all_jobs}
    # Labels must not change while a job runs, or Streamlit would treat the choice as a new widget.
    job_id = st.selectbox("Job", ids, index=ids.index(current) if current in ids else 0,
                          format_func=lambda i: f"{i}: {names[i]}")
    st.session_state["job_id"] = job_id
    job = store.get(job_id)
    st.code("rcmae " + " ".join(job.argv) if job.kind != "python" else "python " + " ".join(job.argv),
            language="bash")
    progress = workbench.read_progress(job.out)
    if progress and progress.get("stage") == job.kind:
        st.progress(workbench.progress_fraction(progress), text=workbench.progress_label(progress))
    metrics = Path(job.out) / "metrics.csv" if job.out else None
    if metrics is not None and metrics.is_file():
        try:
            st.plotly_chart(viz.loss_figure(metrics), width="stretch", key=f"loss_{job.id}")
        except (ValueError, pd.errors.ParserError) as err:
            st.caption(f"loss curves unavailable ({metrics}: {err})")
    if job.state == "queued":
        waits = f"job {job.after} to finish" if job.after else (f"GPU {job.gpus}" if job.gpus else "a free CPU slot")
        st.info(f"Queued: waiting for {waits}.", icon=":material/schedule:")
    if job.state == "failed":
        st.error(f"Job {job.id} failed (return code {job.returncode}). {job.note} End of its log below.",
                 icon=":material/error:")
    if job.state == "killed":
        st.warning(f"Job {job.id} was {job.note or 'killed'}.", icon=":material/warning:")
    # Newest line first: the box opens on what the job does now.
    st.text_area("Log (newest line first)", "\n".join(reversed(jobs.tail_log(job, 40).splitlines())), height=260,
                 key=f"log_{job.id}_{job.state}")
    c1, c2, c3 = st.columns(3)
    if job.state in ("queued", "running") and c1.button("Cancel", icon=":material/stop_circle:"):
        jobs.cancel(store, job.id)
        st.rerun()
    if job.state in jobs.ENDED_BADLY and job.kind in ("pretrain", "finetune") and \
            c2.button("Resume", icon=":material/replay:", help="continue from the last checkpoint"):
        new = workbench.relaunch(store, job, resume=True)
        st.session_state["job_id"] = new.id
        st.rerun()
    if job.state in ("done", *jobs.ENDED_BADLY) and job.kind != "python" and \
            c3.button("Run again", icon=":material/restart_alt:"):
        new = workbench.relaunch(store, job)
        st.session_state["job_id"] = new.id
        st.rerun()


st.subheader("Queue and history")
_live()
