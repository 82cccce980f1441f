"""``rcmae benchmark --aug audioldm``: the paper's Table 3 arms, run with the tiny offline AudioLDM pipeline."""

from __future__ import annotations

import json

import pytest
from conftest import SHORT_OVERRIDES, check_results, write_tiny_dcase

from rcmae import cli
from rcmae.augment.bank import read_manifest

# One-second clips, a 1-block model, one epoch per stage: the arms' wiring, not their accuracy.
QUICK = [*SHORT_OVERRIDES, "pretrain.epochs=1", "finetune.epochs=1"]


@pytest.fixture(scope="module")
def table3(tmp_path_factory):
    from rcmae.augment.audioldm_testing import build_tiny_pipeline

    root = tmp_path_factory.mktemp("table3")
    data = write_tiny_dcase(root / "data", seconds=1.0, seed=11)
    model = build_tiny_pipeline(root / "tiny-audioldm")
    out = root / "bench"
    argv = ["benchmark", "--data", str(data), "--out", str(out), "--systems", "rcmae,rcmae-nodda", "--preset", "tiny",
            "--aug", "audioldm", "--aug-model", str(model), "--per-clip", "2", "--aug-steps", "2:3",
            "--aug-device", "cpu"]
    for item in QUICK:
        argv += ["--set", item]
    assert cli.main(argv) == 0
    return data, model, out


def test_table3_arms_pretrain_on_the_right_bank(table3):
    data, model, out = table3
    report = json.loads((out / "benchmark.json").read_text())
    assert report["aug"] == "audioldm"
    bank = out / "bank-audioldm"
    assert report["systems"]["rcmae"]["aug"] == str(bank)
    assert report["systems"]["rcmae-nodda"]["aug"] == "specaugment"
    # The bank is AudioLDM's: every training clip twice, each copy with its own seed and S in the asked range.
    table = read_manifest(bank)
    assert set(table["backend"]) == {"audioldm"} and set(table["model_id"]) == {str(model)}
    assert len(table) == 2 * 24 and table.groupby("source").size().eq(2).all()
    assert table["steps"].between(2, 3).all() and table["seed"].nunique() == 48
    # The with-DDA run paired clips with those copies, one drawn per clip per epoch, and recorded it.
    run = out / "systems/rcmae/seed0/run"
    assert json.loads((run / "run.json").read_text())["aug"] == str(bank.resolve())
    copies = json.loads((run / "augment_copies.json").read_text())
    assert [len(c["copies"]) for c in copies["clips"]] == [2] * 24
    assert (run / "augment_draws.jsonl").read_text().count("\n") == 1  # one epoch
    nodda = out / "systems/rcmae-nodda/seed0/run"
    assert json.loads((nodda / "run.json").read_text())["aug"] == "specaugment"
    assert not (nodda / "augment_draws.jsonl").exists()


def test_table3_results_match_sklearn(table3):
    data, _, out = table3
    rows = {r["row"]: r for r in json.loads((out / "benchmark.json").read_text())["rows"]}
    for system in ("rcmae", "rcmae-nodda"):
        res = check_results(out / f"systems/{system}/seed0/run/eval/idprob", data)
        assert rows[f"{system}:idprob"]["average"]["pauc"]["mean"] == pytest.approx(res["average"]["pauc"])


def test_aug_specaugment_builds_no_bank_and_flags_are_checked(tmp_path, capsys):
    assert cli.main(["benchmark", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--aug", "specaugment",
                     "--per-clip", "2"]) == 2
    assert "--aug specaugment has none" in capsys.readouterr().err
