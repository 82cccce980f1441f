"""Pretraining, fine-tuning and the run folder: files, metrics, resume exactness, divergence, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_tiny_dcase
from lightning.pytorch.callbacks import Callback
from sklearn.metrics import roc_auc_score

from rcmae import cli
from rcmae.data.index import DatasetLayoutError, id_classes, index_dataset
from rcmae.evaluation.evaluate import evaluate_run
from rcmae.models import losses
from rcmae.run import folder as run_folder
from rcmae.run import trainset
from rcmae.run.config import load_config
from rcmae.scorers.detector import Detector
from rcmae.training import loop, modules, pairs
from rcmae.training import stages as train

# A 1-block, 32-wide model: seconds per stage on one CPU thread.
TINY = [
    "model.embed_dim=32", "model.depth=1", "model.heads=2", "model.decoder_embed_dim=32", "model.decoder_depth=1",
    "model.decoder_heads=2", "model.proj_dim=32", "model.mlp_ratio=2.0", "pretrain.batch_size=8",
    "finetune.batch_size=8", "score.recon_masks=2", "pretrain.crop_frames=null", "pretrain.crops_per_clip=1",
    "model.n_frames=320",
]
# One-second clips (32 frames) for the tests that only need a data set, not realistic clips.
SHORT = TINY + ["data.duration=1.0", "model.n_frames=32", "pretrain.specaugment.time_width=8"]


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def trained(tiny_dcase, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    train.pretrain(tiny_dcase, run, epochs=2, overrides=TINY, progress=False)
    train.finetune(run, epochs=2, progress=False)
    results = evaluate_run(run, progress=False)
    return run, results


@pytest.fixture(scope="module")
def short_data(tmp_path_factory):
    return write_tiny_dcase(tmp_path_factory.mktemp("short"), seconds=1.0, seed=3)


def test_run_folder_is_complete(trained, tiny_dcase):
    run, _ = trained
    for name in ["config.yaml", "run.json", "stats.json", "metrics.csv", "progress.json", "thresholds.json",
                 "embeddings/pretrain.npz", "embeddings/finetune.npz", "eval/results.json",
                 "eval/results.idprob.json", "eval/results.knn.json", "eval/results.recon.json", "eval/result.csv",
                 "eval/knn/result.csv", "eval/recon/anomaly_score_fan_id_00.csv"]:
        assert (run / name).is_file(), name
    for stage in ("pretrain", "finetune"):
        for which in ("last", "best"):
            assert run_folder.checkpoint_path(run, stage, which).is_file()
    assert load_config(run / "config.yaml") == load_config("tiny", TINY + ["pretrain.epochs=2", "finetune.epochs=2"])
    info = json.loads((run / "run.json").read_text())
    assert [tuple(c) for c in info["classes"]] == id_classes(index_dataset(tiny_dcase))
    assert info["seed"] == 0 and info["versions"]["torch"] == torch.__version__
    assert info["n_train"] == 24 and info["skipped"] == []
    assert info["stages"]["pretrain"]["precision"] == "32-true"
    progress = json.loads((run / "progress.json").read_text())
    # The run was evaluated last: progress.json says so, and keeps the fine-tuning stage's steps.
    assert progress["state"] == "done" and progress["stage"] == "evaluate"
    assert progress["eval_step"] == progress["eval_steps"] == len(json.loads((run / "run.json").read_text())
                                                                   ["evaluated"]["scorers"])
    assert progress["step"] == progress["steps"] == 2 * 3  # 24 clips / batch 8 = 3 steps per epoch
    emb = np.load(run / "embeddings" / "finetune.npz")
    assert emb["z"].shape == (24 + 32, 32)
    assert sorted(set(emb["split"])) == ["test", "train"]
    assert set(emb["label"][emb["split"] == "test"]) == {"normal", "anomaly"}


def test_metrics_csv_records_every_step(trained):
    run, _ = trained
    m = pd.read_csv(run / "metrics.csv")
    for stage in ("pretrain", "finetune"):
        steps = m[(m["stage"] == stage) & (m["kind"] == "step")]
        epochs = m[(m["stage"] == stage) & (m["kind"] == "epoch")]
        assert list(steps["step"]) == list(range(1, 7))
        assert len(epochs) == 2
        for _, row in epochs.iterrows():
            assert row["loss"] == pytest.approx(steps[steps["epoch"] == row["epoch"]]["loss"].mean())
    pre = m[(m["stage"] == "pretrain") & (m["kind"] == "step")]
    # The total is the paper's weighted sum of its parts.
    assert np.allclose(pre["loss"], 0.3 * pre["info_nce"] + 0.3 * pre["vcr"] + 0.4 * pre["mae"], atol=1e-5)
    fin = m[(m["stage"] == "finetune") & (m["kind"] == "step")]
    assert np.allclose(fin["loss"], fin["supcon"] + fin["ce"], atol=1e-5)
    # The rate each step used: tiny's linear warm-up (1 epoch = 3 steps here), then cosine to zero.
    cfg = load_config(run / "config.yaml")
    f = loop.lr_lambda(3, 6, "cosine")
    assert np.allclose(fin["lr"], [cfg.finetune.lr * f(s - 1) for s in fin["step"]])
    assert np.allclose(fin["lr"] / cfg.finetune.lr, [1 / 3, 2 / 3, 1, 1, 0.75, 0.25])


def test_results_aucs_match_sklearn_on_csv_scores(trained):
    run, results = trained
    for scorer, res in results.items():
        assert json.loads((run / "eval" / f"results.{scorer}.json").read_text()) == res
        for row in res["per_id"]:
            name = f"anomaly_score_{row['machine_type']}_id_{row['machine_id']}.csv"
            csv = pd.read_csv(run / "eval" / scorer / name, header=None, names=["file", "score"])
            y = csv["file"].str.startswith("anomaly").astype(int)
            assert row["auc"] == pytest.approx(roc_auc_score(y, csv["score"]))
            assert row["pauc"] == pytest.approx(roc_auc_score(y, csv["score"], max_fpr=0.1))
    default = json.loads((run / "eval" / "results.json").read_text())
    assert default == results["ensemble"]  # the tiny preset's default scorer


class _Crash(Callback):
    """Simulates a crash at the start of an epoch (after the previous epoch's checkpoint was written)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


def test_resume_matches_uninterrupted_run(short_data, tmp_path):
    ov = SHORT + ["pretrain.epochs=4", "finetune.epochs=2"]
    full = train.pretrain(short_data, tmp_path / "full", overrides=ov, progress=False, fit_scores=False)
    train.finetune(full, progress=False, fit_scores=False)

    cut = tmp_path / "cut"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train.pretrain(short_data, cut, overrides=ov, progress=False, callbacks=[_Crash(2)], fit_scores=False)
    assert json.loads((cut / "progress.json").read_text())["state"] == "failed"
    half = _weights(run_folder.checkpoint_path(cut, "pretrain"))
    assert any(not torch.equal(half[k], v) for k, v in _weights(run_folder.checkpoint_path(full, "pretrain")).items())
    train.pretrain(short_data, cut, overrides=ov, resume=True, progress=False, fit_scores=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train.finetune(cut, progress=False, callbacks=[_Crash(1)], fit_scores=False)
    train.finetune(cut, resume=True, progress=False, fit_scores=False)

    for stage in ("pretrain", "finetune"):
        a, b = _weights(run_folder.checkpoint_path(full, stage)), _weights(run_folder.checkpoint_path(cut, stage))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (stage, k)
    # The record of the resumed run holds each step once.
    m = pd.read_csv(cut / "metrics.csv")
    assert list(m[(m["stage"] == "pretrain") & (m["kind"] == "step")]["step"]) == list(range(1, 13))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(short_data, tmp_path, monkeypatch):
    real = losses.pretrain_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        parts = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 5:  # epoch 2, after epoch 1's checkpoint
            parts["loss"] = parts["loss"] * float("nan")
        return parts

    monkeypatch.setattr(modules, "pretrain_loss", poisoned)
    run = tmp_path / "nan"
    with pytest.raises(loop.TrainingDiverged) as err:
        train.pretrain(short_data, run, overrides=SHORT + ["pretrain.epochs=3"], progress=False)
    message = str(err.value)
    assert "non-finite loss at epoch 2" in message and "pretrain.lr" in message and "\n" not in message
    state = _weights(run_folder.checkpoint_path(run, "pretrain"))
    assert all(torch.isfinite(v).all() for v in state.values())
    ckpt = torch.load(run_folder.checkpoint_path(run, "pretrain"), map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["global_step"] == 3
    assert json.loads((run / "progress.json").read_text())["state"] == "failed"
    calls["n"] = 0
    code = cli.main(["pretrain", "--data", str(short_data), "--out", str(tmp_path / "nan2"), "--epochs", "3",
                     *sum((["--set", o] for o in SHORT), [])])
    assert code == 2


def test_bad_input_one_line(short_data, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        train.pretrain(tmp_path / "nowhere", tmp_path / "r0", overrides=SHORT, progress=False)
    assert cli.main(["pretrain", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r0")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"rcmae pretrain: error: {tmp_path / 'nowhere'}: data folder not found; "
                   "pass --data a DCASE-layout folder"]

    run = train.pretrain(short_data, tmp_path / "r1", overrides=SHORT + ["pretrain.epochs=1"], progress=False,
                         fit_scores=False)
    with pytest.raises(run_folder.RunFolderError, match="already holds a trained run; pass --resume"):
        train.pretrain(short_data, run, overrides=SHORT, progress=False)
    with pytest.raises(run_folder.RunFolderError, match=r"another preset \(model.embed_dim: checkpoint 32 vs now 64"):
        train.pretrain(short_data, run, preset="tiny", resume=True, progress=False,
                       overrides=["data.duration=1.0", "model.n_frames=32", "pretrain.crop_frames=null"])
    with pytest.raises(run_folder.RunFolderError, match="nothing to resume"):
        train.finetune(run, resume=True, progress=False)


def test_unloadable_clips_are_skipped_and_an_empty_id_is_an_error(tmp_path):
    data = write_tiny_dcase(tmp_path / "d", seconds=1.0, seed=1)
    bad = data / "dev_data" / "fan" / "train" / "normal_id_00_00000099.wav"
    bad.write_bytes(b"not a wav file")
    run = train.pretrain(data, tmp_path / "r", overrides=SHORT + ["pretrain.epochs=1"], progress=False,
                         fit_scores=False)
    info = json.loads((run / "run.json").read_text())
    assert info["n_train"] == 24 and [s[0] for s in info["skipped"]] == [str(bad)]
    for f in (data / "dev_data" / "valve" / "train").glob("normal_id_02_*.wav"):
        f.write_bytes(b"broken")
    with pytest.raises(DatasetLayoutError, match="no loadable training clips for valve id 02"):
        train.pretrain(data, tmp_path / "r2", overrides=SHORT, progress=False)


def test_single_machine_id_falls_back_to_knn(tmp_path, capsys):
    data = write_tiny_dcase(tmp_path / "d", seconds=1.0, seed=2)
    for folder in (data / "dev_data").glob("*/*"):
        for f in folder.glob("*id_02_*.wav"):
            f.unlink()
    for f in (data / "dev_data" / "valve").rglob("*.wav"):
        f.unlink()
    # The paper's default scorer (idprob) needs two machine IDs: the run falls back to knn.
    run = train.pretrain(data, tmp_path / "r", overrides=SHORT + ["pretrain.epochs=1", "score.default_scorer=idprob"],
                         progress=False)
    train.finetune(run, epochs=1, progress=False)
    out = capsys.readouterr().out
    assert "single machine ID (fan id 00)" in out and "falls back to knn" in out
    assert not run_folder.checkpoint_path(run, "finetune").exists()
    det = Detector.load(run)
    assert det.scorers == ["knn", "recon", "knn_joint", "maha", "recon_topk", "knn_norm", "stats_knn", "stats_maha",
                           "frame_pca", "frame_maha", "ensemble"]
    assert det.default_scorer == "knn"
    info = json.loads((run / "run.json").read_text())
    assert info["default_scorer"] == "knn" and "skipped" in info["stages"]["finetune"]
    assert any("using knn" in n for n in info["notes"])
    results = evaluate_run(run, progress=False)
    assert set(results) == {"knn", "recon", "knn_joint", "maha", "recon_topk", "knn_norm", "stats_knn", "stats_maha",
                            "frame_pca", "frame_maha", "ensemble"}
    assert json.loads((run / "eval" / "results.json").read_text())["system"] == "rcmae-knn"


def test_trainer_options_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("checks the CPU defaults; this machine has a GPU")
    assert loop.trainer_options() == {"accelerator": "cpu", "devices": 1, "num_nodes": 1, "precision": "32-true",
                                       "strategy": "auto"}
    opts = loop.trainer_options(devices="2", accelerator="cpu")
    assert opts["strategy"] == "ddp" and opts["devices"] == 2
    assert loop.trainer_options(num_nodes=2, accelerator="cpu")["strategy"] == "ddp"
    with pytest.raises(ValueError, match="no CUDA GPU is visible"):
        loop.trainer_options(accelerator="gpu")


def test_pretraining_step_equals_two_encoder_passes_drawn_in_order(short_data):
    # The step encodes clip and twin in one stacked pass. Reference: the paper's two passes, clip first
    # (its masks drawn first), then the decoder, then the twin, with the same generator stream.
    from rcmae.data.datasets import random_crops
    from rcmae.models.rcmae import RCMAE

    cfg = load_config("tiny", SHORT)
    data, _ = trainset.load_train_data(short_data, cfg, progress=False)
    torch.manual_seed(0)
    model = RCMAE(cfg.model)
    source = pairs.PairSource(specaugment=cfg.pretrain.specaugment)
    module = modules.PretrainModule(model, cfg, data.x, data.labels, 1, source)
    idx = torch.arange(6)
    step_loss = module.training_step((idx, data.labels[idx]), 3)

    gen = module._generator(3)
    x = data.x[idx]
    twin = source.twins(x, idx, gen)
    x, twin = random_crops([x, twin], cfg.pretrain.crop_frames, gen)
    ratio = model.sample_mask_ratio(gen)
    latent, mask, ids_restore = model.forward_encoder(x, ratio, gen)
    pred = model.forward_decoder(latent, ids_restore)
    latent_aug, mask_aug, _ = model.forward_encoder(twin, ratio, gen)
    assert not torch.equal(mask, mask_aug)  # the twin's masks are its own draw
    p = cfg.pretrain
    want = losses.pretrain_loss(model.project(latent, x), model.project(latent_aug, twin), pred, model.target(x),
                                mask, w_nce=p.w_nce, w_vcr=p.w_vcr, w_mae=p.w_mae, tau=p.tau)["loss"]
    torch.testing.assert_close(step_loss, want, rtol=1e-5, atol=1e-6)


def test_optimizer_is_fused_unless_gradients_are_clipped(short_data):
    from rcmae.models.rcmae import RCMAE

    data, _ = trainset.load_train_data(short_data, load_config("tiny", SHORT), progress=False)
    for clip, fused in ((None, True), (1.0, None)):
        cfg = load_config("tiny", [*SHORT, f"pretrain.grad_clip={clip if clip else 'null'}"])
        module = modules.PretrainModule(RCMAE(cfg.model), cfg, data.x, data.labels, 4, pairs.PairSource())
        opt = module.configure_optimizers()["optimizer"]
        assert type(opt) is torch.optim.AdamW and opt.defaults["fused"] is fused, clip


def test_lr_schedule_is_warmup_then_cosine():
    f = loop.lr_lambda(warmup_steps=4, total_steps=14, schedule="cosine")
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    for s in range(4, 14):
        assert f(s) == pytest.approx(0.5 * (1 + math.cos(math.pi * (s - 4) / 10)))
    assert loop.lr_lambda(0, 10, "constant")(7) == 1.0


def test_bank_twins_come_from_the_bank(short_data, tmp_path):
    from rcmae.augment.bank import build_bank
    from rcmae.data.datasets import make_generator
    from rcmae.data.features import LogMel
    from rcmae.training.pairs import PairSource

    bank = tmp_path / "bank"
    build_bank(short_data, bank, backend="procedural", per_clip=1, seed=0, limit=6, progress=False)
    cfg = load_config("tiny", SHORT)
    data, stats = trainset.load_train_data(short_data, cfg, progress=False)
    twins = pairs.load_bank_twins(bank, data, cfg, stats, progress=False)
    assert len(twins) == 6 and all(v.shape == (1, 128, 32) for v in twins.values())
    manifest = pd.read_csv(bank / "manifest.csv")
    i = next(iter(twins))
    row = manifest[manifest["source"].map(lambda p: str(Path(p).resolve())) == str(Path(data.paths[i]).resolve())]
    from rcmae.data.audio import load_audio

    wave = load_audio(bank / row["output"].iloc[0], duration=1.0)
    expected = stats.apply(LogMel(cfg.features)(wave)).float()
    assert torch.allclose(twins[i][0], expected, atol=1e-4)
    # A clip with a bank entry gets it as its twin; one without gets SpecAugment of itself.
    source = PairSource(cfg.pretrain.specaugment, twins)
    others = [j for j in range(len(data.paths)) if j not in twins][:1]
    idx = torch.tensor([i, *others])
    out = source.twins(data.x[idx], idx, make_generator(0))
    assert torch.equal(out[0], twins[i][0])
    assert not torch.equal(out[1], data.x[others[0]]) and out[1].shape == data.x[others[0]].shape
    run = train.pretrain(short_data, tmp_path / "r", aug=str(bank), overrides=SHORT + ["pretrain.epochs=1"],
                         progress=False, fit_scores=False)
    assert json.loads((run / "run.json").read_text())["aug"] == str(bank.resolve())
    with pytest.raises(FileNotFoundError, match="augmentation bank not found"):
        train.pretrain(short_data, tmp_path / "r2", aug=str(tmp_path / "nobank"), overrides=SHORT, progress=False)


def test_resume_extends_a_finished_run_to_more_epochs(short_data, tmp_path):
    # N epochs, then --resume --epochs 2N == 2N uninterrupted (a constant schedule does not depend on the total).
    ov = SHORT + ["pretrain.schedule=constant", "pretrain.warmup_epochs=0"]
    full = train.pretrain(short_data, tmp_path / "full", epochs=4, overrides=ov, progress=False, fit_scores=False)
    part = train.pretrain(short_data, tmp_path / "part", epochs=2, overrides=ov, progress=False, fit_scores=False)
    train.pretrain(short_data, part, epochs=4, overrides=ov, resume=True, progress=False, fit_scores=False)
    a = _weights(run_folder.checkpoint_path(full, "pretrain"))
    b = _weights(run_folder.checkpoint_path(part, "pretrain"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((part / "run.json").read_text())["stages"]["pretrain"]["resumed"] is True


def test_two_process_ddp_on_cpu_splits_the_data_and_fine_tunes(tiny_dcase, tmp_path):
    # The multi-device path (DDP, here 2 CPU processes over gloo) is the one several GPUs take. Lightning re-launches
    # the command for rank 1, so it must run as the real console script, not inside pytest.
    import os
    import subprocess
    import sys

    rcmae_bin = Path(sys.executable).parent / "rcmae"
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--accelerator", "cpu", "--devices", "2", "--epochs", "2"]
    pre = subprocess.run([str(rcmae_bin), "pretrain", "--data", str(tiny_dcase), "--out", str(out), "--preset", "tiny",
                          "--set", "pretrain.batch_size=8", *common], env=env, capture_output=True, text=True,
                         timeout=600)
    assert pre.returncode == 0, pre.stderr[-2000:]
    fin = subprocess.run([str(rcmae_bin), "finetune", "--run", str(out), *common], env=env, capture_output=True,
                         text=True, timeout=600)
    assert fin.returncode == 0, fin.stderr[-2000:]
    stages = json.loads((out / "run.json").read_text())["stages"]
    cfg = load_config("tiny")
    clips = len(list((tiny_dcase / "dev_data").glob("*/train/*.wav")))
    # Each rank sees half of the crops: steps per epoch = ceil(clips * crops / 2 ranks / batch 8).
    per_epoch = math.ceil(clips * cfg.pretrain.crops_per_clip / 2 / 8)
    assert stages["pretrain"]["strategy"] == "ddp" and stages["pretrain"]["steps"] == 2 * per_epoch
    assert stages["finetune"]["strategy"] == "ddp" and stages["finetune"]["steps"] >= 2
    det = Detector.load(out)
    z = det.embed(torch.zeros(1, cfg.model.n_mels, 313), "finetune")
    assert torch.isfinite(z).all()
