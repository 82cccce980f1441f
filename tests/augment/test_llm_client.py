"""The LLM client under a hostile or broken server: one overall deadline, messages naming the server, no secrets."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai  # noqa: F401  (imported up front: the deadline test times the network, not a cold import)
import pytest

from rcmae import cli
from rcmae.augment.llm import PromptGenerationError, generate_prompts, redact_url
from rcmae.augment.prompts import PromptLibrary

pytestmark = pytest.mark.reliability  # bad-input cases of the fault-injection suite (issue 11)

GOOD = [
    "Add the shrill screeching of a band saw cutting steel beams in a fabrication hall",
    "Add the steady rhythmic thumping of a stamping press in a car parts factory",
]


class _Raw:
    """Answers every POST with ``mode``: a trickle (1 byte/s), an HTML page, invalid JSON, or a good completion."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.paths.append(self.path)
                try:
                    if outer.mode == "trickle":
                        body = json.dumps({"choices": [{"message": {"content": json.dumps(GOOD)}}]}).encode()
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        for b in body:  # one byte a second: each read is quick, the whole reply takes minutes
                            self.wfile.write(bytes([b]))
                            self.wfile.flush()
                            time.sleep(1.0)
                        return
                    body, kind = {
                        "html": (b"<!DOCTYPE html><html><body><h1>Welcome to nginx!</h1></body></html>", "text/html"),
                        "badjson": (b'{"choices": [ {"message": ', "application/json"),
                        "good": (json.dumps({"choices": [{"message": {"role": "assistant",
                                                                      "content": json.dumps(GOOD)}}]}).encode(),
                                 "application/json"),
                    }[outer.mode]
                    self.send_response(200)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def raw_server(request):
    server = _Raw(request.param)
    yield server
    server.close()


@pytest.mark.parametrize("raw_server", ["trickle"], indirect=True)
def test_timeout_bounds_the_whole_call(raw_server, tmp_path):
    start = time.perf_counter()
    with pytest.raises(PromptGenerationError, match=r"did not answer within 2 s") as err:
        generate_prompts(2, base_url=raw_server.base_url, api_key="k", timeout=2, settings=tmp_path / "none.yaml")
    elapsed = time.perf_counter() - start
    # The reply would take minutes at 1 byte/s; a per-read timeout never fires. Slack for a loaded CI machine.
    assert 1.9 < elapsed < 4.5, elapsed
    assert f"127.0.0.1:{raw_server.port}" in str(err.value)


@pytest.mark.parametrize("raw_server", ["html"], indirect=True)
def test_html_reply_is_named(raw_server, tmp_path):
    with pytest.raises(PromptGenerationError) as err:
        generate_prompts(2, base_url=raw_server.base_url, api_key="k", timeout=5, settings=tmp_path / "none.yaml")
    msg = str(err.value)
    assert "HTML page" in msg and raw_server.base_url in msg and "Welcome to nginx" in msg and "\n" not in msg


@pytest.mark.parametrize("raw_server", ["badjson"], indirect=True)
def test_invalid_json_names_the_llm(raw_server, tmp_path):
    with pytest.raises(PromptGenerationError) as err:
        generate_prompts(2, base_url=raw_server.base_url, api_key="k", timeout=5, settings=tmp_path / "none.yaml")
    msg = str(err.value)
    assert msg.startswith(f"the LLM at {raw_server.base_url} sent invalid JSON") and "\n" not in msg


def test_redact_url_by_hand():
    assert redact_url("http://alice:hunter2@llm.local:8000/v1?key=abc&x=1") == "http://llm.local:8000/v1?key=***&x=***"
    assert redact_url("https://api.example.com/v1") == "https://api.example.com/v1"
    assert redact_url(None) == "api.openai.com"


@pytest.mark.parametrize("raw_server", ["good", "html"], indirect=True)
def test_credentials_never_printed_or_saved(raw_server, tmp_path, monkeypatch, capsys, caplog):
    workspace = tmp_path / "ws"
    monkeypatch.setenv("RCMAE_WORKSPACE", str(workspace))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    url = f"http://alice:hunter2@127.0.0.1:{raw_server.port}/v1?key=SECRETKEY"
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    caplog.set_level("DEBUG")
    rc = cli.main(["prompts", "generate", "-n", "2", "--model", "m", "--timeout", "5"])
    captured = capsys.readouterr()
    text = captured.out + captured.err + caplog.text
    for path in workspace.rglob("*"):
        if path.is_file():
            text += path.read_text(errors="replace")
    assert "hunter2" not in text and "SECRETKEY" not in text and "alice" not in text
    if raw_server.mode == "good":
        assert rc == 0
        notes = [p["notes"] for p in PromptLibrary(workspace / "prompts.yaml").list() if "generated" in p["tags"]]
        assert notes and all(f"127.0.0.1:{raw_server.port}/v1?key=***" in n for n in notes)
    else:
        assert rc == 2 and "HTML page" in captured.err
