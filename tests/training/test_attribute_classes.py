"""Fine-tuning classes where there are no machine IDs (DCASE 2023+): section + attribute classes, idprob's own
class of a clip, and the pooled score of a clip whose attributes are unknown."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SHORT_OVERRIDES
from evaluator_reference import _eval_style_copy

from rcmae import cli
from rcmae.data.index import class_name, finetune_classes, id_classes, index_dataset
from rcmae.data.names import parse_attributes
from rcmae.scorers.base import Clips, ScoringError
from rcmae.scorers.idprob import IdProbScorer, _class_name, true_classes
from rcmae.training import stages as train


def _index(rows: list[tuple[str, str, str, str, str]]) -> pd.DataFrame:
    """A hand-made index: ``(machine_type, machine_id, section, attributes, split)`` per clip."""
    return pd.DataFrame([{"path": f"/x/{t}/{s}/{n}.wav", "machine_type": t, "machine_id": i, "section": sec,
                          "domain": "source" if sec else "", "split": s, "label": "normal", "dataset": "dev",
                          "attributes": a} for n, (t, i, sec, a, s) in enumerate(rows)])


HAND = _index([
    # DCASE 2020: fan with IDs 00 and 02 (no sections, no attributes)
    ("fan", "00", "", "", "train"), ("fan", "02", "", "", "train"), ("fan", "04", "", "", "test"),
    # DCASE 2021/2022-style: pump with two sections, attributes in the names
    ("pump", "00", "00", "vel_6", "train"), ("pump", "01", "01", "vel_8", "train"),
    ("pump", "01", "01", "vel_9", "train"),
    # DCASE 2023-style: ToyCar with one section; three source settings (one without attributes), one target
    ("ToyCar", "00", "00", "spd_1", "train"), ("ToyCar", "00", "00", "spd_1", "train"),
    ("ToyCar", "00", "00", "spd_2", "train"), ("ToyCar", "00", "00", "noAttribute", "train"),
    ("ToyCar", "00", "00", "spd_3", "train"), ("ToyCar", "00", "00", "spd_7", "test"),
])


def test_class_sets_of_a_hand_made_index():
    classes, units = finetune_classes(HAND, "auto")
    # By hand: fan keeps its IDs, pump its sections (both have more than one), ToyCar (one section) learns
    # section + attributes; noAttribute is the section alone; test rows add nothing.
    assert classes == [("ToyCar", "00"), ("ToyCar", "00_spd_1"), ("ToyCar", "00_spd_2"), ("ToyCar", "00_spd_3"),
                       ("fan", "00"), ("fan", "02"), ("pump", "00"), ("pump", "01")]
    assert units == [("ToyCar", "00")] * 4 + [("fan", "00"), ("fan", "02"), ("pump", "00"), ("pump", "01")]
    classes, units = finetune_classes(HAND, "id")
    assert classes == units == id_classes(HAND)
    no2020 = HAND[HAND["machine_type"] != "fan"]
    assert finetune_classes(no2020, "section")[0] == id_classes(no2020)
    classes, units = finetune_classes(no2020, "attribute")
    assert classes == [("ToyCar", "00"), ("ToyCar", "00_spd_1"), ("ToyCar", "00_spd_2"), ("ToyCar", "00_spd_3"),
                       ("pump", "00_vel_6"), ("pump", "01_vel_8"), ("pump", "01_vel_9")]
    assert units[4:] == [("pump", "00"), ("pump", "01"), ("pump", "01")]
    for mode in ("section", "attribute"):
        with pytest.raises(ValueError, match=f"finetune.classes={mode}: machine type fan has no sections"):
            finetune_classes(HAND, mode)
    with pytest.raises(ValueError, match="finetune.classes='ids': choose one of auto, id, section, attribute"):
        finetune_classes(HAND, "ids")


def test_a_2020_set_keeps_its_machine_id_classes(tiny_dcase):
    index = index_dataset(tiny_dcase)
    classes, units = finetune_classes(index)
    assert classes == units == id_classes(index) == [("fan", "00"), ("fan", "02"), ("valve", "00"), ("valve", "02")]


def _loop_true_classes(classes, units, types, ids, attrs):
    """The rule written out clip by clip, over every class: own class if known, else the unit's classes."""
    out = []
    for t, i, a in zip(types, ids, attrs, strict=True):
        members = [k for k in range(len(classes)) if units[k] == (t, i)]
        if not members:
            out.append(None)
        elif members == [k for k in range(len(classes)) if classes[k] == (t, i)]:
            out.append(members)  # a machine-ID class
        else:
            own = [k for k in members if a and classes[k] == (t, i if a.lower() == "noattribute" else f"{i}_{a}")]
            out.append(own or members)
    return out


def test_true_class_lookup_agrees_with_a_loop():
    classes, units = finetune_classes(HAND, "auto")
    cases = [("ToyCar", "00", "spd_2"), ("ToyCar", "00", ""), ("ToyCar", "00", "spd_7"),
             ("ToyCar", "00", "noAttribute"), ("fan", "02", ""), ("pump", "01", "vel_8"), ("pump", "00", "")]
    types, ids, attrs = zip(*cases, strict=True)
    got = true_classes(classes, units, types, ids, attrs)
    assert got == _loop_true_classes(classes, units, types, ids, attrs)
    # By hand: spd_2 is class 2; unknown and unseen attributes pool ToyCar's four classes; noAttribute is class 0.
    assert got == [[2], [0, 1, 2, 3], [0, 1, 2, 3], [0], [5], [7], [6]]
    # Random clips over a larger random class set.
    rng = np.random.default_rng(3)
    rows = [(t, "00", "00", f"a_{rng.integers(4)}" if rng.random() < 0.8 else "noAttribute", "train")
            for t in ("A", "B", "C") for _ in range(12)]
    rows += [("D", f"0{k}", f"0{k}", "x", "train") for k in range(3)]
    classes, units = finetune_classes(_index(rows), "auto")
    types = rng.choice(["A", "B", "C", "D"], 200)
    ids = ["0" + str(rng.integers(3)) if t == "D" else "00" for t in types]
    attrs = [["", "noAttribute", "a_0", "a_1", "a_2", "a_3", "a_9"][rng.integers(7)] for _ in types]
    assert true_classes(classes, units, types, ids, attrs) == _loop_true_classes(classes, units, types, ids, attrs)
    with pytest.raises(ScoringError, match="machine D id 07 was not in this run's training data"):
        true_classes(classes, units, ["D"], ["07"], [""])
    # The scorer's copy of the class-name rule is rcmae.data's.
    for sec, a in [("00", "spd_1"), ("01", ""), ("00", "noAttribute"), ("02", "NOATTRIBUTE"), ("00", None)]:
        assert _class_name(sec, a) == class_name(sec, a)


class _Linear(torch.nn.Module):
    """A stand-in classifier: embedding = the flattened input, logits = a fixed linear map."""

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.head = torch.nn.Linear(dim, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(z)


@pytest.mark.parametrize("pool", ["max", "sum"])
def test_idprob_scores_own_class_and_pools_unknown_ones(pool, tmp_path):
    torch.manual_seed(0)
    classes, units = finetune_classes(HAND, "auto")
    model = _Linear(6, len(classes)).double()
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    cfg = SimpleNamespace(batch_size=3, idprob_pool=pool)
    scorer = IdProbScorer(cfg, tmp_path, model, classes, lambda b: [b], torch.device("cpu"), units)
    types = ["ToyCar", "ToyCar", "ToyCar", "fan", "pump", "ToyCar", "pump"]
    ids = ["00", "00", "00", "02", "01", "00", "00"]
    attrs = ["spd_1", "", "spd_9", "", "vel_8", "noAttribute", ""]
    got = scorer.score(Clips(x, types, ids, None, lambda name: None, attrs))
    logits = model.head(x.flatten(1)).detach().numpy()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    pooled = (lambda q: q.max()) if pool == "max" else (lambda q: q.sum())
    want = [-np.log(p[0, 1]), -np.log(pooled(p[1, :4])), -np.log(pooled(p[2, :4])), -np.log(p[3, 5]),
            -np.log(p[4, 7]), -np.log(p[5, 0]), -np.log(p[6, 6])]
    np.testing.assert_allclose(got, want, rtol=1e-10)


@pytest.fixture(scope="module")
def demo23(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo23") / "d23"
    assert cli.main(["demo-data", str(out), "--mode", "2023", "--train-per-id", "3", "--target-train-per-id", "1",
                     "--test-per-id", "1", "--quiet"]) == 0
    return out


def test_2023_demo_run_learns_attribute_classes_and_idprob_reads_them(demo23, tmp_path):
    from rcmae.evaluation.evaluate import evaluate_run
    from rcmae.run.checkpoint import model_from_checkpoint
    from rcmae.run.folder import checkpoint_path
    from rcmae.scorers.detector import Detector

    run = tmp_path / "run"
    train.pretrain(demo23, run, epochs=1, overrides=SHORT_OVERRIDES, progress=False)
    train.finetune(run, epochs=1, progress=False)
    info = json.loads((run / "run.json").read_text())
    # By hand: 5 machine types x one section x (3 source speeds 96/100/104 + the target's 112) = 20 classes.
    assert len(info["classes"]) == 20
    assert ["fan", "00_spd_112_bg_B"] in info["classes"] and ["valve", "00_spd_96_bg_A"] in info["classes"]
    assert {tuple(u) for u in info["class_units"]} == {(t, "00") for t in ("fan", "gearbox", "pump", "slider",
                                                                            "valve")}
    model, _ = model_from_checkpoint(checkpoint_path(run, "finetune", "last"))
    assert model.head.out_features == 20
    # Dev test clips: idprob is -log p of the clip's own attribute class (from its name).
    results = evaluate_run(run, scorer="idprob", progress=False)
    assert results["idprob"]["average"]["auc"] is not None
    det = Detector.load(run)
    assert det.units == [(t, "00") for t in ("fan", "gearbox", "pump", "slider", "valve")]
    scores = pd.read_csv(run / "eval" / "scores.csv", dtype=str)
    from rcmae.data.datasets import compute_logmels

    x, kept, _ = compute_logmels(list(scores["path"]), det.logmel, det.cfg.data.sample_rate, det.cfg.data.duration,
                                 progress=False, transform=det.stats.apply)
    assert kept == list(scores["path"])
    p = det.class_probs(x).double().numpy()
    own = [det.class_index[(t, f"00_{parse_attributes(q)}")] for t, q in zip(scores["machine_type"], scores["path"],
                                                                             strict=True)]
    np.testing.assert_allclose(scores["score_idprob"].astype(float), -np.log(p[np.arange(len(p)), own]), rtol=1e-5)
    # Evaluation clips with bare names: the max over the section's classes, the same with or without ground truth.
    data, gt = tmp_path / "eval", tmp_path / "evaluator"
    _eval_style_copy(demo23, data, gt, seed=2)
    evaluate_run(run, data=data, scorer="idprob", progress=False)
    bare = pd.read_csv(run / "eval" / "scores.csv", dtype=str)
    shutil.copytree(gt, data / "evaluator")
    res = evaluate_run(run, data=data, scorer="idprob", progress=False)
    labelled = pd.read_csv(run / "eval" / "scores.csv", dtype=str)
    assert res["idprob"]["official"]["score"] is not None and set(labelled["attributes"]) != {""}
    assert labelled["score_idprob"].tolist() == bare["score_idprob"].tolist()
    x, _, _ = compute_logmels(list(bare["path"]), det.logmel, det.cfg.data.sample_rate, det.cfg.data.duration,
                              progress=False, transform=det.stats.apply)
    p = det.class_probs(x).double().numpy()
    section = [[k for k, c in enumerate(det.classes) if c[0] == t] for t in bare["machine_type"]]
    want = [-np.log(p[n, ks].max()) for n, ks in enumerate(section)]
    np.testing.assert_allclose(bare["score_idprob"].astype(float), want, rtol=1e-5)


def test_the_margin_family_learns_the_same_attribute_classes(demo23, tmp_path):
    # The angular-margin classifier takes RC-MAE fine-tuning's classes: on a 2023-style set the 20 section +
    # attribute classes (counted by hand above), each with its unit, and idprob reads a clip's own class.
    from rcmae.evaluation.evaluate import evaluate_run
    from rcmae.scorers.detector import Detector

    run = tmp_path / "margin"
    train.pretrain(demo23, run, preset="margin", progress=False,
                   overrides=["margin.channels=[4, 8]", "margin.emb_dim=16", "margin.crop_frames=null",
                              "pretrain.batch_size=8", "pretrain.epochs=1", "data.duration=2.0", "score.knn_k=1"])
    info = json.loads((run / "run.json").read_text())
    assert len(info["classes"]) == 20 and ["pump", "00_spd_104_bg_A"] in info["classes"]
    assert {tuple(u) for u in info["class_units"]} == {(t, "00") for t in ("fan", "gearbox", "pump", "slider",
                                                                            "valve")}
    det = Detector.load(run)
    assert det.units == [(t, "00") for t in ("fan", "gearbox", "pump", "slider", "valve")]
    evaluate_run(run, scorer="idprob", progress=False)
    scores = pd.read_csv(run / "eval" / "scores.csv", dtype=str)
    from rcmae.data.datasets import compute_logmels

    x, kept, _ = compute_logmels(list(scores["path"]), det.logmel, det.cfg.data.sample_rate, det.cfg.data.duration,
                                 progress=False, transform=det.stats.apply)
    p = det.class_probs(x).double().numpy()
    assert p.shape == (len(kept), 20)
    own = [det.class_index[(t, f"00_{parse_attributes(q)}")] for t, q in zip(scores["machine_type"], scores["path"],
                                                                             strict=True)]
    np.testing.assert_allclose(scores["score_idprob"].astype(float), -np.log(p[np.arange(len(p)), own]), rtol=1e-5)
