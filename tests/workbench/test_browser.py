"""End to end in a real browser: Debian's Chromium driven by Playwright against `streamlit run app/main.py`.

The newcomer's walk: create the demo data, audition one augmentation, start the quick demo on Start and wait
there until it points to Results, open Results from that link, score a DCASE test folder on Score with no machine
typed, and monitor the long demo recording on Monitor. Screenshots of each step go to test-output/browser/.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rcmae.workbench import jobs
from rcmae.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "test-output" / "browser"
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                    "(make browser / apt-get install chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(tmp_path: Path):
    """The workbench on a free port with a fresh workspace and tiny demo sizes; stopped (process group) after."""
    ws = Workspace(tmp_path / "workspace")
    port = _free_port()
    env = dict(os.environ, RCMAE_WORKSPACE=str(ws.root), OMP_NUM_THREADS="1",
               RCMAE_DEMO_TRAIN_PER_ID="4", RCMAE_DEMO_TEST_PER_ID="2",
               RCMAE_QUICK_PRETRAIN_EPOCHS="1", RCMAE_QUICK_FINETUNE_EPOCHS="1")
    log = open(tmp_path / "streamlit.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "main.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        raise AssertionError("streamlit did not start: " + (tmp_path / "streamlit.log").read_text()[-2000:])
    try:
        yield url, ws
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        store = jobs.JobStore(ws.jobs_db)
        for job in store.list(["queued", "running"]):
            jobs.cancel(store, job.id)


def test_workbench_in_chromium(server) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, ws = server
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.set_default_timeout(60_000)

        def go(name: str) -> None:
            page.locator('[data-testid="stSidebarNavLink"]', has_text=name).first.click()
            page.wait_for_selector(IDLE)

        # First launch: the Start page explains the missing pieces.
        page.goto(url)
        page.wait_for_selector(IDLE)
        expect(page.get_by_text("No data yet")).to_be_visible()
        page.screenshot(path=str(SHOTS / "1-start.png"), full_page=True)

        # Data: one click creates the demo data (a background job); the page updates when it is done.
        go("Data")
        page.get_by_role("button", name="Create the demo data").click()
        expect(page.get_by_text("Clips per machine type, ID, split and label")).to_be_visible(timeout=120_000)
        page.wait_for_selector(IDLE)
        expect(page.locator('[data-testid="stAudio"]')).to_have_count(1)
        page.screenshot(path=str(SHOTS / "2-data.png"), full_page=True)
        assert jobs.JobStore(ws.jobs_db).list()[0].state == "done"

        # Audition one procedural augmentation.
        go("Audition")
        page.get_by_role("button", name="Augment").click()
        expect(page.get_by_text("Original", exact=True)).to_be_visible(timeout=60_000)
        page.wait_for_selector(IDLE)
        expect(page.locator('[data-testid="stAudio"]')).to_have_count(2)
        page.wait_for_timeout(1000)  # let plotly draw the spectrograms
        page.screenshot(path=str(SHOTS / "3-audition.png"), full_page=True)

        # The quick demo from Start: the page follows the chain and, when it is done, points to Results.
        go("Start")
        page.get_by_role("button", name="Start the quick demo run").click()
        expect(page.get_by_text("Queued jobs")).to_be_visible()
        expect(page.get_by_text("Done. Next:")).to_be_visible(timeout=300_000)
        finished = jobs.JobStore(ws.jobs_db).list()
        # The demo data exist now (Data page), so the chain writes only the demo recording, then fit -> evaluate.
        assert [(j.kind, j.state) for j in finished[1:]] == [("demo-data", "done"), ("fit", "done"),
                                                             ("evaluate", "done")], jobs.tail_log(finished[-1])
        page.wait_for_selector(IDLE)
        page.screenshot(path=str(SHOTS / "4-start-done.png"), full_page=True)

        # Results, from the Start page's link: tables, ROC, histogram.
        page.locator('[data-testid="stPageLink-NavLink"]', has_text="Results").first.click()
        page.wait_for_selector(IDLE)
        expect(page.get_by_text("Per machine type", exact=True)).to_be_visible()
        expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=120_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(SHOTS / "5-results.png"), full_page=True)

        # Score a standard DCASE test folder: the machine comes from the folders and names, nothing typed.
        go("Score")
        page.get_by_text("a folder on this machine").click()
        page.wait_for_selector(IDLE)
        box = page.get_by_role("textbox", name="Folder with .wav clips")
        box.fill("data/demo/dev_data/fan/test")
        box.press("Enter")
        page.wait_for_selector(IDLE)
        page.get_by_role("button", name="Score", exact=True).click()
        n_clips = len(list((ws.data / "demo" / "dev_data" / "fan" / "test").glob("*.wav")))
        expect(page.get_by_text(f"{n_clips} clip(s) scored")).to_be_visible(timeout=120_000)
        expect(page.get_by_text("skipped")).to_have_count(0)
        page.wait_for_selector(IDLE)
        page.screenshot(path=str(SHOTS / "6-score.png"), full_page=True)

        # Monitor the long demo recording: prefilled, its machine preselected from the name.
        # (not go(): "Monitor" is also inside the Results link's icon name, "monitoring")
        page.locator('[data-testid="stSidebarNavLink"]').filter(has=page.get_by_text("Monitor", exact=True)).click()
        page.wait_for_selector(IDLE)
        expect(page.get_by_role("tab", name="Monitor a recording")).to_be_visible()
        box = page.get_by_role("textbox", name="Recording (.wav/.flac, any length) on this machine")
        expect(box).to_have_value("recordings/demo_fan_id_00.wav")
        page.get_by_role("button", name="Monitor", exact=True).click()
        expect(page.get_by_text("event(s)")).to_be_visible(timeout=120_000)
        page.wait_for_selector(IDLE)
        expect(page.locator(".js-plotly-plot")).to_have_count(1, timeout=60_000)
        expect(page.locator('[data-testid="stAudio"]')).to_have_count(1)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(SHOTS / "7-monitor.png"), full_page=True)
        browser.close()
