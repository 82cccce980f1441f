"""The Gradio demo app, driven through gradio_client against the running ``rcmae demo-app`` process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rcmae.data.audio import load_audio
from rcmae.deploy.bundle import Bundle

ROOT = Path(__file__).resolve().parents[2]
gradio_client = pytest.importorskip("gradio_client", reason="gradio_client is in requirements.txt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(demo_bundle):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False"}
    argv = [sys.executable, "-m", "rcmae.cli", "demo-app", str(demo_bundle), "--trust", "--port", str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    proc.kill()
                    pytest.fail(f"demo-app did not start: {proc.stdout.read()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_demo_app_answers_with_the_bundles_score(app_url, demo_bundle, demo_run):
    bundle = Bundle(demo_bundle, trust=True)
    data = Path(bundle.meta["run"]["data"])
    client = gradio_client.Client(app_url, verbose=False)
    for clip, machine in ((data / "fan" / "test" / "anomaly_id_02_00000000.wav", "fan/02"),
                          (data / "fan" / "test" / "normal_id_04_00000001.wav", "fan/04")):
        out = client.predict(gradio_client.handle_file(str(clip)), machine, api_name="/score")
        result, verdict = out[0], out[1]
        ref = bundle.score(load_audio(clip), *machine.split("/"))
        # On the scores' scale: the default is a z-scored ensemble, whose scores can sit near zero.
        assert result["score"] == pytest.approx(ref["score"], rel=1e-6, abs=1e-6 * max(1.0, abs(ref["threshold"])))
        assert result["threshold"] == ref["threshold"] and result["decision"] == ref["decision"]
        assert ("ANOMALOUS" in verdict) == (ref["decision"] == "anomaly")
        # Three nearest normal examples of the same machine come back as playable files.
        examples = [o for o in out[3:6] if o]
        assert len(examples) == 3 and all(Path(p).suffix == ".wav" for p in examples)
        assert f"id_{machine[-2:]}" in out[6]


def test_demo_app_binds_to_loopback_by_default():
    from rcmae.cli import build_parser

    args = build_parser().parse_args(["demo-app", "B"])
    assert args.host == "127.0.0.1" and args.share is False


def test_demo_app_starts_on_a_machine_offers_examples_and_shows_no_server_paths(demo_bundle, tmp_path):
    import gradio as gr

    from rcmae.deploy.demo_app import build_app, example_rows, predict

    bundle = Bundle(demo_bundle, trust=True)
    units = [f"{t}/{i}" for t, i in bundle.units]
    rows = example_rows(bundle)
    # One example per machine, each a clip inside the bundle (the Examples row of the page).
    assert [r[1] for r in rows] == units
    assert all(Path(r[0]).is_file() and Path(r[0]).is_relative_to(demo_bundle) for r in rows)
    app = build_app(bundle)
    dropdown = next(b for b in app.blocks.values() if isinstance(b, gr.Dropdown))
    assert dropdown.value == units[0]  # scoring right away works: a machine is chosen
    assert any(isinstance(b, gr.Dataset) for b in app.blocks.values())  # gr.Examples renders as a Dataset
    # The nearest-clip list names training clips by file name only; a bad upload's error too.
    out = predict(bundle, rows[0][0], rows[0][1])
    assert "/" not in out[-1].split("training clip")[-1].split("`")[1]
    bad = tmp_path / "server" / "tmp" / "upload.wav"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not audio")
    with pytest.raises(gr.Error) as err:
        predict(bundle, str(bad), units[0])
    assert str(tmp_path) not in str(err.value) and "upload.wav" in str(err.value)


def test_demo_app_refuses_uploads_over_the_limit_on_the_server(app_url, tmp_path):
    # The limit is the server's (gradio max_file_size), not the page's: a raw POST of a larger file is refused.
    import urllib.error

    from rcmae.deploy import demo_app
    from rcmae.workbench import UPLOAD_LIMIT_MB

    assert demo_app.UPLOAD_LIMIT_MB == UPLOAD_LIMIT_MB
    boundary = "rcmaeboundary"

    def post(n_bytes: int) -> int:
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.wav\"\r\n"
                "Content-Type: audio/wav\r\n\r\n").encode() + b"\0" * n_bytes + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(app_url + "gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code

    assert post(1000) == 200
    assert post(int((UPLOAD_LIMIT_MB + 1) * 2**20)) == 413
