"""The paper's Tables 1 and 2, typed by hand from the paper, against the prompt library and the AudioLDM defaults."""

from __future__ import annotations

import inspect

import yaml

from rcmae import cli
from rcmae.augment import bank
from rcmae.augment.prompts import PromptLibrary

# Table 1 ("Samples of retrieved prompts from ChatGPT"), typed from the paper, one string per row.
TABLE_1 = [
    "add sharp and metallic screeching sound created by metal-cutting saws in a fabrication workshop as they cut "
    "through various metal materials",
    "add rhythmic and pulsating buzzing sound produced by printing presses in a publishing house as they rapidly "
    "print and collate pages of books and magazines",
    "add continuous and powerful rumbling noise accompanied by the grinding and crushing of rocks in a mining quarry "
    "as large crushers pulverize rocks into smaller fragments",
    "add continuous and rhythmic clicking noise produced by injection molding machines in a plastic manufacturing "
    "facility as they shape molten plastic into various products",
    "add rhythmic and repetitive whirring noise accompanied by the sound of cutting tools in a woodworking shop as "
    "they shape and carve wood materials",
    "add continuous and powerful whirring noise accompanied by the sound of pneumatic tools in an automobile "
    "assembly line as vehicle parts are fastened",
]
# Table 2 ("AudioLDM hyperparameters"): DDIM steps Random (10, 50); duration 10 s; seed random for each sample;
# text "add (noises) exist in (factory)"; guidance scale 2.5.
TABLE_2 = {"steps": (10, 50), "duration_s": 10.0, "guidance": 2.5}


def test_a_fresh_library_holds_table_1_word_for_word(tmp_path):
    lib = PromptLibrary(tmp_path / "prompts.yaml")
    items = lib.list()
    assert [p["text"] for p in items] == TABLE_1
    assert all(p["tags"] == ["paper", "table1"] for p in items)
    assert [p["text"] for p in lib.list(tag="table1")] == TABLE_1
    on_disk = yaml.safe_load((tmp_path / "prompts.yaml").read_text())
    assert [p["text"] for p in on_disk["prompts"]] == TABLE_1
    # Every Table 1 prompt starts as Table 2's TEXT template says: "add (noises) ...".
    assert all(t.startswith("add ") for t in TABLE_1)


def test_existing_libraries_are_left_alone_until_add_paper(tmp_path, capsys):
    path = tmp_path / "old.yaml"
    old = {"prompts": [{"id": "p1", "text": "Add the rhythmic buzzing of printing presses in a production hall",
                        "tags": ["paper"]},
                       {"id": "p2", "text": TABLE_1[2].upper(), "tags": ["mine"]}],
           "history": []}
    path.write_text(yaml.safe_dump(old))
    before = path.read_text()
    PromptLibrary(path).list()
    assert path.read_text() == before  # opening never rewrites a user's library

    assert cli.main(["prompts", "--library", str(path), "add-paper"]) == 0
    assert "5 Table 1 prompt(s) added, 1 already there" in capsys.readouterr().out
    items = PromptLibrary(path).list()
    texts = [p["text"] for p in items]
    assert texts[:2] == [old["prompts"][0]["text"], TABLE_1[2].upper()]  # kept as they were
    assert texts[2:] == [t for i, t in enumerate(TABLE_1) if i != 2]
    assert [p["id"] for p in items] == ["p1", "p2", "p3", "p4", "p5", "p6", "p7"]
    assert items[1]["tags"] == ["mine", "paper", "table1"]
    # A second run adds nothing.
    assert cli.main(["prompts", "--library", str(path), "add-paper"]) == 0
    assert "0 Table 1 prompt(s) added, 6 already there" in capsys.readouterr().out


def test_table_2_values_are_the_audioldm_defaults():
    params = inspect.signature(bank.build_bank).parameters
    assert tuple(params["steps"].default) == TABLE_2["steps"]
    assert params["guidance"].default == TABLE_2["guidance"]
    assert params["prompts"].default is None and bank.load_prompt_source(None)[0] == TABLE_1
    assert bank.PAPER_DURATION_S == TABLE_2["duration_s"]
    assert bank.MAX_SAMPLES == 160000  # read by build_bank (tests/augment/test_bank.py cuts an 11 s clip to it)
    args = cli.build_parser().parse_args(["augment", "--data", "d", "--out", "o", "--backend", "audioldm"])
    assert tuple(args.steps) == TABLE_2["steps"] and args.guidance == TABLE_2["guidance"]
    assert args.prompts is None  # the default prompt set is Table 1


def test_each_clip_draws_its_steps_from_10_to_50_inclusive_and_its_own_seed():
    # "Random (10, 50)" for every sample: the per-clip draw covers both ends and nothing outside.
    job = bank._Job(source="/x.wav", rel="fan/train/x.wav", k=0, output="audio/fan/x__aug0.wav")
    draws = [bank._draw(bank._Job(job.source, job.rel, k, job.output), 0, 6, "audioldm", (0.0, 0.0),
                        TABLE_2["steps"]) for k in range(400)]
    steps = {d["steps"] for d in draws}
    assert steps == set(range(10, 51))
    assert len({d["seed"] for d in draws}) == 400


def test_prompts_page_adds_table_1_to_an_older_library(tmp_path, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from rcmae.workspace import Workspace

    root = Path(__file__).resolve().parents[2]
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir(parents=True)
    ws.prompts.write_text(yaml.safe_dump({"prompts": [{"id": "p1", "text": TABLE_1[0], "tags": []}]}))
    monkeypatch.setenv("RCMAE_WORKSPACE", str(ws.root))  # the app keeps paths inside its start workspace
    at = AppTest.from_file(str(root / "app" / "main.py"), default_timeout=120)
    at.session_state["workspace"] = str(ws.root)
    at.run()
    at.switch_page(str(root / "pages" / "prompts.py"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    button = next(b for b in at.button if b.label.startswith("Add the paper's Table 1 prompts"))
    assert "(5 missing)" in button.label
    button.click()
    at.run()
    assert not at.exception
    assert [p["text"] for p in PromptLibrary(ws.prompts).list()] == TABLE_1
    assert not any(b.label.startswith("Add the paper's Table 1") for b in at.button)
