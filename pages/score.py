"""Score: upload clips (or point at a folder), score them with a trained run: score, threshold, decision, ID probs."""

from __future__ import annotations

import streamlit as st

from rcmae import workbench
from rcmae.scorers import detector as score

ws = workbench.page_workspace(st.session_state.get("workspace"))

st.title("Score")

runs = workbench.list_runs(ws)
if not runs:
    st.info("No trained run yet: start the **quick demo run** on Start, or pretrain one on **Jobs**.",
            icon=":material/info:")
    st.stop()


@st.cache_resource(show_spinner="Loading the run…", max_entries=4)
def _detector(run: str, mtime: float) -> score.Detector:
    return score.Detector.load(run)


c1, c2 = st.columns(2)
run = c1.selectbox("Run", runs, format_func=lambda p: p.name)
ckpts = sorted((run / "checkpoints").glob("*.ckpt"))
try:
    detector = _detector(str(run), max((p.stat().st_mtime for p in ckpts), default=0.0))
except (ValueError, FileNotFoundError) as err:
    st.error(str(err), icon=":material/error:")
    st.stop()
scorer = c2.selectbox("Scorer", detector.scorers, index=detector.scorers.index(detector.default_scorer))
for note in detector.notes:
    st.caption(note)

source = st.radio("Clips", ["upload", "a folder on this machine"], horizontal=True, key="score_source")
paths, problems = [], []
types = sorted({t for t, _ in detector.units})
ids = sorted({i for _, i in detector.units})
c1, c2 = st.columns(2)
if source == "upload":
    files = st.file_uploader(f"WAV clips (up to {workbench.UPLOAD_LIMIT_MB:g} MB each)", type=["wav"],
                             accept_multiple_files=True, key="score_upload")
    # An upload keeps its file name, not its folders: the machine type is chosen here (the run's first by default).
    mtype = c1.selectbox("Machine type of the clips", types, key="score_type")
    mid = c2.selectbox("Machine ID", ["(from each file name)", *ids], key="score_id",
                       help="DCASE names carry the ID (normal_id_02_..., section_00_...); pick one for other names")
    if files:
        paths, problems = workbench.save_uploads([(f.name, f.getvalue()) for f in files], ws.root / "uploads")
else:
    folder = st.text_input("Folder with .wav clips", placeholder="data/demo/dev_data/fan/test", key="score_folder")
    mtype = c1.selectbox("Machine type", ["(from the folders)", *types], key="score_type_folder",
                         help="a DCASE folder names it: <type>/test/*.wav")
    mid = c2.selectbox("Machine ID", ["(from each file name)", *ids], key="score_id_folder")
    if folder:
        try:
            chosen = workbench.resolve_path(ws, folder)
        except ValueError as err:
            st.error(str(err), icon=":material/error:")
        else:
            if chosen.is_dir():
                paths = [chosen]
            else:
                st.error(f"{folder}: folder not found; give a folder of .wav clips", icon=":material/error:")
for name, why in problems:
    st.error(f"{name}: {why}", icon=":material/error:")

if paths and st.button("Score", type="primary", icon=":material/rule:"):
    mtype = None if mtype.startswith("(") else mtype
    mid = None if mid.startswith("(") else mid
    bar = st.progress(0.0, text="Scoring…")
    try:
        rows = workbench.score_with_progress(detector, paths, scorer, mtype, mid,
                                             lambda k, n: bar.progress(k / max(n, 1), text=f"Scoring clip {k}/{n}"))
    except ValueError as err:  # e.g. a folder without .wav files
        st.error(str(err), icon=":material/error:")
        rows = []
    bar.empty()
    st.session_state["score_rows"] = rows

rows = st.session_state.get("score_rows")
if rows:
    table, probs = workbench.score_rows_table(rows)
    n_bad = int((table["error"] != "").sum())
    n_anom = int((table["decision"] == "anomaly").sum())
    st.write(f"{len(table) - n_bad} clip(s) scored: **{n_anom} anomalous**, {len(table) - n_bad - n_anom} normal"
             + (f"; {n_bad} skipped (see error)" if n_bad else "") + ".")
    n_odd = int((table["note"] != "").sum())
    if n_odd:
        st.warning(f"{n_odd} clip(s) are not the run's clip length: see the note column for how each was scored.",
                   icon=":material/straighten:")
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={"score": st.column_config.NumberColumn(format="%.4f"),
                                "threshold": st.column_config.NumberColumn(format="%.4f")})
    if not probs.empty:
        st.subheader("Machine-ID probabilities")
        st.dataframe(probs, hide_index=True, width="stretch")
