"""Run configuration: nested dataclasses filled from a YAML preset plus typed ``key=value`` overrides.

A preset is a YAML file in the top-level ``configs/`` folder (``tiny``, ``paper``, ``audiomae``) or
any YAML path. Every key must name a dataclass field: a typo stops with one line that lists the
valid keys, so a misspelt override never silently trains the wrong model.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rcmae.augment.specaugment import SpecAugmentConfig
from rcmae.data.features import LogMelConfig
from rcmae.models.margin import MarginConfig
from rcmae.models.rcmae import ModelConfig

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


class ConfigError(ValueError):
    """A bad preset, key or value; the message is one line naming the key and the fix."""


@dataclass
class StageConfig:
    """Optimisation settings both training stages share (defaults: the paper's Adam 1e-4, batch 128)."""

    epochs: int = 400
    batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_epochs: int = 0
    schedule: Literal["cosine", "constant"] = "constant"
    optimizer: Literal["adam", "adamw"] = "adam"


@dataclass
class PretrainConfig(StageConfig):
    """Self-supervised stage: MAE + InfoNCE + variance/covariance regularisation (paper Eq. 2-8)."""

    w_nce: float = 0.3
    w_vcr: float = 0.3
    w_mae: float = 0.4
    tau: float = 0.05
    # Mask ratio range and norm_pix_loss live in ModelConfig (the model draws its own masks).
    # Random time crops multiply the samples a small data set gives; None trains on whole clips.
    crop_frames: int | None = None
    crops_per_clip: int = 1
    specaugment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    grad_clip: float | None = None
    num_workers: int = 0


@dataclass
class FinetuneConfig(StageConfig):
    """Supervised stage: SupCon + cross-entropy over (machine_type, machine_id) classes (paper Eq. 9-10)."""

    epochs: int = 50
    w_supcon: float = 1.0
    w_ce: float = 1.0
    tau: float = 0.1
    freeze_encoder: bool = False
    # SpecAugment on the fine-tuning inputs (same settings as pretraining) regularises a small data set.
    augment: bool = True
    grad_clip: float | None = None
    # Choices the paper leaves open (the idprob study, docs/studies/idprob.md); the defaults are the paper's.
    label_smoothing: float = 0.0
    # Mixup of the fine-tuning log-mels (Beta(alpha, alpha) weight, folded to >= 0.5; 0 = off): the CE mixes both
    # labels, SupCon takes the dominant one.
    mixup_alpha: float = 0.0
    # Class-balanced batches: every batch draws the machine IDs equally often (with replacement).
    balanced: bool = False
    # "linear" (the paper) or "arcface": a cosine classifier with an additive angular margin in training.
    head: Literal["linear", "arcface"] = "linear"
    margin: float = 0.2
    scale: float = 16.0
    # The classes: "id"/"section" = one per machine ID (2020) or section (2021+); "attribute" = section + attribute
    # values; "auto" = a type's IDs/sections when it has more than one, else (DCASE 2023+) its attribute classes.
    classes: Literal["auto", "id", "section", "attribute"] = "auto"
    # Augmented pseudo-classes (rcmae/augment/pseudo.py): each (machine ID, transform) is its own class, e.g.
    # ["speed:0.97", "speed:1.03", "tilt:3"]; the identity is always class 0 of each ID. [] = off (the paper).
    pseudo_classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.pseudo_classes:
            from rcmae.augment.pseudo import parse_pseudo_classes

            parse_pseudo_classes(self.pseudo_classes)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"finetune.label_smoothing={self.label_smoothing}: must be in [0, 1)")
        if self.mixup_alpha < 0 or self.margin < 0 or self.scale <= 0:
            raise ValueError(f"finetune.mixup_alpha={self.mixup_alpha}, finetune.margin={self.margin}, "
                             f"finetune.scale={self.scale}: need alpha >= 0, margin >= 0, scale > 0")


@dataclass
class ScoreConfig:
    """Scorers and decision thresholds."""

    default_scorer: Literal["idprob", "knn", "recon", "knn_joint", "maha", "recon_topk", "knn_norm", "stats_knn",
                            "stats_maha", "frame_pca", "frame_maha", "ensemble"] = "idprob"
    knn_k: int = 1
    knn_space: Literal["finetune", "pretrain"] = "finetune"
    recon_masks: int = 8
    recon_mask_ratio: float = 0.75
    # knn_joint: weight of the standardised per-clip band statistics next to the unit-norm embedding.
    joint_weight: float = 1.0
    # maha: the same joint space, with its own weight (the Gaussian gains from a heavier statistics block).
    maha_weight: float = 4.0
    # recon_topk: fraction of the highest-error masked patches averaged (1.0 = every masked patch = recon).
    recon_topk: float = 0.1
    # ensemble: scorers combined after per-ID standardisation with their held-out normal training scores.
    # The presets choose their own (tiny: [stats_maha, frame_pca], by the generalization suite's mean); this
    # built-in list is what a config without a score section gets.
    ensemble: list[str] = field(default_factory=lambda: ["knn", "maha"])
    # frame_pca: principal components of the unit's 5-frame context vectors kept (the rest is the residual).
    frame_components: int = 32
    # stats_maha: standardise each band statistic with all normal training clips before the per-unit Ledoit-Wolf
    # Gaussian ("dimension"), or fit it on the statistics as they are ("none"); the shrinkage target (a scaled
    # identity) differs between the two (bench/results/decisions.md, decision 3).
    stats_scale: Literal["dimension", "none"] = "dimension"
    # DCASE 2021+ domain shift: knn/knn_joint/maha/stats_maha/frame_* keep separate source and target references
    # per unit and take the minimum score over them (rcmae/scorers/domains.py); false pools the domains.
    domain_banks: bool = True
    # idprob on a clip whose attribute class is unknown (bare evaluation names, or attributes never seen in
    # training) in a run with attribute classes: -log of the max ("max") or the sum ("sum", = p(section)) of its
    # section's attribute-class probabilities (docs/training.md).
    idprob_pool: Literal["max", "sum"] = "max"

    def __post_init__(self) -> None:
        if not 0.0 < self.recon_topk <= 1.0:
            raise ValueError(f"score.recon_topk={self.recon_topk}: must be in (0, 1]; e.g. 0.1 for the top 10%")
        if self.joint_weight < 0 or self.maha_weight < 0:
            raise ValueError(f"score.joint_weight={self.joint_weight}, score.maha_weight={self.maha_weight}: "
                             "must be >= 0 (0 = embedding only)")
        base = ("idprob", "knn", "recon", "knn_joint", "maha", "recon_topk", "knn_norm", "stats_knn", "stats_maha",
                "frame_pca", "frame_maha")
        if not self.ensemble or any(name not in base for name in self.ensemble):
            raise ValueError(f"score.ensemble={self.ensemble}: list one or more of {', '.join(base)}")
    threshold: Literal["gamma", "percentile"] = "gamma"
    threshold_q: float = 0.9
    batch_size: int = 32
    # idprob with pseudo-classes (finetune.pseudo_classes): "identity" scores -log p(own ID, unchanged | clip),
    # "marginal" -log sum_k p(own ID, transform k | clip). Window scores are combined by "mean" or "max".
    idprob_pseudo: Literal["identity", "marginal"] = "identity"
    idprob_windows: Literal["mean", "max"] = "mean"


@dataclass
class DataConfig:
    """How clips are read: sample rate, fixed duration, channel."""

    sample_rate: int = 16000
    duration: float = 10.0
    channel: int = 0


@dataclass
class RunConfig:
    """Everything a run needs; saved resolved as ``config.yaml`` in the run folder and in every checkpoint."""

    features: LogMelConfig = field(default_factory=LogMelConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    data: DataConfig = field(default_factory=DataConfig)
    seed: int = 0
    # "rcmae" (the paper's two stages) or "margin" (the angular-margin classifier, rcmae.models.margin; one stage
    # started by `rcmae pretrain`, which reads the `pretrain` section for its optimiser and the `margin` section).
    family: Literal["rcmae", "margin"] = "rcmae"
    margin: MarginConfig = field(default_factory=MarginConfig)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_describe(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; ``key`` names the field in errors."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1] or (Any,)
        items = [_coerce(v, item, key) if item is not Any else v for v in value]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _from_dict(tp, value, key + ".")
    return value


def _from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            valid = ", ".join(prefix + n for n in names)
            raise ConfigError(f"unknown config key {prefix}{key!r}; valid keys: {valid}")
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {err}") from err


def config_from_dict(data: dict) -> RunConfig:
    """Build a :class:`RunConfig` from a (possibly partial) nested dict; missing keys keep their defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    return _from_dict(RunConfig, data)


def config_to_dict(cfg: RunConfig) -> dict:
    """The config as plain nested dicts (YAML/JSON friendly; tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def _resolve_preset(preset: str | os.PathLike) -> Path:
    path = Path(preset)
    # A folder that happens to be called "tiny" is not a preset file: only files or YAML names are paths.
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: preset file not found; pass tiny, paper, audiomae or a YAML file path")
        return path
    named = CONFIG_DIR / f"{preset}.yaml"
    if not named.is_file():
        valid = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown preset {str(preset)!r}; valid presets: {', '.join(valid)} (or a YAML file path)")
    return named


def apply_overrides(cfg: RunConfig, overrides: typing.Iterable[str] = ()) -> RunConfig:
    """Return a copy of ``cfg`` with ``section.key=value`` overrides applied, each typed by its field.

    Values are parsed as YAML scalars (``1e-3``, ``true``, ``null``, ``[1, 2]``) and then checked
    against the dataclass annotation, so ``pretrain.epochs=2.5`` is an error, not a silent cast.
    """
    data = config_to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. pretrain.lr=1e-3)")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        # YAML reads "1e-3" as a string (it wants "1.0e-3"); numbers written either way are accepted.
        if isinstance(value, str):
            try:
                value = float(value) if any(c in value for c in ".eE") else int(value)
            except ValueError:
                pass
        parts = key.split(".")
        node, cls, prefix = data, RunConfig, ""
        for depth, part in enumerate(parts):
            names = [f.name for f in dataclasses.fields(cls)]
            if part not in names:
                raise ConfigError(
                    f"unknown config key {prefix}{part!r}; valid keys: {', '.join(prefix + n for n in names)}"
                )
            tp = _hints(cls)[part]
            if depth == len(parts) - 1:
                if dataclasses.is_dataclass(tp):
                    raise ConfigError(f"config key {key!r} is a section; set one of its fields ({key}.<field>=...)")
                node[part] = _coerce(value, tp, key)
            else:
                if not dataclasses.is_dataclass(tp):
                    raise ConfigError(f"config key {prefix}{part!r} is a value, not a section (in {key!r})")
                node, cls, prefix = node[part], tp, prefix + part + "."
    return config_from_dict(data)


def load_config(preset: str | os.PathLike = "tiny", overrides: typing.Iterable[str] = ()) -> RunConfig:
    """Load a preset (name in ``configs/`` or a YAML path) and apply ``key=value`` overrides.

    Args:
        preset: ``tiny``, ``paper``, ``audiomae`` or a path to a YAML file.
        overrides: strings like ``pretrain.lr=1e-3``.

    Returns:
        The resolved :class:`RunConfig`.
    """
    path = _resolve_preset(preset)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML ({first}); fix the file") from err
    try:
        cfg = config_from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
    return apply_overrides(cfg, list(overrides))


def dump_config(cfg: RunConfig) -> str:
    """The config as YAML text."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def save_config(cfg: RunConfig, path: str | os.PathLike) -> Path:
    """Write ``cfg`` as YAML atomically (temp file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(dump_config(cfg))
    os.replace(tmp, path)
    return path
