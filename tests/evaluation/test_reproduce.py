"""``rcmae reproduce``: offline refusal, MD5-checked resumable downloads from a local HTTP server, the dry-run
plan and estimate, and the whole chain on a tiny data set with the tiny presets and the tiny AudioLDM pipeline."""

from __future__ import annotations

import hashlib
import io
import json
import math
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import soundfile as sf
from conftest import SHORT_OVERRIDES, write_tiny_dcase

from rcmae import cli
from rcmae.augment.bank import read_manifest
from rcmae.evaluation import reproduce
from rcmae.evaluation.reproduce.fetch import Archive, ChecksumError, OfflineError

QUICK = [*SHORT_OVERRIDES, "pretrain.epochs=1", "finetune.epochs=1"]


# ---------------------------------------------------------------- a local archive server
def _tiny_zip() -> bytes:
    """An archive shaped like dev_data_fan.zip: fan/train and fan/test clips."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in ("fan/train/normal_id_00_00000000.wav", "fan/train/normal_id_02_00000000.wav",
                     "fan/test/normal_id_00_00000000.wav", "fan/test/anomaly_id_00_00000000.wav"):
            wav = io.BytesIO()
            sf.write(wav, np.zeros(1600, np.float32), 16000, format="WAV", subtype="PCM_16")
            zf.writestr(name, wav.getvalue())
    return buf.getvalue()


class _Server:
    def __init__(self, payload: bytes, ranges: bool = True) -> None:
        self.payload, self.ranges, self.requests = payload, ranges, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                self.send_response(200)
                self.end_headers()

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                body, status = server.payload, 200
                rng = self.headers.get("Range")
                if rng and server.ranges:
                    start = int(rng.split("=")[1].split("-")[0])
                    body, status = server.payload[start:], 206
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = _Server(_tiny_zip())
    yield srv
    srv.close()


def _archive(payload: bytes, md5: str | None = None) -> Archive:
    return Archive("3678171", "dev_data_fan.zip", md5 or hashlib.md5(payload).hexdigest(), "dev_data")


def test_offline_refusal_is_one_clear_line(tmp_path, capsys):
    with pytest.raises(OfflineError, match="looks offline.*pass --data ROOT"):
        reproduce.check_online("http://127.0.0.1:9", timeout=2)
    assert cli.main(["reproduce", "--out", str(tmp_path / "r"), "--mirror", "http://127.0.0.1:9", "--gpus", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rcmae reproduce: error: data: cannot reach http://127.0.0.1:9") and "\n" not in err
    assert not (tmp_path / "r" / "data" / "dcase2020" / "dev_data").exists()


def test_fetch_checks_md5_and_lays_out_the_data(server, tmp_path):
    archive = _archive(server.payload)
    root = reproduce.fetch_dcase2020(tmp_path / "d", base=server.url, archives=[archive], log=lambda m: None)
    assert server.requests == [("/records/3678171/files/dev_data_fan.zip?download=1", None)]
    assert sorted(p.name for p in (root / "dev_data" / "fan" / "train").iterdir()) == [
        "normal_id_00_00000000.wav", "normal_id_02_00000000.wav"]
    layout = reproduce.check_layout(root)
    assert layout["classes"] == [["fan", "00"], ["fan", "02"]] and layout["test_clips"] == 2
    # A second run finds the archive unpacked and fetches nothing.
    reproduce.fetch_dcase2020(root, base=server.url, archives=[archive], log=lambda m: None)
    assert len(server.requests) == 1


def test_unpacking_replaces_only_unpacked_clips(server, tmp_path):
    from rcmae.evaluation.reproduce.fetch import ReproduceError, unpack

    zipped = tmp_path / "a.zip"
    zipped.write_bytes(server.payload)
    root = tmp_path / "d"
    unpack(zipped, root, "dev_data")
    unpack(zipped, root, "dev_data")  # an earlier unpack of clips: replaced
    assert len(list((root / "dev_data" / "fan" / "train").iterdir())) == 2
    notes = root / "dev_data" / "fan" / "train" / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(ReproduceError, match="holds more than unpacked .wav clips"):
        unpack(zipped, root, "dev_data")
    assert notes.read_text() == "mine"


def test_an_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    payload = server.payload
    dest = tmp_path / "a" / "dev_data_fan.zip"
    dest.parent.mkdir()
    half = len(payload) // 2
    (tmp_path / "a" / "dev_data_fan.zip.part").write_bytes(payload[:half])
    url = f"{server.url}/x.zip"
    reproduce.download(url, dest, hashlib.md5(payload).hexdigest())
    assert server.requests == [("/x.zip", f"bytes={half}-")]
    assert dest.read_bytes() == payload and not (tmp_path / "a" / "dev_data_fan.zip.part").exists()
    # A server that ignores Range sends the whole file: the download starts over instead of appending.
    server.ranges = False
    dest.unlink()
    (tmp_path / "a" / "dev_data_fan.zip.part").write_bytes(payload[:half])
    reproduce.download(url, dest, hashlib.md5(payload).hexdigest())
    assert dest.read_bytes() == payload


def test_a_checksum_mismatch_deletes_the_download(server, tmp_path):
    bad = _archive(server.payload, md5="0" * 32)
    with pytest.raises(ChecksumError, match="dev_data_fan.zip: MD5 .* differs from the published 0{32}"):
        reproduce.fetch_dcase2020(tmp_path / "d", base=server.url, archives=[bad], log=lambda m: None)
    assert not list((tmp_path / "d" / "archives").iterdir())
    assert not (tmp_path / "d" / "dev_data").exists()


def test_the_archive_list_is_the_41_class_set():
    names = {a.name for a in reproduce.ARCHIVES}
    assert len(names) == 12 and all(len(a.md5) == 32 for a in reproduce.ARCHIVES)
    for mtype in reproduce.MACHINE_TYPES:
        assert {f"dev_data_{mtype}.zip", f"eval_data_train_{mtype}.zip"} <= names


def test_dry_run_prints_every_step_and_the_estimate(tmp_path, capsys):
    data = write_tiny_dcase(tmp_path / "data", seconds=1.0, seed=4)
    times = tmp_path / "times.json"
    times.write_text(json.dumps({"pretrain_step_s": 0.5, "finetune_step_s": 0.25, "source": "a test file",
                                 "audioldm_s_per_clip": {"10": 2.0, "50": 6.0}}))
    argv = ["reproduce", "--out", str(tmp_path / "r"), "--data", str(data), "--preset", "tiny", "--gpus", "2",
            "--per-clip", "3", "--dry-run", "--step-times", str(times)]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    for step in ("data", "view", "bank 0/2", "bank 1/2", "pretrain rcmae", "finetune rcmae", "evaluate rcmae",
                 "pretrain rcmae-nodda", "finetune rcmae-nodda", "evaluate rcmae-nodda", "report"):
        assert f". {step}:" in text
    assert "--shard 1/2 --device cuda:1" in text
    assert "56 clips" in text and "24 training, 32 labelled test; 4 machine-ID classes" in text
    assert "step times: a test file" in text
    # By hand: tiny = 60 + 20 epochs, batch 32, 4 crops per clip; 2 GPUs; 56 clips pretrain, 24 fine-tune.
    pre = 60 * math.ceil(56 * 4 / (32 * 2)) * 0.5 / 3600
    ft = 20 * math.ceil(24 / (32 * 2)) * 0.25 / 3600
    bank = 56 * 3 * 4.0 / 2 / 3600  # S uniform in 10..50: mean 30 -> 4.0 s per clip
    est = reproduce.estimate(reproduce.Options(out=tmp_path, preset="tiny", gpus=2, per_clip=3),
                             {"pretrain": 56, "finetune": 24, "test": 32}, json.loads(times.read_text()))
    assert est["wall_hours"]["pretrain rcmae"] == pytest.approx(pre)
    assert est["wall_hours"]["finetune rcmae-nodda"] == pytest.approx(ft)
    assert est["wall_hours"]["bank"] == pytest.approx(bank)
    assert est["total_gpu_hours"] == pytest.approx(2 * (bank + 2 * pre + 2 * ft))
    assert f"{est['total_wall_hours']:.2f} h wall on 2 GPU(s)" in text
    assert not (tmp_path / "r" / "runs").exists()  # a dry run runs nothing


def test_dry_run_measures_step_times_when_no_file_is_given(tmp_path, capsys):
    data = write_tiny_dcase(tmp_path / "data", seconds=1.0, seed=4)
    argv = ["reproduce", "--out", str(tmp_path / "r"), "--data", str(data), "--preset", "tiny", "--gpus", "0",
            "--dry-run", "--measure", "--arms", "rcmae-nodda"]
    for item in QUICK:
        argv += ["--set", item]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "step times: measured now on cpu" in text and "scaled linearly" in text
    assert "CPU hours" in text and "bank" not in text.split("step times")[0].split("view")[1]


def test_tiny_end_to_end_reproduction(tmp_path):
    from rcmae.augment.audioldm_testing import build_tiny_pipeline

    data = write_tiny_dcase(tmp_path / "data", seconds=1.0, seed=6)
    model = build_tiny_pipeline(tmp_path / "tiny-audioldm")
    out = tmp_path / "repro"
    argv = ["reproduce", "--out", str(out), "--data", str(data), "--preset", "tiny", "--gpus", "0",
            "--aug-model", str(model), "--per-clip", "2", "--aug-steps", "2:3"]
    for item in QUICK:
        argv += ["--set", item]
    assert cli.main(argv) == 0
    # Pretraining saw all audios (24 train + 32 test clips), paired with AudioLDM copies in the with-DDA arm.
    table = read_manifest(out / "bank-audioldm")
    assert len(table) == 56 * 2 and set(table["backend"]) == {"audioldm"} and table["seed"].nunique() == 112
    runs = {arm: json.loads((out / "runs" / arm / "run.json").read_text()) for arm in reproduce.ARMS}
    assert runs["rcmae"]["n_train"] == 56 and runs["rcmae-nodda"]["n_train"] == 56
    assert runs["rcmae"]["aug"] == str((out / "bank-audioldm").resolve())
    assert runs["rcmae-nodda"]["aug"] == "specaugment"
    assert all(len(r["classes"]) == 4 and "finetune" in r["stages"] for r in runs.values())
    # The report: the paper's published values verbatim, ours equal to each run's results.json.
    report = json.loads((out / "report.json").read_text())
    assert report["table3"]["Average"]["paper_with_dda"] == 87.93
    assert report["table3"]["ToyConveyor"]["paper_without_dda"] == 65.38
    assert report["table4"]["paper"]["RC-MAE (paper)"]["Average"] == {"auc": 94.39, "pauc": 87.93}
    for arm, key in (("rcmae", "ours_with_dda"), ("rcmae-nodda", "ours_without_dda")):
        res = json.loads((out / "runs" / arm / "eval" / "results.json").read_text())
        assert report["table3"]["fan"][key] == pytest.approx(100 * res["per_type"]["fan"]["pauc"])
        assert report["table4"]["ours"][arm]["Average"]["auc"] == pytest.approx(100 * res["average"]["auc"])
        assert report["table3"]["pump"][key] is None  # not in the tiny data
    md = (out / "report.md").read_text()
    assert "| Average | 86.99 | 87.93 |" in md and "| STgram-MFN | 99.64 | 98.44 |" in md
    # Figures 3(a), 3(b) and 4 of both arms, drawn by the figures step and shown in the report.
    for arm in reproduce.ARMS:
        for stem in ("tsne_pretrain_normal", "tsne_pretrain", "tsne_finetune"):
            assert (out / "figures" / arm / f"{stem}.png").is_file()
            assert f"](figures/{arm}/{stem}.png)" in md
    assert report["figures"]["rcmae"]["tsne_pretrain_normal"] == "figures/rcmae/tsne_pretrain_normal.png"
    # The paper's oddities are marked where they stand: AE Baseline's ToyConveyor pAUC repeats its ToyCar pAUC.
    assert "| AE Baseline | 66.28 | 50.98 |" in md and "78.77 | 67.58 | 72.53 | 67.58 † |" in md
    assert "AE Baseline, Average pAUC: the published Average 65.85 is not the mean of the six per-type values " \
           "(60.85)" in md
    # Every pretraining clip had its AudioLDM copies: no SpecAugment fallback, and run.json says so.
    assert runs["rcmae"]["bank_coverage"] == {"clips": 56, "with_copies": 56, "specaugment_fallback": 0,
                                              "missing": []}
    # Run again: every step is done, nothing is recomputed.
    stamp = (out / "runs/rcmae/eval/results.json").stat().st_mtime_ns
    assert cli.main(argv) == 0
    assert (out / "runs/rcmae/eval/results.json").stat().st_mtime_ns == stamp


def test_a_partial_bank_is_counted_warned_recorded_and_refused_by_reproduce(tmp_path, capsys):
    from rcmae.evaluation.reproduce.steps import check_bank_covers
    from rcmae.training import stages

    data = write_tiny_dcase(tmp_path / "data", seconds=1.0, seed=8)
    bank = tmp_path / "bank"
    assert cli.main(["augment", "--data", str(data), "--out", str(bank), "--per-clip", "1"]) == 0
    table = read_manifest(bank)
    gone = sorted(table["output"])[:3]
    for out in gone:  # three clips lose their only copy
        (bank / out).unlink()
    n = len(table)
    with pytest.raises(reproduce.ReproduceError, match=rf"3 of {n} pretraining clips have no AudioLDM copy"):
        check_bank_covers(data, bank)
    run = stages.pretrain(data, tmp_path / "run", preset="tiny", aug=str(bank), overrides=QUICK, progress=False)
    err = capsys.readouterr().err
    assert f"warning: 3 of {n} training clips have no copy in the bank" in err and "SpecAugment twins" in err
    cover = json.loads((run / "run.json").read_text())["bank_coverage"]
    sources = {out: src for out, src in zip(table["output"], table["source"], strict=True)}
    assert cover["clips"] == n and cover["with_copies"] == n - 3 and cover["specaugment_fallback"] == 3
    assert sorted(cover["missing"]) == sorted(sources[o] for o in gone)


def test_the_papers_tables_agree_where_they_overlap():
    # Table 3's "with DDA" column is Table 4's RC-MAE pAUC column: two independent transcriptions must agree.
    for mtype, (_, with_dda) in reproduce.PAPER_TABLE3.items():
        assert reproduce.PAPER_TABLE4["RC-MAE (paper)"][mtype][1] == with_dda
    # The paper's RC-MAE averages are the means of its six per-type values (to the paper's rounding).
    ours = reproduce.PAPER_TABLE4["RC-MAE (paper)"]
    for k in (0, 1):
        assert np.mean([ours[t][k] for t in reproduce.PAPER_ORDER]) == pytest.approx(ours["Average"][k], abs=0.01)
    assert set(reproduce.PAPER_TABLE3) == {*reproduce.PAPER_ORDER, "Average"}
