"""Every workbench page under Streamlit's AppTest: empty workspace, a workspace with a finished run, main actions."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import assert_close_on_scale
from streamlit.testing.v1 import AppTest

from rcmae.augment.bank import read_manifest
from rcmae.augment.procedural import ProceduralAugmenter
from rcmae.data.audio import load_audio
from rcmae.evaluation import evaluate as score
from rcmae.evaluation.metrics import load_results
from rcmae.scorers import detector
from rcmae.training import stages as train
from rcmae.workbench import jobs, processes
from rcmae.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["home", "data", "prompts", "audition", "jobs", "results", "score", "monitor"]
# A 1-block model: the whole pretrain + finetune + evaluate takes seconds on one CPU thread.
TINY = ["model.embed_dim=32", "model.depth=1", "model.heads=2", "model.decoder_embed_dim=32", "model.decoder_depth=1",
        "model.decoder_heads=2", "model.proj_dim=32", "pretrain.batch_size=8", "finetune.batch_size=8",
        "score.recon_masks=2"]


@pytest.fixture(scope="module")
def full_ws(tiny_dcase: Path, tmp_path_factory) -> Workspace:
    """A workspace holding the tiny data set and one pretrained, fine-tuned and evaluated run."""
    ws = Workspace(tmp_path_factory.mktemp("ws_full")).ensure()
    (ws.data / "tiny").symlink_to(tiny_dcase, target_is_directory=True)
    # The operator lets typed paths reach the linked data set (docs/workbench.md, allowed folders).
    ws.settings.write_text(f"allowed_roots:\n  - {tiny_dcase}\n")
    run = ws.runs / "tiny-run"
    train.pretrain(tiny_dcase, run, epochs=1, overrides=TINY, progress=False)
    train.finetune(run, epochs=1, progress=False)
    score.evaluate_run(run)
    return ws


def _app(ws: Workspace, page: str) -> AppTest:
    # The app's start workspace: typed workspaces and paths must stay inside it (rcmae.workbench.resolve_path).
    os.environ["RCMAE_WORKSPACE"] = str(ws.root)
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=120)
    at.session_state["workspace"] = str(ws.root)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if page != "home":
        at.switch_page(str(ROOT / "pages" / f"{page}.py"))
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "info", "success", "error", "warning", "caption", "title")
             for e in at.get(kind)]
    return "\n".join(str(p) for p in parts)


def _wait_job(store: jobs.JobStore, job_id: int, timeout: float = 120.0) -> jobs.Job:
    deadline = time.time() + timeout
    while time.time() < deadline:
        jobs.start_ready(store)
        job = store.get(job_id)
        if job.state in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {jobs.tail_log(store.get(job_id))}")


# Each page on a fresh workspace explains what is missing and offers the path that works.
EMPTY_HINTS = {
    "home": "No data yet",
    "data": "No demo data yet",
    "prompts": "No LLM configured",
    "audition": "create the demo data on **Data** first",
    "jobs": "No jobs yet",
    "results": "No evaluated run yet",
    "score": "No trained run yet",
    "monitor": "No trained run or exported bundle yet",
}


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_on_empty_workspace(page: str, tmp_path: Path, monkeypatch) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    at = _app(Workspace(tmp_path / "ws"), page)
    assert EMPTY_HINTS[page] in _texts(at)


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_finished_run(page: str, full_ws: Workspace) -> None:
    at = _app(full_ws, page)
    if page == "home":
        metrics = {m.label: m.value for m in at.metric}
        assert (metrics["Data sets"], metrics["Runs"]) == ("1", "1")
    elif page == "data":
        assert len(at.dataframe[0].value) == 4  # 2 types x 2 IDs
    elif page == "prompts":
        assert len(at.dataframe[0].value) == 6  # the paper's six prompts seed a new library
    elif page == "audition":
        assert any(b.label == "Augment" for b in at.button)
    elif page == "jobs":
        assert any(b.label == "Launch" for b in at.button)
    elif page == "results":
        assert len(at.get("plotly_chart")) >= 4  # ROC, histogram and the two embedding maps
    elif page == "score":
        assert at.selectbox[0].value.name == "tiny-run" and at.selectbox[1].value == "ensemble"  # tiny's default
    elif page == "monitor":
        assert at.selectbox[0].value.name == "tiny-run" and any(b.label == "Export" for b in at.button)


def test_data_page_counts(full_ws: Workspace, tiny_dcase: Path) -> None:
    at = _app(full_ws, "data")
    table = at.dataframe[0].value
    # Independent count: the files on disk, by the DCASE 2020 naming rule.
    for _, row in table.iterrows():
        folder = tiny_dcase / "dev_data" / row["machine_type"]
        for split in ("train", "test"):
            for label in ("normal", "anomaly"):
                col = f"{split} {label}"
                expected = len(list((folder / split).glob(f"{label}_id_{row['machine_id']}_*.wav")))
                assert row.get(col, 0) == expected, (row["machine_type"], row["machine_id"], col)
    assert len(table) == 4
    assert list(table.columns) == ["machine_type", "machine_id", "train normal", "test normal", "test anomaly"]
    assert len(at.get("audio")) == 1 and len(at.get("plotly_chart")) == 1  # the clip browser


def test_data_page_lists_problems_without_failing(tmp_path: Path, tiny_dcase: Path) -> None:
    ws = Workspace(tmp_path / "ws").ensure()
    data = ws.data / "mixed"
    (data / "fan" / "train").mkdir(parents=True)
    good = tiny_dcase / "dev_data" / "fan" / "train" / "normal_id_00_00000000.wav"
    (data / "fan" / "train" / good.name).write_bytes(good.read_bytes())
    (data / "fan" / "train" / "recording 7.wav").write_bytes(good.read_bytes())
    import soundfile as sf

    sf.write(data / "fan" / "train" / "normal_id_00_00000099.wav", np.zeros(16000, np.float32), 16000)
    at = _app(ws, "data")
    assert "1 file(s) fit no layout" in _texts(at)
    assert at.dataframe[0].value.iloc[0]["train normal"] == 2
    next(b for b in at.button if b.label.startswith("Check every clip")).click()
    at.run()
    assert not at.exception
    problems = at.dataframe[-1].value
    # Only the silent clip has problems; the good copy passes check_clip.
    assert set(problems["path"].map(lambda p: Path(p).name)) == {"normal_id_00_00000099.wav"}
    assert "1 clip(s) with problems" in _texts(at)


def test_prompts_page_add_lands_in_yaml(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    at = _app(ws, "prompts")
    at.text_input[0].set_value("add the whine of a worn conveyor belt motor")
    at.text_input[1].set_value("conveyor, motor")
    at.button[0].click()  # the Add form's submit button comes first
    at.run()
    assert not at.exception
    library = yaml.safe_load(ws.prompts.read_text())
    added = [p for p in library["prompts"] if p["text"] == "add the whine of a worn conveyor belt motor"]
    assert len(added) == 1 and added[0]["tags"] == ["conveyor", "motor"]
    assert len(library["prompts"]) == 7  # the paper's six plus ours


def test_audition_procedural_produces_audio_and_keeps(full_ws: Workspace) -> None:
    at = _app(full_ws, "audition")
    augment = next(b for b in at.button if b.label == "Augment")
    augment.click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (res,) = at.session_state["audition"]
    # Independent reference: the procedural backend called directly with the page's defaults.
    wave = load_audio(res["source"])
    expected = ProceduralAugmenter()(wave, res["prompt"], snr_db=5.0, seed=0)
    expected = expected * min(1.0, 0.999 / np.max(np.abs(expected)))
    np.testing.assert_allclose(res["augmented"].wave, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(res["augmented"].wave, wave)
    assert len(at.get("audio")) == 2 and len(at.get("plotly_chart")) == 3
    next(b for b in at.button if b.label == "Keep").click()
    at.run()
    manifest = read_manifest(full_ws.banks / "auditions")
    assert manifest["prompt"].tolist() == [res["prompt"]] and manifest["backend"].tolist() == ["procedural"]
    kept = load_audio(full_ws.banks / "auditions" / manifest["output"][0])
    np.testing.assert_allclose(kept, res["augmented"].wave, atol=1.0 / 32767 + 1e-6)


def test_audition_audioldm_without_weights_offers_procedural(tmp_path: Path, full_ws: Workspace,
                                                             monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    at = _app(full_ws, "audition")
    at.radio[0].set_value("audioldm")
    at.run()
    next(b for b in at.button if b.label == "Augment").click()
    at.run()
    assert not at.exception
    text = _texts(at)
    assert "AudioLDM weights" in text and "choose **procedural**" in text


def test_jobs_page_launch_creates_row_and_runs(full_ws: Workspace) -> None:
    at = _app(full_ws, "jobs")
    at.selectbox[0].set_value("evaluate")
    at.run()
    next(b for b in at.button if b.label == "Launch").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    store = jobs.JobStore(full_ws.jobs_db)
    (job,) = store.list()
    assert job.argv == ("evaluate", "--run", str((full_ws.runs / "tiny-run").resolve()))
    assert job.gpus == "" and job.out == str((full_ws.runs / "tiny-run").resolve())
    end = _wait_job(store, job.id)
    assert end.state == "done", jobs.tail_log(end)
    at.run()  # the live fragment now shows the finished job and its log
    table = at.dataframe[0].value
    assert table.iloc[0]["state"] == "done"


def test_start_page_quick_demo_queues_a_chain(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    at = _app(ws, "home")
    next(b for b in at.button if "quick demo" in b.label).click()
    at.run()
    assert not at.exception
    store = jobs.JobStore(ws.jobs_db)
    chain = store.list()
    # No data yet: write the small set (and the demo recording), fit the training-free detector, evaluate it.
    assert [j.kind for j in chain] == ["demo-data", "fit", "evaluate"]
    assert [j.after for j in chain] == [None, chain[0].id, chain[1].id]
    assert "--recording" in chain[0].argv and chain[1].out == chain[2].out and "--preset" in chain[1].argv
    # While the chain runs, both start buttons are disabled (a second click would queue a second chain).
    at.run()
    assert all(b.disabled for b in at.button if "quick demo" in b.label or "Train RC-MAE" in b.label)
    # Cancelling the first job cancels the rest of the chain (nothing else starts).
    jobs.cancel(store, chain[0].id)
    jobs.start_ready(store)
    assert [j.state for j in store.list()] == ["cancelled"] * 3
    at.run()
    assert not any(b.disabled for b in at.button if "quick demo" in b.label)
    assert "ended cancelled" in _texts(at)


def test_quick_demo_runs_to_results_and_points_there(tmp_path: Path, monkeypatch) -> None:
    # The whole quick demo, as a newcomer starts it: small counts keep it to seconds here.
    for var, value in (("RCMAE_QUICK_TRAIN_PER_ID", "6"), ("RCMAE_QUICK_TEST_PER_ID", "3")):
        monkeypatch.setenv(var, value)
    ws = Workspace(tmp_path / "ws")
    at = _app(ws, "home")
    next(b for b in at.button if "quick demo" in b.label).click()
    at.run()
    store = jobs.JobStore(ws.jobs_db)
    chain = store.list()
    for job in chain:
        end = _wait_job(store, job.id, timeout=300)
        assert end.state == "done", jobs.tail_log(end)
    run = Path(chain[-1].out)
    res = load_results(run / "eval" / "results.json")
    assert res["system"] == "rcmae-ensemble" and 0.0 <= res["average"]["auc"] <= 1.0
    assert json.loads((run / "run.json").read_text())["training_free"] is True
    assert (ws.root / "recordings" / "demo_fan_id_00.wav").is_file()
    progress = json.loads((run / "progress.json").read_text())
    assert progress["stage"] == "evaluate" and progress["state"] == "done"
    at.run()
    assert "Done. Next:" in _texts(at)
    assert not at.exception  # a link to a page that is not registered would raise here
    links = at.get("page_link")
    assert [e.proto.label for e in links] == ["Results", "Score", "Monitor"]
    assert all(e.proto.page_script_hash for e in links)  # each resolved to a registered page


def test_results_page_tables_equal_results_json(full_ws: Workspace) -> None:
    at = _app(full_ws, "results")
    scorer = at.selectbox[1].value
    res = load_results(full_ws.runs / "tiny-run" / "eval" / f"results.{scorer}.json")
    per_type = at.dataframe[0].value.set_index("machine_type")
    for mtype, v in res["per_type"].items():
        assert per_type.loc[mtype, "AUC"] == pytest.approx(v["auc"])
        assert per_type.loc[mtype, "pAUC"] == pytest.approx(v["pauc"])
    assert per_type.loc["Average", "AUC"] == pytest.approx(res["average"]["auc"])
    per_id = at.dataframe[1].value
    for r in res["per_id"]:
        row = per_id[(per_id.machine_type == r["machine_type"]) & (per_id.machine_id == r["machine_id"])].iloc[0]
        assert row["AUC"] == pytest.approx(r["auc"]) and row["pAUC"] == pytest.approx(r["pauc"])


def test_score_page_shows_the_detectors_numbers(full_ws: Workspace, tiny_dcase: Path) -> None:
    folder = tiny_dcase / "dev_data" / "valve" / "test"
    at = _app(full_ws, "score")
    at.radio[0].set_value("a folder on this machine")
    at.run()
    at.text_input(key="score_folder").set_value(str(folder))
    at.run()
    next(b for b in at.button if b.label == "Score").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    det = detector.Detector.load(full_ws.runs / "tiny-run")
    expected = {Path(r["path"]).name: r for r in det.score_paths([folder])}
    assert len(table) == len(expected) == 16  # 2 IDs x (4 normal + 4 anomalous)
    for _, row in table.iterrows():
        ref = expected[row["file"]]
        assert row["decision"] == ref["decision"] and row["machine_id"] == ref["machine_id"]
    assert_close_on_scale([float(s) for s in table["score"]], [expected[f]["score"] for f in table["file"]])
    probs = at.dataframe[1].value
    assert set(probs.columns) - {"file"} == {f"{t}/{i}" for t, i in det.classes}


def test_score_page_rejects_bad_upload(tmp_path: Path) -> None:
    from rcmae.workbench.launch import save_uploads

    saved, problems = save_uploads([("a.wav", b"x" * 2048), ("notes.txt", b"hi"), ("big.wav", b"0" * 3 * 2**20)],
                                   tmp_path, max_mb=2)
    assert [p.name for p in saved] == ["a.wav"]
    assert [(n, "limit" in why or "not a .wav" in why) for n, why in problems] == [("notes.txt", True),
                                                                                   ("big.wav", True)]
    # The saved-but-broken wav is reported by the Detector row's error, not a crash (checked in test_score).
    assert os.path.getsize(saved[0]) == 2048


def test_workbench_helpers(full_ws: Workspace, tmp_path: Path, monkeypatch) -> None:
    from rcmae import workbench
    from rcmae.files import write_json

    assert workbench.parse_overrides("pretrain.lr=1e-3  # faster\n\nfinetune.epochs=2 seed=3") == [
        "pretrain.lr=1e-3", "finetune.epochs=2", "seed=3"]
    with pytest.raises(ValueError, match="overrides: 'lr' is not key=value"):
        workbench.parse_overrides("lr")
    run = full_ws.runs / "tiny-run"
    argv = workbench.job_argv("pretrain", data="d", out=run, preset="tiny", overrides=["seed=1"], epochs=3)
    assert argv == ["pretrain", "--data", str(Path("d").resolve()), "--out", str(run.resolve()), "--preset", "tiny",
                    "--aug", "specaugment", "--epochs", "3", "--set=seed=1"]
    # Every argv the page can build parses with the real rcmae parser, flags and all.
    from rcmae.cli import build_parser

    for kind in workbench.JOB_KINDS:
        built = workbench.job_argv(kind, data="d", run=run, out=tmp_path / "o", overrides=["seed=1"], epochs=2,
                                   aug=str(tmp_path / "bank"), backend="audioldm", per_clip=2, systems="ae")
        ns = build_parser().parse_args(built)
        assert ns.command == kind
    assert build_parser().parse_args(workbench.job_argv("augment", data="d", out="b", per_clip=2)).per_clip == 2
    with pytest.raises(ValueError, match="finetune: choose a run first"):
        workbench.job_argv("finetune")
    assert workbench.progress_fraction({"step": 3, "steps": 12, "state": "running"}) == 0.25
    assert workbench.progress_fraction({"epoch": 1, "epochs": 4, "steps": 0}) == 0.25
    assert workbench.progress_fraction(None) == 0.0
    # score_table equals eval/scores.csv column by column.
    import pandas as pd

    raw = pd.read_csv(run / "eval" / "scores.csv", dtype={"machine_id": str})
    for scorer in workbench.eval_results(run):
        t = workbench.score_table(run, scorer)
        np.testing.assert_allclose(t["score"], raw[f"score_{scorer}"])
        assert t["label"].tolist() == raw["label"].tolist()
    assert list(workbench.embedding_files(run)) == ["pretrain", "finetune"]
    bench = tmp_path / "bench"
    stat = lambda v: {"mean": v, "std": 0.0, "n": 1}  # noqa: E731
    write_json(bench / "benchmark.json", {"rows": [
        {"row": "ae", "status": "ok", "per_type": {"fan": {"auc": stat(0.7), "pauc": stat(0.6)}},
         "average": {"auc": stat(0.7), "pauc": stat(0.6)}},
        {"row": "knn", "status": "failed", "error": "boom"}]})
    rows, _ = workbench.benchmark_results(bench)
    assert rows == [{"system": "ae", "per_type": {"fan": {"auc": 0.7, "pauc": 0.6}},
                     "average": {"auc": 0.7, "pauc": 0.6}}]
    monkeypatch.setenv("RCMAE_DEMO_TRAIN_PER_ID", "0")
    with pytest.raises(ValueError, match=r"\$RCMAE_DEMO_TRAIN_PER_ID=0: must be at least 1"):
        workbench.demo_counts()


def test_prompts_page_generates_with_the_template_and_says_so(tmp_path: Path, monkeypatch) -> None:
    from rcmae.augment.prompts import template_prompts

    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    ws = Workspace(tmp_path / "ws")
    at = _app(ws, "prompts")
    at.number_input[0].set_value(3)
    next(b for b in at.button if b.label == "Generate").click()
    at.run()
    assert "Generated by **template**" in _texts(at)
    new, source = at.session_state["generated"]
    library = yaml.safe_load(ws.prompts.read_text())
    # Independent reference: the template generator with the same seed, avoiding the same six texts.
    paper = [p["text"] for p in library["prompts"]]
    assert (new, source) == (template_prompts(3, seed=0, existing=paper), "template")
    next(b for b in at.button if b.label == "Add the ticked prompts").click()
    at.run()
    library = yaml.safe_load(ws.prompts.read_text())
    assert [p["text"] for p in library["prompts"][6:]] == new
    assert all(p["tags"] == ["generated", "template"] for p in library["prompts"][6:])


def test_jobs_page_cancel_and_resume(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws").ensure()
    store = jobs.JobStore(ws.jobs_db)
    broken = jobs.launch(store, ["pretrain", "--data", str(tmp_path / "d"), "--out", str(ws.runs / "r")])
    store.update(broken.id, state="failed", returncode=1, ended=time.time())
    sleeper = jobs.launch(store, ["-c", "import time; print('zz', flush=True); time.sleep(60)"], raw_python=True,
                          name="sleeper")
    jobs.start_ready(store)
    assert store.get(sleeper.id).state == "running"
    at = _app(ws, "jobs")
    job_box = next(s for s in at.selectbox if s.label == "Job")
    job_box.set_value(broken.id)
    at.run()
    next(b for b in at.button if b.label == "Resume").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    resumed = store.list()[-1]
    assert resumed.argv == (*broken.argv, "--resume") and resumed.state == "queued"  # the CPU slot is taken
    jobs.cancel(store, resumed.id)
    next(s for s in at.selectbox if s.label == "Job").set_value(sleeper.id)
    at.run()
    next(b for b in at.button if b.label == "Cancel").click()
    at.run()
    end = store.get(sleeper.id)
    assert end.state == "cancelled" and not processes.process_group_alive(end.pid)


def test_audition_audioldm_with_local_weights(full_ws: Workspace, tmp_path: Path) -> None:
    import torch

    from rcmae.augment.audioldm import AudioLDMAugmenter
    from rcmae.augment.audioldm_testing import build_tiny_pipeline

    weights = build_tiny_pipeline(tmp_path / "tiny-audioldm")  # random 1-layer parts: fast, not a real model
    settings = full_ws.settings.read_text()
    full_ws.settings.write_text(settings + f"  - {tmp_path}\n")  # the weights folder is an allowed root
    at = _app(full_ws, "audition")
    at.radio[0].set_value("audioldm")
    at.run()
    next(n for n in at.number_input if n.label == "Steps").set_value(4)
    next(t for t in at.text_input if t.label.startswith("AudioLDM weights")).set_value(str(weights))
    at.run()
    next(b for b in at.button if b.label == "Augment").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (res,) = at.session_state["audition"]
    assert (res["backend"], res["steps"], res["t0"], res["guidance"]) == ("audioldm", 4, 0.5, 2.5)
    # Independent reference: the augmenter called directly with the same seed and settings.
    aug = AudioLDMAugmenter.from_pretrained(weights, device="cpu")
    wave = load_audio(res["source"])
    expected = aug(wave, res["prompt"], num_inference_steps=4, guidance_scale=2.5, t0=0.5,
                   generator=torch.Generator().manual_seed(0))
    expected = expected * min(1.0, 0.999 / np.max(np.abs(expected)))
    np.testing.assert_allclose(res["augmented"].wave, expected, rtol=1e-4, atol=1e-5)
    assert len(at.get("audio")) == 2


# ---------------------------------------------------------------- DCASE 2021+ results (domains, official score)
SHORT23 = [*TINY, "pretrain.crop_frames=null", "pretrain.crops_per_clip=1", "data.duration=1.0", "model.n_frames=32",
           "pretrain.specaugment.time_width=8"]


@pytest.fixture(scope="module")
def ws2023(tiny_dcase2023: Path, tmp_path_factory) -> Workspace:
    """A workspace with one evaluated run on the 2023-style set (sections, source/target domains)."""
    ws = Workspace(tmp_path_factory.mktemp("ws_2023")).ensure()
    run = ws.runs / "run23"
    train.pretrain(tiny_dcase2023, run, epochs=1, overrides=SHORT23, progress=False)
    train.finetune(run, epochs=1, progress=False)
    score.evaluate_run(run, progress=False)
    return ws


def test_results_page_shows_the_dcase2023_protocol(ws2023: Workspace) -> None:
    from rcmae import views as viz
    from rcmae import workbench

    at = _app(ws2023, "results")
    scorer = at.selectbox[1].value
    res = load_results(ws2023.runs / "run23" / "eval" / f"results.{scorer}.json")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Official score"] == f"{res['official']['score']:.3f}"
    assert metrics["AUC target (hmean)"] == f"{res['official']['hmean_target']:.3f}"
    sections = at.dataframe[0].value
    for r in res["per_section"]:
        row = sections[(sections.machine_type == r["machine_type"]) & (sections.section == r["section"])].iloc[0]
        for col, key in (("AUC (source)", "auc_source"), ("AUC (target)", "auc_target"), ("pAUC", "pauc"),
                         ("precision (target)", "precision_target"), ("F1 (source)", "f1_source")):
            assert row[col] == pytest.approx(r[key]), col
    official = at.dataframe[1].value.set_index("metric")["value"]
    assert official.iloc[0] == pytest.approx(res["official"]["score"])
    assert official.filter(like="2021 definition").iloc[0] == pytest.approx(res["dcase2021"]["score"])
    # ROC and histogram split by domain (default on): the plotted source/target curves are the official AUCs.
    assert at.toggle[0].value is True
    titles = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("ROC per domain" in t for t in titles) and any("scores by domain" in t for t in titles)
    scores = workbench.score_table(ws2023.runs / "run23", scorer)
    first = res["per_section"][0]
    sub = scores[(scores.machine_type == first["machine_type"]) & (scores.machine_id == first["section"])]
    curves = viz.domain_roc_points(sub)
    for domain in ("source", "target"):
        fpr, tpr = curves[domain]
        assert float(np.trapezoid(tpr, fpr)) == pytest.approx(first[f"auc_{domain}"])
    # Embeddings coloured by domain: one legend group per domain.
    at.radio[2].set_value("domain").run()
    assert not at.exception
    groups = {t.get("legendgroup") for c in at.get("plotly_chart") for t in json.loads(c.proto.spec).get("data", [])
              if "legendgroup" in t}
    assert {"source", "target"} <= groups


def test_monitor_page_scores_a_recording_and_exports_and_demos(full_ws: Workspace, tiny_dcase: Path) -> None:
    import soundfile as sf

    from rcmae.deploy import monitor

    test = tiny_dcase / "dev_data" / "fan" / "test"
    parts = [sf.read(test / f"{k}_id_00_0000000{n}.wav", dtype="float32")[0]
             for k, n in (("normal", 0), ("anomaly", 1), ("normal", 2))]
    rec = full_ws.data / "line.wav"
    sf.write(rec, np.concatenate(parts), 16000, subtype="PCM_16")
    at = _app(full_ws, "monitor")
    at.text_input(key="monitor_path").set_value("data/line.wav")
    at.run()
    next(s for s in at.selectbox if s.label == "Machine").set_value("fan/00")
    next(n for n in at.number_input if n.label == "Hop (s)").set_value(2.0)
    at.run()
    next(b for b in at.button if b.label == "Monitor").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    ref = monitor.monitor_recording(monitor.open_scorer(run=full_ws.runs / "tiny-run"), rec, "fan", "00", hop=2.0,
                                    progress=False)
    assert f"{len(ref.series)} windows" in _texts(at)
    y = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]["y"]
    if isinstance(y, dict):  # plotly's typed-array encoding
        y = np.frombuffer(base64.b64decode(y["bdata"]), dtype=y["dtype"])
    np.testing.assert_allclose(y, ref.series["score"], rtol=1e-6)
    assert (full_ws.root / "monitor" / "line" / "line.scores.csv").is_file()
    # The segment player starts at the highest score: one window around it.
    listen = next(n for n in at.number_input if n.label.startswith("Listen around"))
    assert listen.value == pytest.approx(ref.series.loc[ref.series["score"].idxmax(), "center_s"])
    assert len(at.get("audio")) == 1
    # Export (a background job), then the Demo button starts the bundle's Gradio app as a job with its link.
    next(b for b in at.button if b.label == "Export").click()
    at.run()
    store = jobs.JobStore(full_ws.jobs_db)
    job = next(j for j in store.list() if j.kind == "export")
    assert _wait_job(store, job.id).state == "done", jobs.tail_log(store.get(job.id))
    assert "--format graph" in " ".join(job.argv)  # the default format: data, no trust needed
    at = _app(full_ws, "monitor")
    assert not [c for c in at.checkbox if c.key.startswith("demo_trust_")]
    next(b for b in at.button if b.label == "Demo").click()
    at.run()
    demo = next(j for j in store.list() if j.kind == "demo-app")
    port = demo.argv[list(demo.argv).index("--port") + 1]
    assert f"http://127.0.0.1:{port}/" in _texts(at) and "--trust" not in demo.argv
    assert demo.state in ("running", "queued")
    jobs.cancel(store, demo.id)  # one demo at a time: the next export must not wait behind it
    # A TorchScript bundle is code: its demo starts only once the user says they trust it.
    at.radio(key="export_format").set_value("torchscript").run()
    next(b for b in at.button if b.label == "Export").click()
    at.run()
    ts_job = max((j for j in store.list() if j.kind == "export"), key=lambda j: j.id)
    assert ts_job.id != job.id and "--format torchscript" in " ".join(ts_job.argv)
    assert _wait_job(store, ts_job.id).state == "done", jobs.tail_log(store.get(ts_job.id))
    at = _app(full_ws, "monitor")
    at.selectbox(key="demo_bundle").set_value(Path(ts_job.argv[list(ts_job.argv).index("--out") + 1])).run()
    assert next(b for b in at.button if b.label == "Demo").disabled
    next(c for c in at.checkbox if c.key.startswith("demo_trust_")).check()
    at.run()
    next(b for b in at.button if b.label == "Demo").click()
    at.run()
    demo_ts = max((j for j in store.list() if j.kind == "demo-app"), key=lambda j: j.id)
    assert demo_ts.id != demo.id and "--trust" in demo_ts.argv
    jobs.cancel(store, demo_ts.id)
    jobs.cancel(store, demo.id)


@pytest.mark.filterwarnings("error::DeprecationWarning")
def test_score_table_blanks_missing_domains_and_attributes(tmp_path):
    # A 2023-style eval set scored without attributes (bare names): pandas reads the all-empty column as float
    # NaN; the table must give empty strings (no NaN, no "nan"), and keep the values that are there.
    from rcmae import workbench

    eval_dir = tmp_path / "run" / "eval"
    eval_dir.mkdir(parents=True)
    pd.DataFrame({"path": ["a.wav", "b.wav"], "machine_type": ["fan", "fan"], "machine_id": ["00", "00"],
                  "label": ["unknown", "unknown"], "domain": ["source", None], "attributes": [None, None],
                  "score_knn": [0.5, 1.5]}).to_csv(eval_dir / "scores.csv", index=False)
    table = workbench.score_table(tmp_path / "run", "knn")
    assert table["domain"].tolist() == ["source", ""]
    assert table["attributes"].tolist() == ["", ""]
    assert table["score"].tolist() == [0.5, 1.5]
