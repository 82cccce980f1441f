"""Network exposure and paths: loopback by default, a login when served openly, typed paths stay in the workspace."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from rcmae import workbench
from rcmae.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.reliability  # hostile-input cases of the fault-injection suite (issue 11)


# ------------------------------------------------------------------------------------------- make app binds
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_app_command(port: int, **variables: str) -> list[str]:
    """The exact streamlit command line of `make app` (make -n prints it without running anything)."""
    extra = [f"{k}={v}" for k, v in variables.items()]
    out = subprocess.run(["make", "-n", "app", f"PORT={port}", *extra], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    line = next(ln for ln in out.splitlines() if "streamlit run" in ln)
    words = shlex.split(line)
    words = [w for w in words if not re.match(r"^[A-Z_]+=", w)]  # the env assignment in front
    i = next(n for n, w in enumerate(words) if w.endswith("/streamlit"))
    return [sys.executable, "-m", "streamlit", *words[i + 1:]]


def _listening(pid: int, port: int, timeout: float = 60.0) -> list[str]:
    deadline = time.time() + timeout
    proc = psutil.Process(pid)
    while time.time() < deadline:
        addrs = [c.laddr.ip for c in proc.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
        if addrs:
            return addrs
        time.sleep(0.3)
    raise AssertionError(f"streamlit did not listen on port {port} within {timeout} s")


def _other_addresses() -> list[str]:
    return [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family == socket.AF_INET and not a.address.startswith("127.")]


@pytest.mark.slow
def test_make_app_binds_loopback_only(tmp_path):
    port = _free_port()
    cmd = _make_app_command(port)
    assert "--server.address" in cmd and cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    env = dict(os.environ, RCMAE_WORKSPACE=str(tmp_path / "ws"))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        addrs = _listening(proc.pid, port)
        assert addrs and all(a == "127.0.0.1" for a in addrs), addrs
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        for other in _other_addresses():
            # Reachable from another address of this machine = reachable from the network: must be refused.
            with pytest.raises(OSError), socket.create_connection((other, port), timeout=2):
                pass
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=20)


def test_make_app_host_variable_is_the_opt_in():
    cmd = _make_app_command(8501, HOST="0.0.0.0")
    assert cmd[cmd.index("--server.address") + 1] == "0.0.0.0"
    assert 'address = "127.0.0.1"' in (ROOT / ".streamlit" / "config.toml").read_text()
    assert ".streamlit/secrets.toml" in (ROOT / ".gitignore").read_text().splitlines()


# ------------------------------------------------------------------------------------------------ login gate
@pytest.mark.parametrize("address,needed", [("127.0.0.1", False), ("localhost", False), ("::1", False),
                                            ("0.0.0.0", True), ("", True), ("192.168.1.5", True)])
def test_login_required_beyond_loopback(address, needed, monkeypatch):
    monkeypatch.delenv("RCMAE_REQUIRE_LOGIN", raising=False)
    assert workbench.login_required(address) is needed


def test_login_secret_sources(tmp_path, monkeypatch):
    monkeypatch.delenv("RCMAE_PASSWORD", raising=False)
    monkeypatch.delenv("RCMAE_PASSWORD_FILE", raising=False)
    assert workbench.login_secret({}) is None
    assert workbench.login_secret({"rcmae_password": "from-secrets"}) == "from-secrets"
    (tmp_path / "pw").write_text("from-file\n")
    monkeypatch.setenv("RCMAE_PASSWORD_FILE", str(tmp_path / "pw"))
    assert workbench.login_secret({"rcmae_password": "x"}) == "from-file"
    monkeypatch.setenv("RCMAE_PASSWORD", "from-env")
    assert workbench.login_secret({}) == "from-env"
    assert workbench.check_login("from-env", "from-env") and not workbench.check_login("from-en", "from-env")


@pytest.fixture
def open_server(monkeypatch, tmp_path):
    """The app as `make app HOST=0.0.0.0` serves it, with a password in the environment."""
    old = st_config.get_option("server.address")
    st_config.set_option("server.address", "0.0.0.0")
    monkeypatch.setenv("RCMAE_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.delenv("RCMAE_PASSWORD_FILE", raising=False)
    yield
    st_config.set_option("server.address", old)


def _main() -> AppTest:
    return AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=60)


def test_open_server_shows_login_and_no_pages(open_server, monkeypatch):
    monkeypatch.setenv("RCMAE_PASSWORD", "s3cret-token")
    at = _main().run()
    assert not at.exception
    assert [t.value for t in at.title] == ["rcmae workbench: log in"]
    assert len(at.text_input) == 1 and at.text_input[0].label == "Password"
    assert not at.sidebar.text_input  # no workspace box, no navigation, no page
    at.text_input[0].set_value("wrong")
    at.button[0].click()
    at.run()
    assert any("Wrong password" in e.value for e in at.error)
    assert [t.value for t in at.title] == ["rcmae workbench: log in"]
    at.text_input[0].set_value("s3cret-token")
    at.button[0].click()
    at.run()
    assert not at.exception
    assert "rcmae workbench: log in" not in [t.value for t in at.title]
    assert at.sidebar.text_input[0].label == "Workspace folder"


def test_open_server_without_password_refuses(open_server, monkeypatch):
    monkeypatch.delenv("RCMAE_PASSWORD", raising=False)
    at = _main().run()
    assert not at.exception
    assert any("needs a password" in e.value for e in at.error)
    assert not at.text_input and not at.sidebar.text_input


def test_loopback_needs_no_login(monkeypatch, tmp_path):
    monkeypatch.setenv("RCMAE_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.delenv("RCMAE_REQUIRE_LOGIN", raising=False)
    old = st_config.get_option("server.address")
    st_config.set_option("server.address", "127.0.0.1")
    try:
        at = _main().run()
    finally:
        st_config.set_option("server.address", old)
    assert not at.exception
    assert at.sidebar.text_input[0].label == "Workspace folder"


# --------------------------------------------------------------------------------------------------- paths
@pytest.fixture
def ws(tmp_path, monkeypatch) -> Workspace:
    monkeypatch.setenv("RCMAE_WORKSPACE", str(tmp_path / "ws"))
    return Workspace.default().ensure()


def test_resolve_path_inside_workspace(ws):
    assert workbench.resolve_path(ws, "my-run", under=ws.runs) == ws.runs / "my-run"
    assert workbench.resolve_path(ws, "data/demo") == ws.root / "data" / "demo"
    assert workbench.resolve_path(ws, str(ws.banks / "b1")) == ws.banks / "b1"


@pytest.mark.parametrize("typed", ["../../escape", "../../../etc", "/tmp/elsewhere", "/", "~", "a/../../../x"])
def test_resolve_path_refuses_escapes(ws, typed):
    with pytest.raises(workbench.PathNotAllowed, match="outside the workspace") as err:
        workbench.resolve_path(ws, typed, under=ws.runs)
    assert "allowed_roots" in str(err.value) and "\n" not in str(err.value)


def test_resolve_path_refuses_symlink_escape(ws, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws.banks / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(workbench.PathNotAllowed):
        workbench.resolve_path(ws, "link/new-bank", under=ws.banks)


def test_allowed_roots_from_settings(ws, tmp_path):
    extra = tmp_path / "dcase"
    extra.mkdir()
    with pytest.raises(workbench.PathNotAllowed):
        workbench.resolve_path(ws, str(extra / "dev_data"))
    ws.settings.write_text(f"allowed_roots:\n  - {extra}\n")
    assert workbench.resolve_path(ws, str(extra / "dev_data")) == extra / "dev_data"
    with pytest.raises(workbench.PathNotAllowed):
        workbench.resolve_path(ws, str(tmp_path / "other"))


def test_workspace_box_cannot_leave(ws, tmp_path):
    assert workbench.guard_workspace(str(ws.root / "sub")).root == ws.root / "sub"
    with pytest.raises(workbench.PathNotAllowed):
        workbench.guard_workspace("/etc")
    assert workbench.page_workspace("/etc").root == ws.root


def test_jobs_page_refuses_output_outside_workspace(ws, tiny_dcase):
    (ws.data / "tiny").symlink_to(tiny_dcase, target_is_directory=True)
    at = AppTest.from_file(str(ROOT / "pages" / "jobs.py"), default_timeout=60)
    at.session_state["workspace"] = str(ws.root)
    at.run()
    kind = next(s for s in at.selectbox if s.label == "Kind")
    kind.set_value("augment").run()
    name = next(t for t in at.text_input if t.label == "Output name")
    name.set_value("../../../tmp/pwned-bank").run()
    next(b for b in at.button if b.label == "Launch").click().run()
    assert not at.exception
    assert any("outside the workspace" in e.value for e in at.error)
    from rcmae.workbench import jobs

    assert jobs.JobStore(ws.jobs_db).list() == []


# ------------------------------------------------------------------------------------------------- uploads
def test_uploads_get_unique_names(tmp_path):
    dest = tmp_path / "uploads"
    saved, problems = workbench.save_uploads([("clip.wav", b"A" * 10), ("clip.wav", b"B" * 10)], dest)
    assert problems == [] and [p.name for p in saved] == ["clip.wav", "clip-2.wav"]
    assert saved[0].read_bytes() == b"A" * 10 and saved[1].read_bytes() == b"B" * 10
    # A page rerun with the same file reuses it; a third different file gets the next name.
    again, _ = workbench.save_uploads([("clip.wav", b"A" * 10), ("dir/../clip.wav", b"C" * 10)], dest)
    assert [p.name for p in again] == ["clip.wav", "clip-3.wav"]
    assert sorted(p.name for p in dest.iterdir()) == ["clip-2.wav", "clip-3.wav", "clip.wav"]


def test_long_upload_names_are_shortened(tmp_path):
    long_a = "a" * 248 + ".wav"  # 252 bytes: too long once a suffix or temp prefix is added
    long_b = "a" * 300 + "b.wav"
    saved, problems = workbench.save_uploads([(long_a, b"1"), (long_b, b"2"), ("é" * 200 + ".wav", b"3")],
                                             tmp_path)
    assert problems == []
    assert len(saved) == 3 and len({p.name for p in saved}) == 3
    for p in saved:
        assert len(p.name.encode()) <= workbench.MAX_NAME_BYTES and p.name.endswith(".wav")
    assert [p.read_bytes() for p in saved] == [b"1", b"2", b"3"]
