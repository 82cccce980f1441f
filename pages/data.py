"""Data: create the demo set or pick any folder; clip counts; browse clips; problems listed, not fatal."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from rcmae import views as viz
from rcmae import workbench
from rcmae.data import demo
from rcmae.workbench import jobs

ws = workbench.page_workspace(st.session_state.get("workspace"))
store = jobs.JobStore(ws.jobs_db)

st.title("Data")
if "flash_data" in st.session_state:  # set before a rerun: shown once, after it
    st.success(st.session_state.pop("flash_data"), icon=":material/check_circle:")

datasets = workbench.list_datasets(ws)
demo_jobs = [j for j in store.list(["queued", "running"]) if j.kind == "demo-data"]


@st.fragment(run_every=2.0 if demo_jobs else None)
def _demo_job_watch() -> None:
    active = [j for j in jobs.refresh(store) if j.kind == "demo-data" and j.state in ("queued", "running")]
    for job in active:
        st.info(f"Demo data job {job.id} is {job.state}…  \n`{jobs.tail_log(job, 1)}`", icon=":material/pending:")
    if demo_jobs and not active:
        st.rerun()


_demo_job_watch()

if not (ws.demo_data / "demo.json").is_file() and not demo_jobs:
    train, test = workbench.demo_counts()
    st.info(f"No demo data yet. The demo set is synthetic factory sound in the DCASE 2020 layout: "
            f"{', '.join(demo.MACHINE_TYPES)}, {len(demo.MACHINE_IDS)} machine IDs each, {train} training and "
            f"{test}+{test} test clips per ID.", icon=":material/info:")
    if st.button("Create the demo data", type="primary", icon=":material/add_circle:"):
        job = workbench.launch_demo_data(ws, store)
        st.session_state["flash_data"] = f"Demo data job {job.id} started; this page updates when it is done."
        st.rerun()

options = [str(p) for p in datasets] + ["another folder…"]
choice = st.selectbox("Data set", options, index=0,
                      help="Folders in <workspace>/data, or any DCASE 2020 / 2021+ folder on this machine.")
folder = st.text_input("Folder", placeholder="/path/to/dev_data or a machine-type folder") \
    if choice == "another folder…" else choice
if not folder:
    st.stop()

try:
    # A typed folder must stay inside the workspace or an allowed root; listed data sets are the operator's.
    index, counts, skipped = workbench.data_overview(
        workbench.resolve_path(ws, folder) if choice == "another folder…" else Path(folder))
except (FileNotFoundError, ValueError) as err:
    st.error(str(err), icon=":material/error:")
    st.stop()

st.subheader("Clips per machine type, ID, split and label")
st.dataframe(workbench.count_matrix(counts), hide_index=True, width="stretch")
st.caption(f"{len(index)} clips, {index['machine_type'].nunique()} machine types, "
           f"{index.groupby(['machine_type', 'machine_id']).ngroups} machine IDs.")

st.subheader("Problems")
if skipped:
    st.warning(f"{len(skipped)} file(s) fit no layout and are left out:", icon=":material/warning:")
    st.dataframe([{"path": p, "problem": why} for p, why in skipped], hide_index=True, width="stretch")
else:
    st.write("Every .wav file name fits the layout.")
if st.button("Check every clip (readable, sample rate, length, silence)"):
    bar = st.progress(0.0)
    problems = workbench.check_clips(list(index["path"]), progress=lambda i, n: bar.progress(i / n))
    bar.empty()
    if problems.empty:
        st.success(f"All {len(index)} clips are fine.")
    else:
        st.warning(f"{problems['path'].nunique()} clip(s) with problems (they are skipped or fixed when loaded):")
        st.dataframe(problems, hide_index=True, width="stretch")

st.subheader("Browse clips")
c1, c2, c3, c4 = st.columns(4)
mtype = c1.selectbox("Machine type", sorted(index["machine_type"].unique()))
sub = index[index["machine_type"] == mtype]
mid = c2.selectbox("Machine ID", sorted(sub["machine_id"].unique()))
sub = sub[sub["machine_id"] == mid]
split = c3.selectbox("Split", sorted(sub["split"].unique(), key=lambda s: s != "train"))
sub = sub[sub["split"] == split]
label = c4.selectbox("Label", sorted(sub["label"].unique()))
sub = sub[sub["label"] == label]
clip = st.selectbox("Clip", list(sub["path"]), format_func=lambda p: Path(p).name)
if clip:
    try:
        loaded = workbench.load_clip(clip)
    except ValueError as err:
        st.error(str(err), icon=":material/error:")
    else:
        st.audio(loaded.wave, sample_rate=loaded.sample_rate)
        st.plotly_chart(viz.spectrogram_figure(loaded.logmel, loaded.sample_rate, loaded.hop_length,
                                               title=Path(clip).name), width="stretch")
