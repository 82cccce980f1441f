"""The angular-margin classifier family: heads and losses against hand-computed cases and loops, the Tgram,
mixup, the fine-tuning options of the idprob study, and one tiny end-to-end ``margin`` run re-scored by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torch.nn.functional as nnf

from rcmae.data.features import LogMel, LogMelConfig
from rcmae.evaluation.evaluate import evaluate_run
from rcmae.models.losses import adacos_scale, arcface_logits, cosine_logits, finetune_loss, mixup, mixup_cross_entropy
from rcmae.models.margin import MarginConfig, STgramNet, Tgram
from rcmae.run.config import config_to_dict, load_config
from rcmae.scorers.detector import Detector
from rcmae.training import stages as train
from rcmae.training.modules import balanced_indices


# ------------------------------------------------------------------------------------------- pure functions
def test_cosine_and_arcface_logits_match_hand_computed_values():
    z = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    cos = cosine_logits(z, w)
    assert torch.allclose(cos, torch.tensor([[0.6, 0.8, -0.6], [1.0, 0.0, -1.0]]), atol=1e-6)
    cos = torch.tensor([[0.5, 0.2, -0.1], [-0.99, 0.3, 0.0]])
    out = arcface_logits(cos, torch.tensor([0, 0]), scale=2.0, margin=0.1)
    # Row 0: the true class's angle acos(0.5) = pi/3 grows by the margin; the others are only scaled.
    assert out[0, 0].item() == pytest.approx(2.0 * math.cos(math.pi / 3 + 0.1), rel=1e-6)
    assert out[0, 1:].tolist() == pytest.approx([0.4, -0.2], rel=1e-6)
    # Row 0 again with margin 0.5, row 1: acos(-0.99) + 0.5 > pi, so the linear fallback cos - m sin m.
    out = arcface_logits(cos, torch.tensor([0, 0]), scale=1.0, margin=0.5)
    assert out[1, 0].item() == pytest.approx(-0.99 - 0.5 * math.sin(0.5), rel=1e-6)
    assert out[0, 0].item() == pytest.approx(math.cos(math.pi / 3 + 0.5), abs=1e-6)
    # No margin: a normalised softmax, scale times the cosines.
    assert torch.allclose(arcface_logits(cos, torch.tensor([1, 2]), scale=3.0, margin=0.0), 3.0 * cos, atol=1e-6)


def test_adacos_scale_matches_a_loop_over_the_batch():
    gen = torch.Generator().manual_seed(0)
    cos = torch.rand(7, 4, generator=gen) * 2 - 1
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    s_old = 5.0
    b = []
    thetas = []
    for i in range(7):
        b.append(sum(math.exp(s_old * cos[i, j].item()) for j in range(4) if j != labels[i]))
        thetas.append(math.acos(cos[i, labels[i]].item()))
    theta_med = min(math.pi / 4, float(np.sort(thetas)[3]))  # torch.median: the lower middle; 7 is odd anyway
    expected = math.log(np.mean(b)) / math.cos(theta_med)
    assert adacos_scale(cos, labels, s_old).item() == pytest.approx(expected, rel=1e-5)


def test_mixup_and_mixup_cross_entropy_match_loops():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, 4, generator=gen)
    perm = torch.tensor([2, 0, 1, 4, 3])
    mixed = mixup(x, 0.7, perm)
    for i in range(5):
        assert torch.allclose(mixed[i], 0.7 * x[i] + 0.3 * x[perm[i]])
    logits = torch.randn(5, 3, generator=gen)
    ya, yb = torch.tensor([0, 1, 2, 0, 1]), torch.tensor([2, 2, 0, 1, 1])
    lp = torch.log_softmax(logits.double(), 1)
    expected = np.mean([-(0.7 * lp[i, ya[i]] + 0.3 * lp[i, yb[i]]).item() for i in range(5)])
    assert mixup_cross_entropy(logits, logits, ya, yb, 0.7).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="lam"):
        mixup(x, 1.5, perm)


def test_finetune_loss_label_smoothing_is_the_smoothed_target_cross_entropy():
    gen = torch.Generator().manual_seed(2)
    z, logits = torch.randn(6, 8, generator=gen), torch.randn(6, 3, generator=gen)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    eps = 0.2
    lp = torch.log_softmax(logits.double(), 1)
    target = torch.full((6, 3), eps / 3, dtype=torch.float64)
    target[torch.arange(6), labels] += 1 - eps
    expected = -(target * lp).sum(1).mean().item()
    parts = finetune_loss(z, logits, labels, w_scl=0.0, w_ce=1.0, label_smoothing=eps)
    assert parts["ce"].item() == pytest.approx(expected, rel=1e-5)
    assert parts["loss"].item() == pytest.approx(expected, rel=1e-5)  # lambda_SCL = 0: CE only


def test_balanced_indices_draw_each_class_equally_and_stay_in_class():
    labels = torch.tensor([0] * 50 + [1] * 5 + [2] * 10)
    idx = balanced_indices(labels, 3000, torch.Generator().manual_seed(3))
    counts = torch.bincount(labels[idx], minlength=3).double() / 3000
    assert torch.allclose(counts, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.03)  # unbalanced 50:5:10 in
    assert set(idx[labels[idx] == 1].tolist()) <= set(range(50, 55))


# ---------------------------------------------------------------------------------------------- the network
def test_tgram_frames_align_with_the_logmel_and_match_a_strided_dot_product():
    feats = LogMelConfig(n_fft=256, win_length=256, hop_length=64, n_mels=16)
    tg = Tgram(16, 256, 64, blocks=0)
    gen = torch.Generator().manual_seed(4)
    for n in (4000, 4001, 4095):
        wave = torch.randn(2, n, generator=gen)
        out = tg(wave)
        assert out.shape == LogMel(feats)(wave).shape == (2, 16, 1 + n // 64)
    # Frame t is centred on sample t * hop: a dot product with the zero-padded window around it.
    wave = torch.randn(1, 1000, generator=gen)
    padded = nnf.pad(wave, (128, 128))[0]
    w = tg.conv.weight[:, 0, :]
    with torch.no_grad():
        out = tg(wave)[0]
        for t in (0, 3, 15):
            assert torch.allclose(out[:, t], w @ padded[t * 64 : t * 64 + 256], atol=1e-5)


def test_stgram_shapes_gradients_and_eval_logits():
    feats = LogMelConfig(n_fft=256, win_length=256, hop_length=128, n_mels=16)
    cfg = MarginConfig(channels=[4, 8], emb_dim=12, n_classes=3, head="arcface", margin=0.3, scale=8.0)
    model = STgramNet(cfg, feats)
    wave = torch.randn(4, 2000, generator=torch.Generator().manual_seed(5))
    assert model.spectro_temporal(wave).shape == (4, 2, 16, 1 + 2000 // 128)
    z = model.embed(wave)
    assert z.shape == (4, 12)
    labels = torch.tensor([0, 1, 2, 0])
    nnf.cross_entropy(model.train_logits(z, labels), labels).backward()
    # Gradients reach the Tgram's waveform convolution, the CNN and the class centres.
    for p in (model.tgram.conv.weight, model.cnn[0][0].weight, model.head.weight, model.embedding.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        z = model.embed(wave)
        cos = nnf.normalize(z, dim=1) @ nnf.normalize(model.head.weight, dim=1).T
        assert torch.allclose(model.classify(z), 8.0 * cos, atol=1e-5)  # no margin when scoring
        margin = model.train_logits(z, labels)
        assert torch.allclose(margin[labels != 1, 1], 8.0 * cos[labels != 1, 1], atol=1e-5)
        assert (margin[torch.arange(4), labels] < 8.0 * cos[torch.arange(4), labels]).all()
    no_tgram = STgramNet(MarginConfig(tgram=False, channels=[4], emb_dim=6, n_classes=2), feats)
    assert no_tgram.spectro_temporal(wave).shape == (4, 1, 16, 16) and no_tgram.tgram is None


def test_presets_load():
    margin = load_config("margin")
    assert margin.family == "margin" and margin.margin.head == "arcface" and margin.score.ensemble == ["idprob", "knn"]
    paper, plus = load_config("paper"), load_config("paper+")
    assert paper.family == "rcmae" and paper.finetune.label_smoothing == 0.0 and paper.finetune.head == "linear"
    # paper+ is the paper but for the label smoothing of docs/studies/idprob.md.
    a, b = config_to_dict(paper), config_to_dict(plus)
    assert (a["finetune"].pop("label_smoothing"), b["finetune"].pop("label_smoothing")) == (0.0, 0.1)
    assert a == b
    with pytest.raises(ValueError, match="margin.head"):
        load_config("margin", ["margin.head=cosface"])


# ------------------------------------------------------------------------------------------------ end to end
MARGIN_TINY = ["margin.channels=[4, 8]", "margin.emb_dim=16", "margin.crop_frames=null", "pretrain.batch_size=8",
               "pretrain.epochs=2", "data.duration=2.0", "score.knn_k=2"]


@pytest.fixture(scope="module")
def margin_run(tiny_dcase, tmp_path_factory):
    out = tmp_path_factory.mktemp("margin") / "run"
    train.pretrain(tiny_dcase, out, preset="margin", overrides=MARGIN_TINY, progress=False)
    train.finetune(out, progress=False)  # one-stage family: a no-op that says so
    evaluate_run(out, progress=False)
    return out


def test_margin_run_scores_equal_a_direct_recomputation(margin_run, tiny_dcase, capsys):
    assert not (margin_run / "checkpoints" / "finetune-last.ckpt").exists()
    det = Detector.load(margin_run)
    assert det.scorers == ["idprob", "knn", "knn_norm", "ensemble"] and det.default_scorer == "ensemble"
    # Rebuild the network by hand from the checkpoint and the run's config.
    cfg = load_config(margin_run / "config.yaml")
    state = torch.load(margin_run / "checkpoints" / "pretrain-last.ckpt", map_location="cpu", weights_only=True)
    net = STgramNet(MarginConfig(**state["rcmae"]["model_config"]), cfg.features)
    net.load_state_dict({k[6:]: v for k, v in state["state_dict"].items() if k.startswith("model.")})
    net.eval()
    classes = [tuple(c) for c in pd.read_json(margin_run / "run.json", typ="series")["classes"]]
    n = int(cfg.data.duration * 16000)

    def embed_and_logits(paths):
        wave = torch.tensor(np.stack([sf.read(p, dtype="float32")[0][:n] for p in paths]))
        with torch.no_grad():
            z = net.embed(wave)
            return z.double().numpy(), net.classify(z).double().numpy()

    scores = pd.read_csv(margin_run / "eval" / "scores.csv", dtype={"machine_id": str})
    z, logits = embed_and_logits(scores["path"])
    true = [classes.index((t, i)) for t, i in zip(scores["machine_type"], scores["machine_id"], strict=True)]
    lse = np.log(np.exp(logits).sum(1))
    idprob = -(logits[np.arange(len(true)), true] - lse)
    assert np.allclose(scores["score_idprob"], idprob, rtol=1e-4, atol=1e-6)
    train_dir = sorted((tiny_dcase / "dev_data").glob("*/train/*.wav"))
    zt, _ = embed_and_logits(train_dir)
    for row, (t, i) in enumerate(zip(scores["machine_type"], scores["machine_id"], strict=True)):
        ref = [k for k, p in enumerate(train_dir) if p.parent.parent.name == t and f"id_{i}_" in p.name]
        d = sorted(1 - zt[k] @ z[row] / (np.linalg.norm(zt[k]) * np.linalg.norm(z[row])) for k in ref)
        assert scores["score_knn"][row] == pytest.approx(np.mean(d[:2]), rel=1e-4, abs=1e-6)
    # The Detector's one-clip path gives the same number for a clip of the run's length (a longer recording is
    # scored window by window, the highest kept).
    wave = sf.read(scores["path"][0], dtype="float32")[0][:n]
    row = det.score(wave, scorer="idprob", machine_type=scores["machine_type"][0], machine_id=scores["machine_id"][0])
    assert row["score"] == pytest.approx(idprob[0], rel=1e-4, abs=1e-6)


def test_a_margin_run_is_refused_by_export_with_one_line(margin_run, tmp_path):
    from rcmae.deploy.export import ExportError, export_run

    with pytest.raises(ExportError, match="margin family cannot be exported"):
        export_run(margin_run, tmp_path / "bundle", scorer="knn", examples=0)
    assert not (tmp_path / "bundle").exists()  # nothing half-written
