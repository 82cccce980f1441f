"""Augmentation banks: manifest content, reproducibility from the recorded row, resume, shards, bad clips."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from rcmae import cli
from rcmae.augment import bank as bank_mod
from rcmae.augment.bank import MANIFEST_COLUMNS, BankError, BankPairs, build_bank, read_manifest
from rcmae.augment.procedural import ProceduralAugmenter
from rcmae.augment.prompts import PAPER_PROMPTS, PromptLibrary

OLD_NS = 1_000_000_000 * 10**9  # a fixed past mtime: a rewritten file would get a new one


def _build(data, out, **kw):
    kw.setdefault("limit", 2)
    kw.setdefault("per_clip", 2)
    kw.setdefault("progress", False)
    return build_bank(data, out, **kw)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _age(bank: Path) -> None:
    for wav in (bank / "audio").rglob("*.wav"):
        os.utime(wav, ns=(OLD_NS, OLD_NS))


def _mtimes(bank: Path) -> dict[str, int]:
    return {str(p.relative_to(bank)): p.stat().st_mtime_ns for p in (bank / "audio").rglob("*.wav")}


def _train_clips(data: Path) -> list[str]:
    return sorted(str(p) for p in data.rglob("train/*.wav"))


@pytest.fixture(scope="module")
def reference_bank(tiny_dcase, tmp_path_factory):
    out = tmp_path_factory.mktemp("banks") / "ref"
    summary = _build(tiny_dcase, out, snr=(2.0, 8.0), seed=3)
    return out, summary


def test_manifest_rows_describe_each_output(tiny_dcase, reference_bank):
    out, summary = reference_bank
    assert "4 written, 0 already done, 0 recovered, 0 skipped of 4" in summary
    table = read_manifest(out)
    assert list(table.columns) == MANIFEST_COLUMNS and len(table) == 4
    sources = _train_clips(tiny_dcase)[:2]  # --limit 2: the first two training clips by path
    assert sorted(table["source"].unique()) == sources
    stem0 = Path(sources[0]).stem
    assert f"audio/fan/{stem0}__aug0.wav" in set(table["output"]) and f"audio/fan/{stem0}__aug1.wav" in set(
        table["output"])
    assert table["seed"].is_unique
    assert set(table["backend"]) == {"procedural"} and set(table["model_id"]) == {"procedural"}
    assert table["snr_db"].between(2.0, 8.0).all() and table["steps"].isna().all()
    assert set(table["prompt"]) <= set(PAPER_PROMPTS)
    for row in table.itertuples():
        path = out / row.output
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row.sha256
        # The row alone reproduces the file: source, prompt, SNR and seed through the public augmenter.
        source, _ = sf.read(row.source, dtype="float32")
        rng = np.random.default_rng([row.seed, 1])
        expected = ProceduralAugmenter()(source, row.prompt, row.snr_db, generator=rng)
        peak = np.abs(expected).max()
        expected = expected * min(1.0, 0.999 / peak)
        got, sr = sf.read(path, dtype="float64")
        assert sr == 16000 and got.shape == source.shape
        np.testing.assert_allclose(got, expected, atol=1.5 / 32768)


def test_rerun_rewrites_nothing_and_a_deleted_output_is_recreated(tiny_dcase, reference_bank, tmp_path):
    src, _ = reference_bank
    out = tmp_path / "bank"
    shutil.copytree(src, out)
    _age(out)
    assert "0 written, 4 already done" in _build(tiny_dcase, out, snr=(2.0, 8.0), seed=3)
    assert set(_mtimes(out).values()) == {OLD_NS}
    # Delete one output and its row: only that one is made again, identical to before.
    table = read_manifest(out)
    victim = table["output"][1]
    (out / victim).unlink()
    manifest = out / "manifest.csv"
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text("".join(line for line in lines if f",{victim}," not in line))
    assert "1 written, 3 already done" in _build(tiny_dcase, out, snr=(2.0, 8.0), seed=3)
    times = _mtimes(out)
    assert times.pop(victim) != OLD_NS and set(times.values()) == {OLD_NS}
    pd.testing.assert_frame_equal(read_manifest(out), table)


def test_interrupted_run_resumes_without_writing_anything_twice(tiny_dcase, reference_bank, tmp_path, monkeypatch):
    out = tmp_path / "bank"
    calls = {"n": 0}
    original = ProceduralAugmenter.__call__

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during the third clip
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ProceduralAugmenter, "__call__", flaky)
    with pytest.raises(KeyboardInterrupt):
        _build(tiny_dcase, out, snr=(2.0, 8.0), seed=3)
    monkeypatch.setattr(ProceduralAugmenter, "__call__", original)
    assert len(read_manifest(out)) == 2
    _age(out)
    first_two = set(_mtimes(out))
    assert "2 written, 2 already done" in _build(tiny_dcase, out, snr=(2.0, 8.0), seed=3)
    assert all(_mtimes(out)[name] == OLD_NS for name in first_two)
    # The resumed bank equals the one built in one go.
    pd.testing.assert_frame_equal(read_manifest(out), read_manifest(reference_bank[0]))


def test_a_file_whose_row_was_lost_gets_its_row_back_without_being_rewritten(tiny_dcase, reference_bank, tmp_path):
    out = tmp_path / "bank"
    shutil.copytree(reference_bank[0], out)
    _age(out)
    manifest = out / "manifest.csv"
    text = manifest.read_text()
    # The last append was cut off mid-line: a truncated row with no newline.
    manifest.write_text(text[: text.rstrip("\n").rfind("\n") + 1] + "/half/a/row,audio/fan/x")
    summary = _build(tiny_dcase, out, snr=(2.0, 8.0), seed=3)
    assert "0 written, 3 already done, 1 recovered" in summary
    assert set(_mtimes(out).values()) == {OLD_NS}
    pd.testing.assert_frame_equal(read_manifest(out), read_manifest(reference_bank[0]))


def test_two_shards_together_equal_the_unsharded_bank(tiny_dcase, reference_bank, tmp_path):
    out = tmp_path / "sharded"
    s0 = _build(tiny_dcase, out, snr=(2.0, 8.0), seed=3, shard=(0, 2))
    s1 = _build(tiny_dcase, out, snr=(2.0, 8.0), seed=3, shard=(1, 2))
    assert "2 written" in s0 and "2 written" in s1
    assert (out / "manifest.0-of-2.csv").is_file() and (out / "manifest.1-of-2.csv").is_file()
    assert len(pd.read_csv(out / "manifest.0-of-2.csv")) == 2
    pd.testing.assert_frame_equal(read_manifest(out), read_manifest(reference_bank[0]))


def test_changed_settings_refuse_to_resume(tiny_dcase, reference_bank, tmp_path):
    out = tmp_path / "bank"
    shutil.copytree(reference_bank[0], out)
    with pytest.raises(BankError, match="built with seed=3, not 4"):
        _build(tiny_dcase, out, snr=(2.0, 8.0), seed=4)
    # Checked before any model is loaded: the missing weights below are never looked for.
    with pytest.raises(BankError, match="built with backend='procedural', not 'audioldm'"):
        _build(tiny_dcase, out, backend="audioldm", model=str(tmp_path / "no-such-model"), seed=3)


def test_bad_clips_are_skipped_and_reported(tiny_dcase, tmp_path):
    data = tmp_path / "data"
    train = data / "dev_data" / "fan" / "train"
    train.mkdir(parents=True)
    good = _train_clips(tiny_dcase)[0]
    shutil.copy(good, train / "normal_id_00_00000000.wav")
    (train / "normal_id_00_00000001.wav").write_bytes(b"RIFF\x00\x00not really a wav")
    sf.write(train / "normal_id_00_00000002.wav", np.zeros(16000, np.float32), 16000, subtype="PCM_16")
    summary = build_bank(data, tmp_path / "bank", progress=False)
    assert "1 written, 0 already done, 0 recovered, 2 skipped of 3" in summary
    assert "normal_id_00_00000001.wav" in summary and "normal_id_00_00000002.wav" in summary
    assert "all zeros" in summary
    assert len(read_manifest(tmp_path / "bank")) == 1


def test_a_bank_augments_at_most_table_2s_10_s_of_a_clip(tmp_path):
    import soundfile

    data = tmp_path / "data"
    train = data / "dev_data" / "ToyCar" / "train"
    train.mkdir(parents=True)
    rng = np.random.default_rng(0)
    # An 11 s ToyCar-like clip and a 1 s one: the first is cut to 10 s, the second augmented whole, never padded.
    soundfile.write(train / "normal_id_01_00000000.wav", 0.1 * rng.standard_normal(11 * 16000), 16000)
    soundfile.write(train / "normal_id_01_00000001.wav", 0.1 * rng.standard_normal(16000), 16000)
    build_bank(data, tmp_path / "bank", progress=False)
    table = read_manifest(tmp_path / "bank").sort_values("source")
    lengths = [soundfile.info(tmp_path / "bank" / o).frames for o in table["output"]]
    assert lengths == [10 * 16000, 16000]


def test_bank_pairs_map_sources_to_existing_augmentations(tiny_dcase, reference_bank, tmp_path):
    out = tmp_path / "bank"
    shutil.copytree(reference_bank[0], out)
    sources = _train_clips(tiny_dcase)[:2]
    stem = Path(sources[1]).stem
    (out / f"audio/fan/{stem}__aug1.wav").unlink()
    pairs = BankPairs(out)
    assert pairs.sources == sources and len(pairs) == 2
    assert pairs[sources[0]] == [out / f"audio/fan/{Path(sources[0]).stem}__aug{k}.wav" for k in (0, 1)]
    assert pairs[sources[1]] == [out / f"audio/fan/{stem}__aug0.wav"]
    rng = np.random.default_rng(0)
    assert {pairs.draw(sources[0], rng) for _ in range(50)} == set(pairs[sources[0]])
    other = _train_clips(tiny_dcase)[5]
    assert other not in pairs and pairs.get(other) == []
    with pytest.raises(KeyError, match="no augmentation in bank"):
        pairs[other]


def test_prompt_library_records_which_bank_used_which_prompt(tiny_dcase, tmp_path):
    lib_path = tmp_path / "prompts.yaml"
    lib = PromptLibrary(lib_path)
    for pid in ("p1", "p2", "p3", "p4"):
        lib.remove(pid)
    _build(tiny_dcase, tmp_path / "my-bank", prompts=lib_path, limit=1, per_clip=4)
    used = set(read_manifest(tmp_path / "my-bank")["prompt"])
    assert used <= {PAPER_PROMPTS[4], PAPER_PROMPTS[5]}
    marked = {p["text"] for p in PromptLibrary(lib_path).list() if p["used_by"] == ["my-bank"]}
    assert marked == used


def test_a_text_file_of_prompts_and_bad_arguments(tiny_dcase, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# mine\nadd the rumble of rock crushers in a quarry\n")
    _build(tiny_dcase, tmp_path / "b", prompts=prompts, limit=1, per_clip=1)
    assert list(read_manifest(tmp_path / "b")["prompt"]) == ["add the rumble of rock crushers in a quarry"]
    with pytest.raises(FileNotFoundError, match="missing.yaml: prompt file not found"):
        _build(tiny_dcase, tmp_path / "c", prompts=tmp_path / "missing.yaml")
    with pytest.raises(BankError, match="--model applies to the audioldm backend"):
        _build(tiny_dcase, tmp_path / "d", model="cvssp/audioldm-s-full-v2")
    with pytest.raises(BankError, match="per_clip"):
        _build(tiny_dcase, tmp_path / "e", per_clip=0)
    with pytest.raises(FileNotFoundError, match="no manifest.csv"):
        read_manifest(tmp_path)


def test_cli_augment_writes_a_bank(tiny_dcase, tmp_path, capsys):
    out = tmp_path / "cli-bank"
    assert cli.main(["augment", "--data", str(tiny_dcase), "--out", str(out), "--limit", "1", "--snr", "3:3",
                     "--seed", "9"]) == 0
    assert "1 written" in capsys.readouterr().out
    table = read_manifest(out)
    assert table["snr_db"].tolist() == [3.0] and (out / "bank.json").is_file()


def test_audioldm_backend_runs_end_to_end_with_a_tiny_saved_pipeline(tiny_dcase, tmp_path):
    pytest.importorskip("diffusers", reason="the AudioLDM backend needs diffusers")
    from rcmae.augment.audioldm_testing import build_tiny_pipeline

    model = build_tiny_pipeline(tmp_path / "tiny-audioldm")
    out = tmp_path / "ldm-bank"
    summary = build_bank(tiny_dcase, out, backend="audioldm", model=str(model), limit=1, per_clip=2, steps=(2, 3),
                         t0=0.5, guidance=2.5, device="cpu", progress=False)
    assert "2 written" in summary
    table = read_manifest(out)
    assert set(table["backend"]) == {"audioldm"} and set(table["model_id"]) == {str(model)}
    assert table["steps"].between(2, 3).all() and (table["t0"] == 0.5).all() and (table["guidance"] == 2.5).all()
    assert table["snr_db"].isna().all()
    for row in table.itertuples():
        got, _ = sf.read(out / row.output)
        source, _ = sf.read(row.source)
        assert got.shape == source.shape and np.isfinite(got).all()
        assert _sha(out / row.output) == row.sha256
    # Deterministic: a second bank from the same settings has the same bytes.
    build_bank(tiny_dcase, tmp_path / "again", backend="audioldm", model=str(model), limit=1, per_clip=1,
               steps=(2, 3), device="cpu", progress=False)
    assert read_manifest(tmp_path / "again")["sha256"][0] == table["sha256"][0]


def test_clip_seed_depends_on_seed_clip_and_k_only():
    a = bank_mod.clip_seed(0, "fan/train/x.wav", 0)
    assert a == bank_mod.clip_seed(0, "fan/train/x.wav", 0)
    assert len({a, bank_mod.clip_seed(1, "fan/train/x.wav", 0), bank_mod.clip_seed(0, "fan/train/y.wav", 0),
                bank_mod.clip_seed(0, "fan/train/x.wav", 1)}) == 4
    assert 0 <= a < 2**63
