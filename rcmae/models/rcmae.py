"""The RC-MAE torch model: a ViT masked autoencoder over log-mel patches with a projection head.

Follows facebookresearch/mae ``models_mae.py`` in spirit (``forward_encoder`` / ``forward_decoder``,
``random_masking`` by argsort of noise, fixed 2-D sin-cos positions) with the patch grid derived from
:class:`ModelConfig` instead of hard-coded. Pure torch: no Lightning, no data loading.

Shapes: ``B`` batch, ``F`` mel bands, ``T`` frames, ``L`` tokens (``grid_f * grid_t``), ``P`` values per
patch (``patch_f * patch_t``), ``D`` token width.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from rcmae.models.losses import cosine_logits, masked_mse

__all__ = [
    "ModelConfig",
    "Output",
    "RCMAE",
    "PRESETS",
    "model_preset",
    "count_parameters",
    "clip_stats",
    "sincos_pos_embed_1d",
    "sincos_pos_embed_2d",
]


@dataclass
class ModelConfig:
    """Architecture of an :class:`RCMAE`. Defaults are the paper preset (128 mel x 320 frames, 512 tokens).

    Attributes:
        n_mels: Mel bands of the input (``F``).
        n_frames: Frames the model sees; shorter inputs are zero-padded (zero = the normalised mean).
        patch_f: Patch height in mel bands.
        patch_t: Patch width in frames.
        embed_dim: Encoder token width.
        depth: Encoder blocks.
        heads: Encoder attention heads.
        mlp_ratio: Hidden width of each block's MLP relative to the token width.
        decoder_embed_dim: Decoder token width.
        decoder_depth: Decoder blocks.
        decoder_heads: Decoder attention heads.
        proj_dim: Width of the embedding ``z`` that the contrastive losses and scorers use.
        n_classes: Machine-ID classes of the classifier head (0 = no head).
        norm_pix_loss: Reconstruct per-patch normalised targets (MAE's ``norm_pix_loss``).
        mask_ratio_min: Lower end of the per-batch mask ratio.
        mask_ratio_max: Upper end of the per-batch mask ratio.
        pool: How encoder tokens become one vector: ``"mean"`` over patch tokens or the ``"cls"`` token.
        stat_fusion: Concatenate per-clip band statistics (mean and std over time, ``2 * n_mels``) of the
            input to the pooled vector before the projection.
        dropout: Dropout inside the transformer blocks.
        head: Classifier over machine IDs: ``"linear"`` (the paper) or ``"cosine"`` (``head_scale`` times the
            cosine to each class centre; fine-tuning puts an ArcFace margin on it, ``finetune.head=arcface``).
        head_scale: Scale of the cosine head's logits.
    """

    n_mels: int = 128
    n_frames: int = 320
    patch_f: int = 16
    patch_t: int = 5
    embed_dim: int = 384
    depth: int = 12
    heads: int = 6
    mlp_ratio: float = 4.0
    # The paper: "The encoder and decoders are based on ViT ... with a depth of 12 layers and 6 heads"
    # (docs/model.md, decision table); `paper-light` keeps MAE's light 256 x 4 decoder.
    decoder_embed_dim: int = 384
    decoder_depth: int = 12
    decoder_heads: int = 6
    proj_dim: int = 512
    n_classes: int = 0
    norm_pix_loss: bool = False
    mask_ratio_min: float = 0.5
    mask_ratio_max: float = 0.75
    pool: str = "mean"
    stat_fusion: bool = False
    dropout: float = 0.0
    head: str = "linear"
    head_scale: float = 16.0

    def __post_init__(self) -> None:
        positive = ("n_mels", "n_frames", "patch_f", "patch_t", "embed_dim", "depth", "heads", "decoder_embed_dim",
                    "decoder_depth", "decoder_heads", "proj_dim")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ModelConfig.{name}={value!r}: must be a positive integer")
        if not isinstance(self.n_classes, int) or self.n_classes < 0:
            raise ValueError(f"ModelConfig.n_classes={self.n_classes!r}: must be an integer >= 0 (0 = no head)")
        if self.n_mels % self.patch_f:
            raise ValueError(f"ModelConfig.n_mels={self.n_mels} is not a multiple of patch_f={self.patch_f}; "
                             "pick a patch_f that divides n_mels")
        if self.n_frames % self.patch_t:
            raise ValueError(f"ModelConfig.n_frames={self.n_frames} is not a multiple of patch_t={self.patch_t}; "
                             "pad n_frames up to a multiple of patch_t")
        # The 2-D sin-cos table splits the width in two halves of sin/cos pairs.
        if self.embed_dim % 4:
            raise ValueError(f"ModelConfig.embed_dim={self.embed_dim}: must be a multiple of 4 for 2-D sin-cos "
                             "positions")
        if self.decoder_embed_dim % 4:
            raise ValueError(f"ModelConfig.decoder_embed_dim={self.decoder_embed_dim}: must be a multiple of 4 for "
                             "2-D sin-cos positions")
        if self.embed_dim % self.heads:
            raise ValueError(f"ModelConfig.embed_dim={self.embed_dim} is not divisible by heads={self.heads}")
        if self.decoder_embed_dim % self.decoder_heads:
            raise ValueError(f"ModelConfig.decoder_embed_dim={self.decoder_embed_dim} is not divisible by "
                             f"decoder_heads={self.decoder_heads}")
        if not self.mlp_ratio > 0:
            raise ValueError(f"ModelConfig.mlp_ratio={self.mlp_ratio}: must be > 0")
        if not 0.0 <= self.mask_ratio_min <= self.mask_ratio_max < 1.0:
            raise ValueError(f"ModelConfig.mask_ratio_min={self.mask_ratio_min}, "
                             f"mask_ratio_max={self.mask_ratio_max}: need 0 <= min <= max < 1")
        if self.pool not in ("mean", "cls"):
            raise ValueError(f"ModelConfig.pool={self.pool!r}: must be 'mean' or 'cls'")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout={self.dropout}: must be in [0, 1)")
        if self.head not in ("linear", "cosine") or not self.head_scale > 0:
            raise ValueError(f"ModelConfig.head={self.head!r}, head_scale={self.head_scale}: head must be 'linear' "
                             "or 'cosine' and head_scale > 0")

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid ``(grid_f, grid_t)``: patches along mel and along time."""
        return self.n_mels // self.patch_f, self.n_frames // self.patch_t

    @property
    def num_patches(self) -> int:
        """Number of patch tokens ``L`` (the class token not counted)."""
        grid_f, grid_t = self.grid
        return grid_f * grid_t

    @property
    def patch_dim(self) -> int:
        """Values per patch ``P = patch_f * patch_t``."""
        return self.patch_f * self.patch_t


class Output(NamedTuple):
    """What :meth:`RCMAE.forward` returns (eval use).

    Attributes:
        embedding: ``z`` ``[B, proj_dim]``.
        logits: Machine-ID logits ``[B, n_classes]``, or ``None`` when the model has no classifier head.
    """

    embedding: Tensor
    logits: Tensor | None


def sincos_pos_embed_1d(dim: int, pos: Tensor) -> Tensor:
    """Sin-cos embedding of positions: ``[len(pos), dim]``, first half ``sin(pos * w_k)``, second ``cos``.

    ``w_k = 10000 ** (-k / (dim / 2))`` for ``k = 0 .. dim/2 - 1`` (as MAE's ``get_1d_sincos_pos_embed``).
    """
    if dim % 2:
        raise ValueError(f"sincos_pos_embed_1d: dim={dim} must be even")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = pos.to(torch.float64).reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_pos_embed_2d(dim: int, grid_f: int, grid_t: int) -> Tensor:
    """Fixed 2-D sin-cos table for a rectangular grid: ``[grid_f * grid_t, dim]`` (float32).

    Tokens are ordered row-major (mel row ``i``, time column ``j`` -> index ``i * grid_t + j``), the same order
    as :meth:`RCMAE.patchify`. The first ``dim / 2`` values encode the mel row, the last ``dim / 2`` the time
    column.
    """
    if dim % 4:
        raise ValueError(f"sincos_pos_embed_2d: dim={dim} must be a multiple of 4")
    rows = torch.arange(grid_f).repeat_interleave(grid_t)
    cols = torch.arange(grid_t).repeat(grid_f)
    table = torch.cat([sincos_pos_embed_1d(dim // 2, rows), sincos_pos_embed_1d(dim // 2, cols)], dim=1)
    return table.float()


def clip_stats(x: Tensor) -> Tensor:
    """Per-clip band statistics: ``x [B, F, T]`` -> ``[B, 2F]`` = mean over time of each band, then std.

    The std is the population std (``unbiased=False``) so that a one-frame clip gives 0, not NaN. It is taken
    as the root of the mean squared deviation, which equals ``x.std(dim=-1, unbiased=False)`` to rounding and is
    quicker than torch's std kernel on CPU (part of a training step's speed-up, bench/results/training-step.md);
    a band with zero spread gets a zero gradient, as ``std``'s own backward gives it, not NaN.
    """
    mean = x.mean(dim=-1)
    var = (x - mean.unsqueeze(-1)).square().mean(dim=-1)
    # sqrt's slope is infinite at 0; the where keeps that branch out of the gradient there.
    std = torch.where(var > 0, var.clamp_min(torch.finfo(var.dtype).tiny).sqrt(), 0.0)
    return torch.cat([mean, std], dim=-1)


def _blocks(dim: int, depth: int, heads: int, mlp_ratio: float, dropout: float) -> nn.ModuleList:
    """Pre-norm ViT blocks (LayerNorm -> attention, LayerNorm -> GELU MLP), as timm's ``Block``."""
    return nn.ModuleList(
        nn.TransformerEncoderLayer(dim, heads, dim_feedforward=int(dim * mlp_ratio), dropout=dropout,
                                   activation="gelu", batch_first=True, norm_first=True)
        for _ in range(depth)
    )


class RCMAE(nn.Module):
    """ViT masked autoencoder over log-mel patches, with a projection to ``z`` and an optional ID classifier.

    Input is a normalised log-mel batch ``x [B, F, T]`` with ``F = n_mels`` and ``T <= n_frames``
    (shorter inputs are zero-padded). The encoder always carries a class token at position 0, as MAE does;
    ``pool`` chooses whether ``z`` comes from the mean of the patch tokens or from that class token.

    Args:
        config: The architecture.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        grid_f, grid_t = c.grid
        # Patch embedding: a Conv2d whose kernel equals its stride is a Linear applied to each patch.
        self.patch_embed = nn.Conv2d(1, c.embed_dim, kernel_size=(c.patch_f, c.patch_t),
                                     stride=(c.patch_f, c.patch_t))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        # Fixed positions (buffers, not parameters); the class token gets position zeros as in MAE.
        pos = sincos_pos_embed_2d(c.embed_dim, grid_f, grid_t)
        self.register_buffer("pos_embed", torch.cat([torch.zeros(1, c.embed_dim), pos]).unsqueeze(0),
                             persistent=False)
        self.blocks = _blocks(c.embed_dim, c.depth, c.heads, c.mlp_ratio, c.dropout)
        self.norm = nn.LayerNorm(c.embed_dim)

        self.decoder_embed = nn.Linear(c.embed_dim, c.decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_embed_dim))
        dec_pos = sincos_pos_embed_2d(c.decoder_embed_dim, grid_f, grid_t)
        self.register_buffer("decoder_pos_embed",
                             torch.cat([torch.zeros(1, c.decoder_embed_dim), dec_pos]).unsqueeze(0),
                             persistent=False)
        self.decoder_blocks = _blocks(c.decoder_embed_dim, c.decoder_depth, c.decoder_heads, c.mlp_ratio, c.dropout)
        self.decoder_norm = nn.LayerNorm(c.decoder_embed_dim)
        self.decoder_pred = nn.Linear(c.decoder_embed_dim, c.patch_dim)

        self.proj_norm = nn.LayerNorm(c.embed_dim)
        self.proj = nn.Linear(c.embed_dim + (2 * c.n_mels if c.stat_fusion else 0), c.proj_dim)
        self.head: nn.Linear | None = nn.Linear(c.proj_dim, c.n_classes) if c.n_classes > 0 else None
        self._init_weights()

    # ----------------------------------------------------------------------------------------------- setup
    def _init_weights(self) -> None:
        """MAE initialisation: xavier-uniform Linear (patch embed viewed as one), N(0, .02) tokens."""
        w = self.patch_embed.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(_init_module)

    def set_num_classes(self, n_classes: int) -> None:
        """Replace the classifier head with a fresh ``Linear(proj_dim, n_classes)`` (0 removes it)."""
        if not isinstance(n_classes, int) or n_classes < 0:
            raise ValueError(f"set_num_classes: n_classes={n_classes!r} must be an integer >= 0")
        self.config = dataclasses.replace(self.config, n_classes=n_classes)
        if n_classes == 0:
            self.head = None
            return
        ref = self.proj.weight
        self.head = nn.Linear(self.config.proj_dim, n_classes, device=ref.device, dtype=ref.dtype)
        _init_module(self.head)

    # ------------------------------------------------------------------------------------------- geometry
    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 3:
            raise ValueError(f"RCMAE: input has shape {tuple(x.shape)}; expected a log-mel batch [B, F, T]")
        if x.shape[1] != self.config.n_mels:
            raise ValueError(f"RCMAE: input has {x.shape[1]} mel bands but the model has n_mels="
                             f"{self.config.n_mels}; compute features with the run's LogMel config")

    def pad_frames(self, x: Tensor) -> Tensor:
        """``x [B, F, T]`` -> ``[B, F, n_frames]``: zero-pad at the end (zero = the normalised mean) or crop."""
        n = self.config.n_frames
        t = x.shape[-1]
        if t == n:
            return x
        if t > n:
            return x[..., :n]
        return nnf.pad(x, (0, n - t))

    def patchify(self, x: Tensor) -> Tensor:
        """``x [B, F, T]`` (padded or cropped to ``n_frames``) -> patches ``[B, L, patch_f * patch_t]``.

        Patch ``i * grid_t + j`` is ``x[:, i*pf:(i+1)*pf, j*pt:(j+1)*pt]`` flattened row-major (mel, then time).
        """
        c = self.config
        x = self.pad_frames(x)
        grid_f, grid_t = c.grid
        b = x.shape[0]
        x = x.reshape(b, grid_f, c.patch_f, grid_t, c.patch_t)
        return x.permute(0, 1, 3, 2, 4).reshape(b, grid_f * grid_t, c.patch_dim)

    def unpatchify(self, patches: Tensor) -> Tensor:
        """Inverse of :meth:`patchify`: ``[B, L, patch_f * patch_t]`` -> ``[B, F, n_frames]``."""
        c = self.config
        grid_f, grid_t = c.grid
        if patches.ndim != 3 or patches.shape[1:] != (c.num_patches, c.patch_dim):
            raise ValueError(f"unpatchify: got shape {tuple(patches.shape)}; expected [B, {c.num_patches}, "
                             f"{c.patch_dim}]")
        b = patches.shape[0]
        x = patches.reshape(b, grid_f, grid_t, c.patch_f, c.patch_t)
        return x.permute(0, 1, 3, 2, 4).reshape(b, c.n_mels, c.n_frames)

    # -------------------------------------------------------------------------------------------- masking
    def sample_mask_ratio(self, generator: torch.Generator | None = None) -> float:
        """One mask ratio per batch, uniform in ``[mask_ratio_min, mask_ratio_max]``."""
        lo, hi = self.config.mask_ratio_min, self.config.mask_ratio_max
        device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(1, generator=generator, device=device).item()
        return lo + (hi - lo) * u

    @staticmethod
    def random_masking(x: Tensor, mask_ratio: float, generator: torch.Generator | None = None,
                       noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Per-sample random masking by argsort of uniform noise (MAE).

        Args:
            x: Tokens ``[B, L, D]``.
            mask_ratio: Fraction removed; ``int(L * (1 - mask_ratio))`` tokens are kept.
            generator: Draws the noise; must live on ``x``'s device.
            noise: ``[B, L]`` uniform noise to use instead of drawing it (an exported detector carries the
                noise its fixed-seed generator would draw, so it masks the same patches).

        Returns:
            ``(x_kept [B, L_keep, D], mask [B, L] with 1 = removed, ids_restore [B, L])``; ``ids_restore``
            undoes the shuffle: ``torch.gather(shuffled, 1, ids_restore) == original``.
        """
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"random_masking: mask_ratio={mask_ratio} must be in [0, 1)")
        b, length, dim = x.shape
        len_keep = max(1, int(length * (1 - mask_ratio)))
        if noise is None:
            noise = torch.rand(b, length, generator=generator, device=x.device)
        ids_shuffle = torch.argsort(noise, dim=1)  # ascending: the smallest noise values are kept
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
        mask = torch.ones(b, length, device=x.device, dtype=x.dtype)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)  # back to the original token order
        return x_kept, mask, ids_restore

    # --------------------------------------------------------------------------------------------- forward
    def _tokens(self, x: Tensor) -> Tensor:
        """Patch-embed ``x [B, F, T]`` and add positions: ``[B, L, D]`` (no class token)."""
        self._check_input(x)
        x = self.pad_frames(x).unsqueeze(1)
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, D, gf, gt] -> [B, gf*gt, D], row-major
        return tokens + self.pos_embed[:, 1:, :]

    def _encode(self, tokens: Tensor) -> Tensor:
        """Prepend the class token and run the encoder: ``[B, L', D]`` -> ``[B, 1 + L', D]``."""
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(tokens.shape[0], -1, -1)
        h = torch.cat([cls, tokens], dim=1)
        for block in self.blocks:
            h = block(h)
        return self.norm(h)

    def forward_encoder(self, x: Tensor, mask_ratio: float, generator: torch.Generator | None = None,
                        noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Encode the visible patches of ``x [B, F, T]`` (``noise``: see :meth:`random_masking`).

        Returns:
            ``(latent [B, 1 + L_keep, D] with the class token first, mask [B, L] 1 = removed, ids_restore [B, L])``.
        """
        tokens = self._tokens(x)
        kept, mask, ids_restore = self.random_masking(tokens, mask_ratio, generator, noise)
        return self._encode(kept), mask, ids_restore

    def forward_decoder(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """Reconstruct every patch from the visible latent: ``pred [B, L, patch_f * patch_t]``."""
        h = self.decoder_embed(latent)
        b, n_vis, dim = h.shape
        length = ids_restore.shape[1]
        # Mask tokens fill the removed slots; the gather puts all tokens back in their original order.
        mask_tokens = self.mask_token.expand(b, length + 1 - n_vis, -1)
        patches = torch.cat([h[:, 1:, :], mask_tokens], dim=1)
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, dim))
        h = torch.cat([h[:, :1, :], patches], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            h = block(h)
        return self.decoder_pred(self.decoder_norm(h))[:, 1:, :]

    def target(self, x: Tensor) -> Tensor:
        """The reconstruction target of ``x [B, F, T]``: its patches ``[B, L, P]`` (raw; see ``masked_mse``)."""
        self._check_input(x)
        return self.patchify(x)

    def project(self, latent: Tensor, x: Tensor | None = None) -> Tensor:
        """Pool encoder tokens, LayerNorm, (fuse band statistics,) Linear: ``z [B, proj_dim]``.

        Args:
            latent: Encoder output ``[B, 1 + L', D]`` (class token first), masked or not.
            x: The model input ``[B, F, T]``; required when ``config.stat_fusion`` is on, because the band
                statistics come from the un-patched input (unpadded, so padding does not bias them).
        """
        pooled = latent[:, 1:, :].mean(dim=1) if self.config.pool == "mean" else latent[:, 0, :]
        h = self.proj_norm(pooled)
        if self.config.stat_fusion:
            if x is None:
                raise ValueError("RCMAE.project: stat_fusion=True needs the input x [B, F, T]; "
                                 "call project(latent, x)")
            self._check_input(x)
            # Raw statistics, outside the LayerNorm: absolute band levels are the point of the fusion.
            h = torch.cat([h, clip_stats(x[..., : self.config.n_frames]).to(h.dtype)], dim=-1)
        return self.proj(h)

    def embed(self, x: Tensor) -> Tensor:
        """Embedding of the full, unmasked input ``x [B, F, T]`` -> ``z [B, proj_dim]``."""
        return self.project(self._encode(self._tokens(x)), x)

    def classify(self, z: Tensor) -> Tensor:
        """Machine-ID logits ``[B, n_classes]`` from ``z [B, proj_dim]``."""
        if self.head is None:
            raise ValueError("RCMAE.classify: the model has no classifier head (n_classes=0); "
                             "call set_num_classes(n) first")
        if self.config.head == "cosine":
            return self.config.head_scale * cosine_logits(z, self.head.weight)
        return self.head(z)

    def forward_loss(self, x: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
        """Masked-patch MSE of ``pred`` against ``x``'s patches (``norm_pix_loss`` from the config): a scalar."""
        return masked_mse(pred, self.target(x), mask, norm_pix=self.config.norm_pix_loss)

    @torch.no_grad()
    def reconstruction_error(self, x: Tensor, mask_ratio: float | None = None,
                             generator: torch.Generator | None = None, n_masks: int = 4) -> Tensor:
        """The ``recon`` score: masked-patch MSE per clip, averaged over ``n_masks`` random masks -> ``[B]``.

        Args:
            x: Normalised log-mel ``[B, F, T]``.
            mask_ratio: Fraction masked; ``None`` uses the middle of ``[mask_ratio_min, mask_ratio_max]``.
            generator: Draws the masks (on ``x``'s device); fix its seed for repeatable scores.
            n_masks: Random masks averaged per clip.
        """
        if n_masks < 1:
            raise ValueError(f"reconstruction_error: n_masks={n_masks} must be >= 1")
        if mask_ratio is None:
            mask_ratio = 0.5 * (self.config.mask_ratio_min + self.config.mask_ratio_max)
        target = self.target(x)
        total = torch.zeros(x.shape[0], device=x.device)
        for _ in range(n_masks):
            latent, mask, ids_restore = self.forward_encoder(x, mask_ratio, generator)
            pred = self.forward_decoder(latent, ids_restore)
            total += masked_mse(pred, target, mask, norm_pix=self.config.norm_pix_loss, reduction="none").float()
        return total / n_masks

    @torch.no_grad()
    def masked_patch_errors(self, x: Tensor, mask_ratio: float, generator: torch.Generator | None = None,
                            n_masks: int = 1) -> Tensor:
        """Per-patch MSE of the masked patches, for patch-level scores (``recon_topk``).

        Args:
            x: Normalised log-mel ``[B, F, T]``.
            mask_ratio: Fraction masked.
            generator: Draws the masks; fix its seed for repeatable scores.
            n_masks: Random masks per clip.

        Returns:
            ``[B, n_masks * n_masked]``: each masked patch's MSE (``norm_pix_loss`` as in training), mask after mask.
        """
        if n_masks < 1:
            raise ValueError(f"masked_patch_errors: n_masks={n_masks} must be >= 1")
        target = self._loss_target(x)
        out = []
        for _ in range(n_masks):
            latent, mask, ids_restore = self.forward_encoder(x, mask_ratio, generator)
            per_patch = ((self.forward_decoder(latent, ids_restore) - target) ** 2).mean(dim=-1).float()
            # Every clip of the batch has the same number of masked patches (one ratio per call).
            out.append(per_patch[mask.bool()].view(x.shape[0], -1))
        return torch.cat(out, dim=1)

    def _loss_target(self, x: Tensor) -> Tensor:
        """The patches the reconstruction is compared with (per-patch normalised with ``norm_pix_loss``, as MAE)."""
        target = self.target(x)
        if self.config.norm_pix_loss:
            target = (target - target.mean(dim=-1, keepdim=True)) / (target.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5
        return target

    def fixed_mask_errors(self, x: Tensor, mask_ratio: float, noise: Tensor, per_patch: bool = False) -> Tensor:
        """Errors of every clip of ``x [B, F, T]`` under the same masks, one per row of ``noise [n, L]``.

        Each clip is repeated once per mask and masked by that row (see :meth:`random_masking`), so a clip's errors
        do not depend on its batch. Returns ``[B, n]`` masked-patch MSEs (``recon``), or with ``per_patch`` each
        masked patch's MSE ``[B, n * n_masked]``, mask after mask (``recon_topk``). No ``no_grad`` inside: an
        exported graph calls it with grad on (the transformer's fused inference path has no ONNX translation).
        """
        b, n = x.shape[0], noise.shape[0]
        reps = x.repeat_interleave(n, dim=0)
        latent, mask, ids_restore = self.forward_encoder(reps, mask_ratio, noise=noise.repeat(b, 1))
        pred = self.forward_decoder(latent, ids_restore)
        if not per_patch:
            return masked_mse(pred, self.target(reps), mask, norm_pix=self.config.norm_pix_loss,
                              reduction="none").float().view(b, n)
        errors = ((pred - self._loss_target(reps)) ** 2).mean(dim=-1).float()
        return errors[mask.bool()].view(b, -1)

    def forward(self, x: Tensor) -> Output:
        """Eval pass: ``Output(embedding [B, proj_dim], logits [B, n_classes] or None)``."""
        z = self.embed(x)
        return Output(embedding=z, logits=self.classify(z) if self.head is not None else None)


def _init_module(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (buffers such as the sin-cos tables not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# The two published geometries (as mae's models_mae.py ends with its factories). Run presets, including the
# CPU-sized `tiny`, live in configs/*.yaml and set their model section themselves.
PRESETS: dict[str, Callable[[], ModelConfig]] = {
    # The paper: 128 mel x 313 frames (hop 512) padded to 320, 16 x 5 patches -> 8 x 64 = 512 tokens.
    "paper": lambda: ModelConfig(),
    # Audio-MAE geometry: 1024 frames at hop 160, 16 x 16 patches -> 8 x 64 = 512 tokens, 0.8 masking.
    "audiomae": lambda: ModelConfig(n_frames=1024, patch_f=16, patch_t=16, norm_pix_loss=True,
                                    mask_ratio_min=0.8, mask_ratio_max=0.8, decoder_embed_dim=256, decoder_depth=4,
                                    decoder_heads=8),
}


def model_preset(name: str, **overrides: object) -> ModelConfig:
    """A named preset's :class:`ModelConfig` (``paper`` or ``audiomae``) with field overrides."""
    if name not in PRESETS:
        raise ValueError(f"model_preset: unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name](), **overrides)
