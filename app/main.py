"""The rcmae workbench: ``streamlit run app/main.py`` (navigation, workspace choice, machine summary).

Pages live in the top-level ``pages/`` folder and are registered here with ``st.navigation``;
the workspace folder (``$RCMAE_WORKSPACE`` or ``./workspace``) holds everything they show.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from rcmae.jobs import detect_gpus
from rcmae.workspace import Workspace

PAGES = Path(__file__).resolve().parent.parent / "pages"

st.set_page_config(page_title="rcmae workbench", page_icon=":material/graphic_eq:", layout="wide")


@st.cache_resource(show_spinner=False)
def _gpus() -> list[str]:
    # CUDA initialisation is slow and the answer does not change while the app runs.
    return detect_gpus()


if "workspace" not in st.session_state:
    st.session_state["workspace"] = str(Workspace.default().root)

with st.sidebar:
    st.text_input("Workspace folder", key="workspace",
                  help="Data sets, prompt library, banks, runs, benchmarks and the job database live here. "
                       "Default: $RCMAE_WORKSPACE or ./workspace.")
    try:
        ws = Workspace.default(os.path.expanduser(st.session_state["workspace"])).ensure()
        st.caption(f"`{ws.root}`")
    except OSError as err:
        st.error(f"Workspace: cannot use {st.session_state['workspace']!r} ({err.strerror}); "
                 "choose a writable folder.")
    gpus = _gpus()
    st.caption("GPU: " + (", ".join(f"{i}: {n}" for i, n in enumerate(gpus)) if gpus else "none (jobs run on CPU)"))

nav = st.navigation([
    st.Page(PAGES / "home.py", title="Start", icon=":material/home:", default=True),
    st.Page(PAGES / "data.py", title="Data", icon=":material/folder_open:"),
    st.Page(PAGES / "prompts.py", title="Prompts", icon=":material/edit_note:"),
    st.Page(PAGES / "audition.py", title="Audition", icon=":material/headphones:"),
    st.Page(PAGES / "jobs.py", title="Jobs", icon=":material/play_circle:"),
    st.Page(PAGES / "results.py", title="Results", icon=":material/monitoring:"),
    st.Page(PAGES / "score.py", title="Score", icon=":material/rule:"),
])
nav.run()
