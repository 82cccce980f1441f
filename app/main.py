"""The rcmae workbench: ``streamlit run app/main.py`` (login, navigation, workspace choice, machine summary).

Pages live in the top-level ``pages/`` folder and are registered here with ``st.navigation``;
the workspace folder (``$RCMAE_WORKSPACE`` or ``./workspace``) holds everything they show.
Served beyond loopback (``make app HOST=0.0.0.0``), the app asks for the password of
``$RCMAE_PASSWORD`` / ``$RCMAE_PASSWORD_FILE`` / ``.streamlit/secrets.toml`` before any page.
"""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from rcmae import workbench
from rcmae.workbench.processes import detect_gpus
from rcmae.workspace import Workspace

PAGES = Path(__file__).resolve().parent.parent / "pages"

st.set_page_config(page_title="rcmae workbench", page_icon=":material/graphic_eq:", layout="wide")


@st.cache_resource(show_spinner=False)
def _gpus() -> list[str]:
    # CUDA initialisation is slow and the answer does not change while the app runs.
    return detect_gpus()


def _secrets() -> dict:
    try:
        return dict(st.secrets)
    except Exception:  # no secrets.toml: Streamlit raises its own error type
        return {}


def _login_gate() -> None:
    """Stop here (no navigation, no page) until the visitor gives the password, when the app is served openly."""
    if not workbench.login_required(st.get_option("server.address")):
        return
    try:
        secret = workbench.login_secret(_secrets())
    except ValueError as err:
        st.error(str(err), icon=":material/error:")
        st.stop()
    if secret is None:
        st.error("This workbench is served beyond this machine and needs a password, but none is set: start it "
                 "with RCMAE_PASSWORD (or RCMAE_PASSWORD_FILE, or rcmae_password in .streamlit/secrets.toml).",
                 icon=":material/lock:")
        st.stop()
    if st.session_state.get("_rcmae_login") is True:
        return
    st.title("rcmae workbench: log in")
    with st.form("login"):
        given = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Log in")
    if submitted:
        if workbench.check_login(given, secret):
            st.session_state["_rcmae_login"] = True
            st.rerun()
        time.sleep(1.0)  # slows guessing
        st.error("Wrong password.", icon=":material/lock:")
    st.stop()


_login_gate()

if "workspace" not in st.session_state:
    st.session_state["workspace"] = str(Workspace.default().root)

with st.sidebar:
    st.text_input("Workspace folder", key="workspace",
                  help="Data sets, prompt library, banks, runs, benchmarks and the job database live here. "
                       "Default: $RCMAE_WORKSPACE or ./workspace.")
    try:
        ws = workbench.guard_workspace(st.session_state["workspace"]).ensure()
        st.caption(f"`{ws.root}`")
    except workbench.PathNotAllowed as err:
        st.error(f"Workspace: {err}", icon=":material/error:")
        # Pages open the workspace from session state: fall back to the start workspace.
        st.session_state["workspace_ok"] = str(Workspace.default().root)
    except OSError as err:
        st.error(f"Workspace: cannot use {st.session_state['workspace']!r} ({err.strerror}); "
                 "choose a writable folder.")
    else:
        st.session_state["workspace_ok"] = str(ws.root)
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
    st.Page(PAGES / "monitor.py", title="Monitor", icon=":material/timeline:"),
])
nav.run()
