"""Prompt library CRUD, the template generator, and LLM generation against a real local HTTP server.

The LLM tests start a tiny OpenAI-compatible server (http.server in a thread on 127.0.0.1) and talk to
it with the real ``openai`` client over a real socket.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from rcmae import cli
from rcmae.augment.llm import PromptGenerationError, generate_prompts
from rcmae.augment.procedural import parse_prompt
from rcmae.augment.prompts import MAX_LEN, MIN_LEN, PAPER_PROMPTS, PromptLibrary, PromptLibraryError, template_prompts

SECRET = "sk-test-NEVER-ON-DISK-4242"


# ---------------------------------------------------------------- library
def test_library_is_created_seeded_with_the_six_paper_prompts(tmp_path):
    path = tmp_path / "prompts.yaml"
    lib = PromptLibrary(path)
    items = lib.list()
    assert [p["id"] for p in items] == ["p1", "p2", "p3", "p4", "p5", "p6"]
    assert [p["text"] for p in items] == list(PAPER_PROMPTS)
    assert all("paper" in p["tags"] and p["used_by"] == [] for p in items)
    on_disk = yaml.safe_load(path.read_text())
    assert [p["text"] for p in on_disk["prompts"]] == list(PAPER_PROMPTS)


def test_library_crud_round_trip(tmp_path):
    path = tmp_path / "lib.yaml"
    lib = PromptLibrary(path)
    added = lib.add("Add the distant hum of air compressors in a warehouse", tags=["mine"], notes="try it")
    assert added["id"] == "p7"
    with pytest.raises(PromptLibraryError, match="already in the library as p7"):
        lib.add("  add the DISTANT hum of air   compressors in a warehouse. ")
    with pytest.raises(PromptLibraryError, match=f"{MIN_LEN}..{MAX_LEN} characters"):
        lib.add("too short")
    lib.update("p7", notes="better", tags=["mine", "air"])
    lib.mark_used(["p7", "p2"], "bank-a")
    lib.mark_used(["p7"], "bank-a")  # recorded once
    lib.mark_used(["p7"], "bank-b")
    removed = lib.remove("p3")
    assert removed["text"] == PAPER_PROMPTS[2]
    # Everything above is on disk: a fresh object reads the same library.
    again = PromptLibrary(path)
    p7 = again.get("p7")
    assert (p7["notes"], p7["tags"], p7["used_by"]) == ("better", ["mine", "air"], ["bank-a", "bank-b"])
    assert again.get("p2")["used_by"] == ["bank-a"]
    assert "p3" not in [p["id"] for p in again.list()]
    assert [p["id"] for p in again.list(tag="mine")] == ["p7"]
    # Ids are never reused, even after a removal.
    assert again.add("Add periodic clicking from a plastics injection moulding line")["id"] == "p8"
    events = [(e["event"], e["id"]) for e in again.history()]
    assert events[1:] == [("added", "p7"), ("updated", "p7"), ("used", "p7"), ("used", "p2"), ("used", "p7"),
                          ("removed", "p3"), ("added", "p8")]
    assert [e["detail"] for e in again.history("p7") if e["event"] == "used"] == ["bank-a", "bank-b"]
    with pytest.raises(PromptLibraryError, match="'p99' not in the library"):
        again.remove("p99")
    # Atomic saves leave no temp files behind.
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".lib.yaml.lock")) == ["lib.yaml"]


def test_a_broken_library_file_is_named_in_a_one_line_error(tmp_path):
    path = tmp_path / "lib.yaml"
    path.write_text("prompts: {this is: [not, a list}\n")
    with pytest.raises(PromptLibraryError) as err:
        PromptLibrary(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    path.write_text("prompts:\n  - {text: no id here}\n")
    with pytest.raises(PromptLibraryError, match=r"prompts\[0\] needs at least 'id' and 'text'"):
        PromptLibrary(path)


# ---------------------------------------------------------------- template generator
def test_template_generator_is_deterministic_varied_and_valid():
    a = template_prompts(40, seed=7)
    assert a == template_prompts(40, seed=7)
    assert a != template_prompts(40, seed=8)
    assert len({t.lower() for t in a}) == 40
    assert all(MIN_LEN <= len(t) <= MAX_LEN and t.startswith("Add ") and "\n" not in t for t in a)
    # Varied: many different sound sources, and every word is understood by the procedural backend.
    sources = set()
    for text in a:
        models, unknown = parse_prompt(text)
        assert unknown == [] and models != ["factory"], text
        sources.update(models)
    assert len(sources) >= 5


def test_template_generator_avoids_existing_prompts():
    first = template_prompts(5, seed=1)
    more = template_prompts(5, seed=1, existing=[t.upper() for t in first])
    assert not {t.lower() for t in more} & {t.lower() for t in first}


def test_without_key_or_server_the_template_generator_is_used(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    prompts, source = generate_prompts(3, seed=2, settings=tmp_path / "none.yaml")
    assert source == "template" and prompts == template_prompts(3, seed=2)
    with pytest.raises(PromptGenerationError, match="no LLM configured"):
        generate_prompts(3, use_llm=True, settings=tmp_path / "none.yaml")


# ---------------------------------------------------------------- a local OpenAI-compatible server
class _Server:
    """POST /v1/chat/completions answers ``self.content`` as the assistant message (after ``self.delay`` s)."""

    def __init__(self):
        self.content = "[]"
        self.delay = 0.0
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                time.sleep(outer.delay)
                reply = {
                    "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": outer.content}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
                data = json.dumps(reply).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the timeout test)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with _Server() as s:
        yield s


GOOD = [
    "Add the shrill screeching of a band saw cutting steel beams in a fabrication hall",
    "Add the steady rhythmic thumping of a stamping press in a car parts factory",
    "Add short bursts of compressed air hissing from pneumatic clamps on an assembly line",
]


def test_llm_good_response_is_validated(server, tmp_path):
    items = GOOD + ["too short", GOOD[0].upper() + "  ", PAPER_PROMPTS[0].lower(), "Add a prompt\nover two lines"]
    server.content = "```json\n" + json.dumps(items) + "\n```"
    prompts, source = generate_prompts(3, model="tiny-llm", base_url=server.base_url, api_key=SECRET, timeout=5,
                                       existing=PAPER_PROMPTS, settings=tmp_path / "none.yaml")
    assert prompts == GOOD
    assert source == f"llm:tiny-llm@{server.base_url}"
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["body"]["model"] == "tiny-llm"
    assert request["auth"] == f"Bearer {SECRET}"
    assert "JSON list" in request["body"]["messages"][0]["content"]


def test_llm_settings_file_supplies_model_and_server(server, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({"llm": {"model": "local-model", "base_url": server.base_url}}))
    server.content = json.dumps({"prompts": GOOD[:2]})
    prompts, source = generate_prompts(2, settings=settings, timeout=5)
    assert prompts == GOOD[:2] and source.startswith("llm:local-model@")
    assert server.requests[0]["body"]["model"] == "local-model"


def test_llm_malformed_response_gives_one_clear_line(server, tmp_path):
    server.content = "Sure! Here are some prompts: 1. Add saws 2. Add presses"
    with pytest.raises(PromptGenerationError) as err:
        generate_prompts(2, base_url=server.base_url, api_key=SECRET, timeout=5, settings=tmp_path / "none.yaml")
    message = str(err.value)
    assert "not a JSON list" in message and "Sure! Here" in message and "\n" not in message
    server.content = json.dumps({"answer": "nope"})
    with pytest.raises(PromptGenerationError, match="JSON but not a list"):
        generate_prompts(2, base_url=server.base_url, api_key=SECRET, timeout=5, settings=tmp_path / "none.yaml")


def test_llm_timeout_is_a_clear_error_within_bounded_time(server, tmp_path):
    server.delay = 3.0
    server.content = json.dumps(GOOD)
    start = time.perf_counter()
    with pytest.raises(PromptGenerationError, match=r"did not answer within 0.5 s"):
        generate_prompts(2, base_url=server.base_url, api_key=SECRET, timeout=0.5, settings=tmp_path / "none.yaml")
    assert time.perf_counter() - start < 2.5
    assert len(server.requests) == 1  # no retries


def test_cli_generate_adds_prompts_and_never_writes_the_key(server, tmp_path, monkeypatch, capsys, caplog):
    workspace = tmp_path / "ws"
    monkeypatch.setenv("RCMAE_WORKSPACE", str(workspace))
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    server.content = json.dumps(GOOD)
    caplog.set_level("DEBUG", logger="rcmae")
    assert cli.main(["prompts", "generate", "-n", "3", "--model", "tiny-llm"]) == 0
    out = capsys.readouterr().out
    assert f"prompts from: llm:tiny-llm@{server.base_url}" in out and "added p9" in out
    lib = PromptLibrary(workspace / "prompts.yaml")
    added = [p for p in lib.list() if "generated" in p["tags"]]
    assert [p["text"] for p in added] == GOOD and all("llm" in p["tags"] for p in added)
    # The key reached the server but nothing under the workspace, in the output or in rcmae's logs.
    assert server.requests[0]["auth"] == f"Bearer {SECRET}"
    for path in workspace.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path
    assert SECRET not in out and SECRET not in caplog.text


def test_cli_list_add_remove_and_template_generate(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("RCMAE_WORKSPACE", str(tmp_path / "ws"))
    lib = str(tmp_path / "lib.yaml")
    assert cli.main(["prompts", "--library", lib, "add", "Add the clatter of a bottling line in a brewery",
                     "--tag", "drinks"]) == 0
    assert cli.main(["prompts", "--library", lib, "remove", "p1"]) == 0
    assert cli.main(["prompts", "--library", lib, "generate", "-n", "2", "--seed", "4", "--template"]) == 0
    assert cli.main(["prompts", "--library", lib, "list"]) == 0
    out = capsys.readouterr().out
    assert "added p7: Add the clatter" in out and "removed p1" in out and "prompts from: template" in out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("   p") or line.startswith("  p")]
    assert listed[-8:] == ["p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9"]
    assert [p["text"] for p in PromptLibrary(lib).list(tag="template")] == template_prompts(
        2, seed=4, existing=PromptLibrary(lib).texts()[:6])
    # A bad id is a one-line error and exit status 2.
    assert cli.main(["prompts", "--library", lib, "remove", "p42"]) == 2
    assert "rcmae prompts: error: prompt id 'p42' not in the library" in capsys.readouterr().err


def test_main_needs_no_cli_parser(tmp_path, capsys):
    args = argparse.Namespace(library=str(tmp_path / "x.yaml"), action="list")
    from rcmae.cli.augment import _cmd_prompts as main

    assert main(args) == 0
    assert Path(tmp_path / "x.yaml").is_file() and PAPER_PROMPTS[5] in capsys.readouterr().out
