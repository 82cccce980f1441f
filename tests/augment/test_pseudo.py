"""Augmented pseudo-classes (rcmae/augment/pseudo.py) and the idprob score over them (rcmae/scorers/idprob.py)."""

from __future__ import annotations

import math
import shutil

import librosa
import numpy as np
import pytest
import torch

from rcmae.augment.pseudo import PseudoClassAugment, parse_pseudo_classes, pseudo_labels, source_bins
from rcmae.data.audio import load_audio
from rcmae.deploy.bundle import Bundle
from rcmae.deploy.export import export_run
from rcmae.run.config import ConfigError, load_config
from rcmae.scorers.detector import Detector
from rcmae.scorers.idprob import class_logp, unit_probs
from rcmae.training import modules, stages

F, FMIN, FMAX = 128, 50.0, 8000.0


def _centres() -> np.ndarray:
    return librosa.mel_frequencies(n_mels=F + 2, fmin=FMIN, fmax=FMAX)[1:-1]


def test_parse_puts_the_identity_first_and_rejects_bad_specs():
    ts = parse_pseudo_classes(["speed:1.03", "pitch:0.97", "stretch:1.1", "tilt:-3"])
    assert [t.kind for t in ts] == ["identity", "speed", "pitch", "stretch", "tilt"]
    assert [(t.freq_factor, t.time_rate, t.gains(3).tolist()) for t in ts] == [
        (1.0, 1.0, [0, 0, 0]), (1.03, 1.03, [0, 0, 0]), (0.97, 1.0, [0, 0, 0]), (1.0, 1.1, [0, 0, 0]),
        (1.0, 1.0, [3.0, 0.0, -3.0])]
    # band: a raised cosine a quarter of the bins wide (half-width 2 of 16 bins), centred on bin 0.5 * 15 = 7.5.
    band = parse_pseudo_classes(["band:0.5:6"])[1].gains(16)
    assert np.allclose(band, [0] * 6 + [6 * 0.5 * (1 + math.cos(math.pi * 0.75))] + [6 * 0.5 * (1 + math.cos(
        math.pi * 0.25))] * 2 + [6 * 0.5 * (1 + math.cos(math.pi * 0.75))] + [0] * 6)
    for bad in ("speed", "warp:1.1", "speed:1", "pitch:3", "tilt:0", "tilt:abc", "band:3", "band:1.5:3",
                "speed:1.1:2"):
        with pytest.raises(ValueError, match="finetune.pseudo_classes"):
            parse_pseudo_classes([bad])
    with pytest.raises(ValueError, match="twice"):
        parse_pseudo_classes(["speed:1.03", "speed:1.03"])
    with pytest.raises(ConfigError, match="pseudo_classes"):
        load_config("tiny", ["finetune.pseudo_classes=[speed:1.0]"])
    assert load_config("tiny", ["finetune.pseudo_classes=[speed:0.97,tilt:3]"]).finetune.pseudo_classes == [
        "speed:0.97", "tilt:3"]


def test_pseudo_labels_match_a_loop():
    labels, k = torch.tensor([0, 2, 1, 2, 0]), torch.tensor([3, 0, 1, 2, 0])
    expected = [int(lab) * 4 + int(t) for lab, t in zip(labels, k, strict=True)]
    assert pseudo_labels(labels, k, 4).tolist() == expected == [3, 8, 5, 10, 0]


def test_frequency_factor_reads_each_bin_at_its_centre_over_the_factor():
    # A log-mel whose every bin holds its own centre frequency: after pitch:f, bin i must hold c_i / f (the map
    # from bin position to centre is what is interpolated), or the lowest centre where c_i / f lies below it.
    c = _centres()
    x = torch.tensor(np.repeat(c[:, None], 40, 1))[None]
    aug = PseudoClassAugment(["pitch:1.05", "pitch:0.95"], F, FMIN, FMAX)
    for k, f in ((1, 1.05), (2, 0.95)):
        out = aug(x, torch.tensor([k]), 20, torch.Generator().manual_seed(0))[0].numpy()
        want = np.clip(c / f, c[0], c[-1])
        assert np.allclose(out, want[:, None], rtol=1e-5)
    # Hand check of one bin against the two neighbouring centres.
    q = source_bins(c, 1.05)[60]
    j, w = int(q), q - int(q)
    assert math.isclose((1 - w) * c[j] + w * c[j + 1], c[60] / 1.05, rel_tol=1e-9)


def test_time_rate_tilt_and_identity():
    t_len, crop = 100, 30
    x = torch.arange(t_len, dtype=torch.float32).repeat(F, 1)[None].repeat(6, 1, 1)  # value = frame index
    aug = PseudoClassAugment(["stretch:1.2", "speed:0.9", "tilt:4"], F, FMIN, FMAX)
    k = torch.tensor([0, 1, 2, 3, 1, 0])
    out = aug(x, k, crop, torch.Generator().manual_seed(3))
    assert out.shape == (6, F, crop)
    ramp = np.linspace(-1.0, 1.0, F)
    for row, kk in enumerate(k.tolist()):
        o = out[row].double().numpy()
        if kk == 3:
            o = o - 4.0 * ramp[:, None]
        rate = {0: 1.0, 1: 1.2, 2: 0.9, 3: 1.0}[kk]
        start = o[0, 0]
        # Starts are whole frames, within the span that fits; each frame reads `rate` input frames further on.
        assert abs(start - round(start)) < 1e-3 and 0 <= round(start) <= t_len - 1 - (crop - 1) * rate
        assert np.allclose(o, start + rate * np.arange(crop)[None], atol=1e-3)
    # Identity rows are the exact crop (no interpolation at all).
    s = int(out[0, 0, 0])
    assert torch.equal(out[0], x[0, :, s : s + crop])


def test_a_span_longer_than_the_clip_repeats_the_last_frame():
    x = torch.arange(10, dtype=torch.float32).repeat(F, 1)[None]
    out = PseudoClassAugment(["speed:1.5"], F, FMIN, FMAX)(x, torch.tensor([1]), None, torch.Generator())
    assert out.shape == (1, F, 10)
    assert np.allclose(out[0, 0].numpy(), np.minimum(1.5 * np.arange(10), 9.0), atol=1e-4)


def _softmax(row: np.ndarray) -> np.ndarray:
    e = np.exp(row - row.max())
    return e / e.sum()


def _idprob(logits: torch.Tensor, unit: torch.Tensor, k: int, mode: str = "identity") -> np.ndarray:
    # -log p(own class) as the scorer takes it from class_logp.
    return -class_logp(logits, k, mode).gather(1, unit[:, None])[:, 0].numpy()


def test_class_logp_matches_a_hand_computed_softmax():
    logits = torch.tensor([[1.0, 0.5, -1.0, 2.0, 0.0, 0.3], [0.2, 0.1, 3.0, -2.0, 1.0, 1.5]])
    unit = torch.tensor([1, 2])
    # K = 2: classes (unit 0: 0, 1), (unit 1: 2, 3), (unit 2: 4, 5).
    ident = _idprob(logits, unit, 2, "identity")
    marg = _idprob(logits, unit, 2, "marginal")
    for b, u in enumerate(unit.tolist()):
        p = _softmax(logits[b].double().numpy())
        assert math.isclose(ident[b], -math.log(p[2 * u]), rel_tol=1e-12)
        assert math.isclose(marg[b], -math.log(p[2 * u] + p[2 * u + 1]), rel_tol=1e-12)
    # K = 1 is the paper's -log p(own ID); the two modes agree.
    plain = _idprob(logits, torch.tensor([3, 0]), 1, "identity")
    assert np.allclose(plain, [-math.log(_softmax(logits[0].double().numpy())[3]),
                               -math.log(_softmax(logits[1].double().numpy())[0])])
    assert np.allclose(plain, _idprob(logits, torch.tensor([3, 0]), 1, "marginal"))
    probs = unit_probs(logits, 2).numpy()
    for b in range(2):
        p = _softmax(logits[b].double().numpy())
        assert np.allclose(probs[b], [p[0] + p[1], p[2] + p[3], p[4] + p[5]], atol=1e-6)
    with pytest.raises(ValueError, match="multiple of 4"):
        class_logp(logits, 4)


def test_pseudo_class_fine_tuning_trains_k_classes_per_unit_and_scores_the_identity_block(short_run, tmp_path,
                                                                                          monkeypatch):
    data, done = short_run
    run = tmp_path / "run"
    shutil.copytree(done, run, ignore=shutil.ignore_patterns("finetune-*", "eval", "embeddings", "thresholds.json"))
    seen = []
    real_loss = modules.finetune_loss

    def spy(z, logits, labels, **kw):
        seen.append(labels.clone())
        return real_loss(z, logits, labels, **kw)

    monkeypatch.setattr(modules, "finetune_loss", spy)
    specs = ["speed:1.05", "tilt:3"]
    stages.finetune(run, epochs=1, progress=False,
                   overrides=[f"finetune.pseudo_classes=[{','.join(specs)}]", "score.idprob_windows=max"])
    det = Detector.load(run)
    n, k = len(det.classes), 3
    assert det.models["finetune"].head.out_features == n * k
    # Training labels are unit * K + transform: every unit and every transform occurs, nothing outside the range.
    labels = torch.cat(seen)
    assert labels.max() < n * k and set((labels % k).tolist()) == {0, 1, 2}
    assert set((labels // k).tolist()) == set(range(n))
    # The Detector's idprob is -log p(own unit, unchanged), the max over windows, from the model's own logits.
    x = torch.randn(4, det.cfg.model.n_mels, det.cfg.model.n_frames)
    units = [det.classes[i % n] for i in range(4)]
    got = det.score_logmels(x, [u[0] for u in units], [u[1] for u in units], "idprob")
    model = det.models["finetune"]
    with torch.no_grad():
        logits = [model.classify(model.embed(w)).double().numpy() for w in det._windows(x)]
    for b in range(4):
        u = det.class_index[units[b]]
        want = max(-math.log(_softmax(lg[b])[u * k]) for lg in logits)
        assert math.isclose(got[b], want, rel_tol=1e-9)
    probs = det.class_probs(x).numpy()
    assert probs.shape == (4, n) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    # The exported graph reads the same block of the N * K classes.
    clip = sorted((data / "dev_data").glob("*/test/*.wav"))[0]
    ref = det.score(clip, scorer="idprob")
    bundle = Bundle(export_run(run, tmp_path / "bundle", scorer="idprob", examples=0), trust=True)
    got = bundle.score(load_audio(clip), ref["machine_type"], ref["machine_id"])
    assert got["score"] == pytest.approx(ref["score"], rel=1e-5)


def test_idprob_preset_is_tiny_with_pseudo_classes():
    from rcmae.run.config import config_to_dict

    tiny, pre = config_to_dict(load_config("tiny")), config_to_dict(load_config("idprob"))
    specs = pre["finetune"].pop("pseudo_classes")
    assert [t.kind for t in parse_pseudo_classes(specs)] == ["identity"] + ["tilt"] * 2 + ["band"] * 8
    assert tiny["finetune"].pop("pseudo_classes") == []
    assert (tiny["finetune"].pop("epochs"), pre["finetune"].pop("epochs")) == (20, 300)
    assert (tiny["score"].pop("default_scorer"), pre["score"].pop("default_scorer")) == ("ensemble", "idprob")
    assert tiny == pre


def test_fine_tuning_applies_the_transform_its_labels_name(short_run, tmp_path, monkeypatch):
    # The class a clip is trained as (unit * K + k) must match the transform actually applied to it: k = 0 leaves the
    # log-mel unchanged, any other k changes it. A training step that fed every clip the unchanged transform while
    # its label says k would pass the label-range checks above; it fails here.
    data, done = short_run
    run = tmp_path / "run"
    shutil.copytree(done, run, ignore=shutil.ignore_patterns("finetune-*", "eval", "embeddings", "thresholds.json"))
    calls, seen = [], []
    real_call, real_loss = PseudoClassAugment.__call__, modules.finetune_loss

    def spy_call(self, x, k, *args, **kwargs):
        out = real_call(self, x, k, *args, **kwargs)
        calls.append((x.clone(), k.clone(), out.clone()))
        return out

    def spy_loss(z, logits, labels, **kw):
        seen.append(labels.clone())
        return real_loss(z, logits, labels, **kw)

    monkeypatch.setattr(PseudoClassAugment, "__call__", spy_call)
    monkeypatch.setattr(modules, "finetune_loss", spy_loss)
    stages.finetune(run, epochs=1, progress=False, overrides=["finetune.pseudo_classes=[tilt:3,tilt:-3]"])
    assert len(calls) == len(seen) > 0
    for (x, k, out), labels in zip(calls, seen, strict=True):
        assert torch.equal(labels.cpu() % 3, k.cpu())
        same = (out - x).abs().flatten(1).amax(1) <= 1e-5 * x.abs().max()
        assert torch.equal(same, k.cpu() == 0), (k, same)
    assert any((k != 0).any() for _, k, _ in calls) and any((k == 0).any() for _, k, _ in calls)
