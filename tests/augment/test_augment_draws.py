"""K-copy banks and the per-epoch copy draw: deterministic per seed, covering every copy, recorded, replayable."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import write_tiny_dcase

from rcmae.augment.bank import BankPairs, build_bank, copy_index, read_manifest
from rcmae.data.datasets import make_generator
from rcmae.run import trainset as train
from rcmae.training import stages
from rcmae.training.pairs import PairSource, draw_copies

TINY = [
    "model.embed_dim=32", "model.depth=1", "model.heads=2", "model.decoder_embed_dim=32", "model.decoder_depth=1",
    "model.decoder_heads=2", "model.proj_dim=32", "model.mlp_ratio=2.0", "pretrain.batch_size=8",
    "finetune.batch_size=8", "score.recon_masks=2", "pretrain.crop_frames=null", "pretrain.crops_per_clip=1",
    "data.duration=1.0", "model.n_frames=32", "pretrain.specaugment.time_width=8",
]


@pytest.fixture(scope="module")
def short_bank(tmp_path_factory):
    root = tmp_path_factory.mktemp("draws")
    data = write_tiny_dcase(root / "data", seconds=1.0, seed=5)
    bank = root / "bank"
    build_bank(data, bank, backend="procedural", per_clip=3, seed=0, progress=False)
    return data, bank


def test_draw_is_deterministic_per_seed_and_covers_every_copy():
    counts = [1, 2, 3, 5, 0, 4]
    a = np.stack([draw_copies(7, e, counts) for e in range(200)])
    b = np.stack([draw_copies(7, e, counts) for e in range(200)])
    assert np.array_equal(a, b)
    assert not np.array_equal(a, np.stack([draw_copies(8, e, counts) for e in range(200)]))
    # Epochs differ from each other (a new random copy per epoch, not one fixed copy).
    assert len({tuple(row) for row in a}) > 60  # of 120 possible combinations
    for i, n in enumerate(counts):
        if n == 0:
            assert set(a[:, i]) == {-1}
            continue
        seen, freq = np.unique(a[:, i], return_counts=True)
        assert list(seen) == list(range(n))  # every copy is drawn, none outside 0..n-1
        # Uniform: each count within 5 binomial standard deviations of 200 / n.
        p = 1.0 / n
        assert np.all(np.abs(freq - 200 * p) <= 5 * np.sqrt(200 * p * (1 - p)) + 1e-9)


def test_k1_banks_always_pair_with_their_only_copy():
    assert np.array_equal(draw_copies(0, 3, [1] * 10), np.zeros(10, dtype=np.int64))


def test_bank_holds_k_copies_each_with_its_own_prompt_seed_and_order(short_bank):
    data, bank = short_bank
    table = read_manifest(bank)
    assert len(table) == 24 * 3
    per_source = table.groupby("source")
    assert per_source.size().eq(3).all()
    assert per_source["seed"].nunique().eq(3).all()  # each copy its own seed
    pairs = BankPairs(bank)
    for source in pairs.sources:
        assert [copy_index(p) for p in pairs[source]] == [0, 1, 2]
    assert copy_index("x/normal_id_00_00000001__aug12.wav") == 12 and copy_index("plain.wav") == -1


def test_pretraining_records_the_draw_and_replay_reproduces_it(short_bank, tmp_path):
    data, bank = short_bank
    run = stages.pretrain(data, tmp_path / "a", aug=str(bank), overrides=TINY + ["seed=3"], epochs=3,
                         progress=False, fit_scores=False)
    draws = train.read_augment_draws(run)
    copies = json.loads((run / train.COPIES_FILE).read_text())
    counts = [len(c["copies"]) for c in copies["clips"]]
    assert counts == [3] * 24
    assert sorted(draws) == [0, 1, 2]
    for epoch, draw in draws.items():
        assert np.array_equal(draw, draw_copies(3, epoch, counts))
    # Each recorded index names a real copy of that clip (its own source's wav).
    for i, clip in enumerate(copies["clips"]):
        path = clip["copies"][draws[0][i]]
        assert copy_index(path) == draws[0][i] and BankPairs(bank)[clip["source"]][draws[0][i]].as_posix() == path

    # Another seed draws otherwise, unless it replays the first run's draw.
    other = stages.pretrain(data, tmp_path / "b", aug=str(bank), overrides=TINY + ["seed=4"], epochs=3,
                           progress=False, fit_scores=False)
    assert any(not np.array_equal(train.read_augment_draws(other)[e], draws[e]) for e in draws)
    replay = stages.pretrain(data, tmp_path / "c", aug=str(bank), overrides=TINY + ["seed=4"], epochs=3,
                            progress=False, fit_scores=False, replay=run)
    assert all(np.array_equal(train.read_augment_draws(replay)[e], draws[e]) for e in draws)


def test_twins_follow_the_epoch_draw():
    bank = {0: torch.randn(3, 128, 64), 1: torch.randn(2, 128, 64)}
    source = PairSource(bank=bank, seed=1)
    draw = source.set_epoch(5, n_clips=3)
    assert np.array_equal(draw, draw_copies(1, 5, [3, 2, 0]))
    x = torch.randn(3, 128, 64)
    out = source.twins(x, torch.tensor([0, 1, 2]), make_generator(0))
    assert torch.equal(out[0], bank[0][draw[0]]) and torch.equal(out[1], bank[1][draw[1]])
    assert out[2].shape == x[2].shape and draw[2] == -1
    with pytest.raises(KeyError, match="no epoch 9"):
        PairSource(bank=bank, replay={0: draw}).set_epoch(9, 3)
