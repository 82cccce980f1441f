"""The official DCASE 2020 Task 2 autoencoder baseline, reproduced in PyTorch.

Facts taken from y-kawagu/dcase2020_task2_baseline (Hitachi, 2020), the reference the challenge
tables cite ("AE baseline": 73.5 / ~59.7 % average AUC / pAUC on the development set):

- ``common.py`` ``file_to_vector_array``: ``librosa.feature.melspectrogram(y, sr, n_fft=1024,
  hop_length=512, n_mels, power=2.0)`` with librosa's other defaults (periodic Hann window,
  centred frames with reflect padding in the librosa 0.6 it pinned, Slaney mel 0 .. sr/2), then
  ``20.0 / power * log10(S + sys.float_info.epsilon)``; ``frames`` consecutive frames are
  concatenated frame by frame into vectors of ``n_mels * frames`` values, and a clip of T frames
  gives ``T - frames + 1`` vectors (313 frames -> 309 vectors for a 10 s clip at 16 kHz).
- ``baseline.yaml``: ``frames: 5``, ``n_fft: 1024``, ``hop_length: 512``, ``power: 2.0``; fit with
  ``optimizer: adam``, ``loss: mean_squared_error``, ``epochs: 100``, ``batch_size: 512``,
  ``shuffle: True``, ``validation_split: 0.1``. The released challenge baseline uses 128 mel bins
  (640-d input vectors); an early commit of the file had 64.
- ``keras_model.py`` ``get_model``: Dense(128) -> BatchNormalization -> ReLU four times, Dense(8)
  -> BatchNormalization -> ReLU, four more Dense(128) -> BatchNormalization -> ReLU, and a linear
  Dense(input_dim) output.
- ``00_train.py``: one model per machine type, trained on all of that type's training clips (its
  machine IDs pooled); ``01_test.py``: a clip's score is ``mean(mean(square(x - model(x)), axis=1))``,
  the mean over the clip's vectors of each vector's mean squared error.

Keras defaults reproduced here because they change the numbers: Adam lr 0.001, betas (0.9, 0.999)
and epsilon 1e-7; BatchNormalization momentum 0.99 (PyTorch's ``momentum=0.01``) and epsilon 1e-3;
Glorot-uniform weights and zero biases; ``validation_split`` holds out the *last* 10 % of the
vectors (in file order, before shuffling) and reports their loss in inference mode.

One documented difference: rcmae has a single log-mel implementation (``rcmae.data.features.LogMel``),
which computes ``10 * log10(max(S, amin))``; with ``amin = sys.float_info.epsilon`` this differs from
``10 * log10(S + eps)`` only where ``S`` is within a few orders of magnitude of 2.2e-16 (digital
silence), i.e. by less than 1e-3 dB on any real recording.
"""

from __future__ import annotations

import io
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from rcmae.data.features import LogMel, LogMelConfig
from rcmae.files import atomic_write_bytes, write_json
from rcmae.run.checkpoint import CheckpointError, load_checkpoint


@dataclass
class AEConfig:
    """Settings of the DCASE 2020 AE baseline; defaults are the official ones."""

    sample_rate: int = 16000
    n_mels: int = 128
    frames: int = 5
    n_fft: int = 1024
    hop_length: int = 512
    power: float = 2.0
    hidden: int = 128
    bottleneck: int = 8
    epochs: int = 100
    batch_size: int = 512
    validation_split: float = 0.1
    lr: float = 1e-3
    shuffle: bool = True

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"ae.frames must be >= 1, got {self.frames}")
        if self.epochs < 0:
            raise ValueError(f"ae.epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(f"ae.batch_size must be >= 2 (BatchNorm needs two vectors), got {self.batch_size}")
        if not 0.0 <= self.validation_split < 1.0:
            raise ValueError(f"ae.validation_split must be in [0, 1), got {self.validation_split}")

    @property
    def input_dim(self) -> int:
        return self.n_mels * self.frames

    def logmel_config(self) -> LogMelConfig:
        """The baseline's front-end expressed in rcmae's LogMel parameters."""
        return LogMelConfig(
            sample_rate=self.sample_rate,
            n_fft=self.n_fft,
            win_length=self.n_fft,
            hop_length=self.hop_length,
            n_mels=self.n_mels,
            fmin=0.0,
            fmax=self.sample_rate / 2,
            power=self.power,
            center=True,
            pad_mode="reflect",
            amin=sys.float_info.epsilon,
            top_db=None,
        )


def vectorize(logmel: torch.Tensor, frames: int = 5) -> torch.Tensor:
    """Concatenate ``frames`` consecutive frames: ``[B, F, T]`` -> ``[B, T - frames + 1, F * frames]``.

    Vector ``j`` is frame ``j``'s F values, then frame ``j + 1``'s, ... (the baseline's layout).
    """
    squeeze = logmel.ndim == 2
    x = logmel[None] if squeeze else logmel
    if x.shape[-1] < frames:
        raise ValueError(f"a clip of {x.shape[-1]} frames is shorter than the {frames} frames of one AE vector")
    # unfold: [B, F, V, frames] -> [B, V, frames, F] so that each frame's bins stay contiguous.
    v = x.unfold(-1, frames, 1).permute(0, 2, 3, 1).reshape(x.shape[0], -1, frames * x.shape[1])
    return v[0] if squeeze else v


class DenseAE(nn.Module):
    """The baseline's dense autoencoder: 640-128-128-128-128-8-128-128-128-128-640.

    Every hidden layer is Linear -> BatchNorm1d -> ReLU (Keras BN defaults); the output is linear.

    Args:
        input_dim: vector size (n_mels * frames, 640 by default).
        hidden: width of the hidden layers (128).
        bottleneck: width of the code layer (8).
        n_hidden: hidden layers on each side of the code layer (4).
        generator: seeds the Glorot-uniform initialisation.
    """

    def __init__(
        self,
        input_dim: int = 640,
        hidden: int = 128,
        bottleneck: int = 8,
        n_hidden: int = 4,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        widths = [input_dim] + [hidden] * n_hidden + [bottleneck] + [hidden] * n_hidden
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            # Keras: momentum 0.99 on the moving average is PyTorch momentum 0.01; epsilon 1e-3.
            layers += [nn.Linear(w_in, w_out), nn.BatchNorm1d(w_out, eps=1e-3, momentum=0.01), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], input_dim))
        self.layers = nn.Sequential(*layers)
        for m in self.layers:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight, generator=generator)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@torch.no_grad()
def clip_scores(model: DenseAE, logmels: torch.Tensor, frames: int = 5, batch_clips: int = 64) -> np.ndarray:
    """Anomaly score per clip: mean over its vectors of each vector's mean squared reconstruction error."""
    model.eval()
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(logmels), batch_clips):
        v = vectorize(logmels[start : start + batch_clips].to(device), frames)  # [B, V, D]
        err = (v - model(v.reshape(-1, v.shape[-1])).reshape(v.shape)).square().mean(dim=-1)  # [B, V]
        scores.append(err.mean(dim=-1).double().cpu().numpy())
    return np.concatenate(scores) if scores else np.zeros(0)


def _vector_batch(logmels: torch.Tensor, ids: torch.Tensor, n_vec: int, frames: int) -> torch.Tensor:
    """Vectors number ``ids`` (file order: clip-major) gathered from ``logmels [n, F, T]`` -> ``[B, F*frames]``."""
    clip, start = ids // n_vec, ids % n_vec
    cols = start[:, None] + torch.arange(frames)  # [B, frames]
    # Advanced indices around a slice put their dims first: [B, frames, F].
    return logmels[clip[:, None], :, cols].reshape(len(ids), -1)


def train_ae(
    logmels: torch.Tensor,
    config: AEConfig,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "ae",
) -> tuple[DenseAE, dict]:
    """Fit one AE on all vectors of ``logmels [n, F, T]`` as Keras ``fit`` would; returns (model, history)."""
    gen = torch.Generator().manual_seed(seed)
    model = DenseAE(config.input_dim, config.hidden, config.bottleneck, generator=gen).to(device)
    n_vec = logmels.shape[-1] - config.frames + 1
    if n_vec < 1:
        raise ValueError(f"clips of {logmels.shape[-1]} frames are shorter than the AE's {config.frames} frames")
    total = len(logmels) * n_vec
    # Keras holds out the tail of the data, in file order, before any shuffling.
    split_at = int(total * (1.0 - config.validation_split))
    if split_at < 2:
        raise ValueError(f"only {total} training vectors; the AE needs at least 2 after the validation split")
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.999), eps=1e-7)
    history: dict[str, list[float]] = {"loss": [], "val_loss": []}
    val_ids = torch.arange(split_at, total)
    for _ in tqdm(range(config.epochs), desc=desc, unit="epoch", disable=not progress):
        model.train()
        order = torch.randperm(split_at, generator=gen) if config.shuffle else torch.arange(split_at)
        seen, loss_sum = 0, 0.0
        for start in range(0, split_at, config.batch_size):
            ids = order[start : start + config.batch_size]
            if len(ids) < 2:
                # BatchNorm cannot normalise one vector in training mode; it is one vector in an epoch.
                continue
            x = _vector_batch(logmels, ids, n_vec, config.frames).to(device)
            loss = nn.functional.mse_loss(model(x), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(ids)
            loss_sum += float(loss.detach()) * len(ids)
        history["loss"].append(loss_sum / max(seen, 1))
        if len(val_ids):
            history["val_loss"].append(_val_loss(model, logmels, val_ids, n_vec, config))
    return model, history


@torch.no_grad()
def _val_loss(model: DenseAE, logmels: torch.Tensor, ids: torch.Tensor, n_vec: int, config: AEConfig) -> float:
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    for start in range(0, len(ids), 4096):
        x = _vector_batch(logmels, ids[start : start + 4096], n_vec, config.frames).to(device)
        total += float(nn.functional.mse_loss(model(x), x, reduction="sum")) / x.shape[1]
    return total / len(ids)


def clip_seconds(path: str) -> float:
    """Length of a clip in seconds (ToyCar clips are 11 s, the others 10 s)."""
    from rcmae.data.audio import audio_info

    return audio_info(path)["duration"]


def compute_logmels(
    paths: list[str], front: LogMel, duration: float, progress: bool = True, desc: str = "log-mel"
) -> tuple[torch.Tensor, list[str], list[tuple[str, str]]]:
    """Load ``paths`` (bad files skipped) and return (log-mel ``[n, F, T]``, kept paths, skipped (path, reason))."""
    from rcmae.data.datasets import compute_logmels as shared_logmels

    mels, kept, report = shared_logmels(paths, front, front.config.sample_rate, duration, progress=progress, desc=desc)
    return mels, kept, list(report.skipped)


def _atomic_torch_save(obj: dict, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def run_ae(
    index: pd.DataFrame,
    out: Path,
    epochs: int | None = None,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
    **overrides: object,
) -> tuple[pd.DataFrame, dict]:
    """Train one AE per machine type on ``index``'s train clips and score its test clips.

    Models go to ``out/models/model_<type>.pt`` (state_dict + config + history); a model that
    already exists with the same settings is reused, so an interrupted run resumes per type.

    Returns:
        (scores table with ``path, machine_type, machine_id, label, score``, info dict with the
        per-type validation losses and the skipped files).
    """
    config = AEConfig(**overrides)
    if epochs is not None:
        config.epochs = int(epochs)
        config.__post_init__()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    front = LogMel(config.logmel_config())
    models_dir = Path(out) / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    rows, info = [], {"config": asdict(config), "seed": seed, "types": {}, "skipped": []}
    for machine_type, sub in index.groupby("machine_type", sort=True):
        train = sub[sub["split"] == "train"].sort_values("path")
        test = sub[sub["split"] == "test"].sort_values("path")
        if train.empty:
            info["skipped"].append((str(machine_type), "no training clips: no AE model for this machine type"))
            continue
        duration = clip_seconds(train["path"].iloc[0])
        model_path = models_dir / f"model_{machine_type}.pt"
        settings = {"config": asdict(config), "seed": seed, "n_train": len(train)}
        saved = None
        if model_path.is_file():
            try:
                saved = load_checkpoint(model_path, fix="it is a cache: the model is retrained")
            except CheckpointError as err:
                # A cache, not a result: a damaged or hostile file is reported and replaced, never run.
                print(f"ae: {err}", file=sys.stderr)
        if saved is not None and saved.get("settings") == settings:
            model = DenseAE(config.input_dim, config.hidden, config.bottleneck).to(device)
            model.load_state_dict(saved["state_dict"])
            history = saved["history"]
        else:
            mels, _, skipped = compute_logmels(
                train["path"].tolist(), front, duration, progress=progress, desc=f"{machine_type} train"
            )
            info["skipped"] += skipped
            if len(mels) == 0:
                info["skipped"].append((str(machine_type), "every training clip was unreadable"))
                continue
            model, history = train_ae(mels, config, seed=seed, device=device, progress=progress, desc=machine_type)
            state = {k: v.cpu() for k, v in model.state_dict().items()}
            _atomic_torch_save({"state_dict": state, "settings": settings, "history": history}, model_path)
        info["types"][str(machine_type)] = {
            "n_train_clips": len(train),
            "final_loss": history["loss"][-1] if history["loss"] else None,
            "final_val_loss": history["val_loss"][-1] if history["val_loss"] else None,
            "model": str(model_path),
        }
        if progress and history["loss"]:
            val = f"{history['val_loss'][-1]:.4f}" if history["val_loss"] else "-"
            tqdm.write(f"{machine_type}: training loss {history['loss'][-1]:.4f}, validation loss {val} "
                       f"after {len(history['loss'])} epochs")
        if test.empty:
            continue
        mels, kept, skipped = compute_logmels(
            test["path"].tolist(), front, duration, progress=progress, desc=f"{machine_type} test"
        )
        info["skipped"] += skipped
        scores = clip_scores(model, mels, config.frames)
        kept_rows = test.set_index("path").loc[kept].reset_index()
        kept_rows["score"] = scores
        rows.append(kept_rows[["path", "machine_type", "machine_id", "label", "score"]])
    write_json(models_dir / "ae_info.json", info)
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["path", "machine_type", "machine_id", "label", "score"]
    )
    return table, info
