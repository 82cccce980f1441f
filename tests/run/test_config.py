"""Config presets, YAML round trip, typed overrides and their one-line errors."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from rcmae.models.rcmae import RCMAE, count_parameters
from rcmae.run.config import (
    ConfigError,
    PretrainConfig,
    RunConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)


@pytest.mark.parametrize("preset", ["tiny", "paper", "paper-light", "audiomae"])
def test_presets_load_and_build(preset):
    cfg = load_config(preset)
    assert isinstance(cfg, RunConfig)
    grid_f, grid_t = cfg.model.grid
    # The model sees every frame the front-end makes (padding only, never silent truncation), or exactly one crop.
    if cfg.pretrain.crop_frames is None:
        assert cfg.model.n_frames >= cfg.features.n_frames(int(cfg.data.duration * cfg.data.sample_rate))
    else:
        assert cfg.model.n_frames == cfg.pretrain.crop_frames
    assert cfg.model.n_mels == cfg.features.n_mels
    if preset in ("paper", "paper-light", "audiomae"):
        assert grid_f * grid_t == 512  # the paper's 512 tokens
        assert (cfg.model.embed_dim, cfg.model.depth, cfg.model.heads) == (384, 12, 6)
        assert (cfg.pretrain.batch_size, cfg.pretrain.lr, cfg.pretrain.epochs) == (128, 1e-4, 400)
        assert cfg.pretrain.optimizer == "adam"
    else:
        assert count_parameters(RCMAE(cfg.model)) < 1_000_000
        assert cfg.pretrain.lr == pytest.approx(1e-3) and cfg.pretrain.schedule == "cosine"
    assert (cfg.pretrain.w_nce, cfg.pretrain.w_vcr, cfg.pretrain.w_mae, cfg.pretrain.tau) == (0.3, 0.3, 0.4, 0.05)


def test_round_trip_dict_and_yaml(tmp_path):
    cfg = load_config("tiny", ["pretrain.crop_frames=64", "seed=7", "pretrain.specaugment.time_width=8"])
    assert config_from_dict(config_to_dict(cfg)) == cfg
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(path) == cfg
    assert yaml.safe_load(path.read_text())["pretrain"]["crop_frames"] == 64
    # A partial YAML keeps every default it does not name.
    part = tmp_path / "part.yaml"
    part.write_text("pretrain:\n  epochs: 3\n")
    loaded = load_config(part)
    assert loaded.pretrain == dataclasses.replace(PretrainConfig(), epochs=3)


def test_overrides_are_typed_by_field():
    cfg = load_config("tiny", [
        "pretrain.lr=1e-2", "pretrain.epochs=5", "finetune.freeze_encoder=true", "pretrain.crop_frames=48",
        "score.knn_space=pretrain", "features.fmax=7000", "pretrain.grad_clip=null",
    ])
    assert cfg.pretrain.lr == 0.01 and isinstance(cfg.pretrain.lr, float)
    assert cfg.pretrain.epochs == 5 and isinstance(cfg.pretrain.epochs, int)
    assert cfg.finetune.freeze_encoder is True
    assert cfg.pretrain.crop_frames == 48
    assert cfg.score.knn_space == "pretrain"
    assert cfg.features.fmax == 7000.0 and isinstance(cfg.features.fmax, float)
    assert cfg.pretrain.grad_clip is None
    # The paper stays paper-faithful (idprob, its loss weights); tiny's default is the training-free ensemble
    # of decision 1 (bench/results/decisions.md).
    paper = load_config("paper")
    assert paper.score.default_scorer == "idprob" and cfg.score.default_scorer == "ensemble"
    assert cfg.score.ensemble == ["stats_maha", "frame_pca"]
    assert (paper.pretrain.w_nce, paper.pretrain.w_vcr, paper.pretrain.w_mae) == (0.3, 0.3, 0.4)
    assert (paper.finetune.w_supcon, paper.finetune.w_ce) == (1.0, 1.0)
    scored = load_config("tiny", ["score.ensemble=[knn_joint, recon]", "score.maha_weight=2"])
    assert scored.score.ensemble == ["knn_joint", "recon"] and scored.score.maha_weight == 2.0
    again = apply_overrides(cfg, ["pretrain.crop_frames=none"])
    assert again.pretrain.crop_frames is None and cfg.pretrain.crop_frames == 48  # a copy, not in place


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("pretrain.lrr=1", "valid keys: pretrain.epochs"),
        ("pretrainn.lr=1", "valid keys: features"),
        ("pretrain.epochs=2.5", "pretrain.epochs: expected an integer"),
        ("pretrain.schedule=linear", "'cosine', 'constant'"),
        ("finetune.freeze_encoder=maybe", "expected true or false"),
        ("model.embed_dim=abc", "model.embed_dim: expected an integer"),
        ("pretrain=3", "is a section"),
        ("pretrain.lr", "not KEY=VALUE"),
        ("model.embed_dim=30", "multiple of 4"),
        ("score.recon_topk=0", "score.recon_topk=0.0: must be in (0, 1]"),
        ("score.maha_weight=-1", "must be >= 0"),
        ("score.ensemble=[knn,bogus]", "list one or more of idprob, knn, recon"),
        ("score.default_scorer=mahal", "'maha'"),
    ],
)
def test_override_errors_are_one_line(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", [override])
    message = str(err.value)
    assert needle in message
    assert "\n" not in message


def test_preset_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'tinny'; valid presets: audiomae, idprob, margin, paper, "
                       "paper\\+, paper-light, tiny"):
        load_config("tinny")
    with pytest.raises(FileNotFoundError, match="preset file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain:\n  epocs: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(bad) in str(err.value) and "'epocs'" in str(err.value) and "pretrain.epochs" in str(err.value)
