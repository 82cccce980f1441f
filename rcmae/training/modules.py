"""The two RC-MAE stages as Lightning modules: pretraining (MAE + InfoNCE + VCR) and fine-tuning (SupCon + CE)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rcmae.data.datasets import random_crops
from rcmae.data.features import FeatureStats
from rcmae.files import atomic_write_text
from rcmae.models.losses import finetune_loss, pretrain_loss
from rcmae.models.rcmae import RCMAE
from rcmae.run.config import RunConfig
from rcmae.training.loop import StageModule
from rcmae.training.pairs import PairSource


class PretrainModule(StageModule):
    """RC-MAE pretraining: ``w_nce * InfoNCE + w_vcr * VCR + w_mae * masked MSE`` on (clip, twin) pairs."""

    stage = "pretrain"

    def __init__(self, model: RCMAE, cfg: RunConfig, x: torch.Tensor, labels: torch.Tensor,
                 steps_per_epoch: int, pairs: PairSource, record: Path | None = None) -> None:
        super().__init__(model, cfg, x, labels, steps_per_epoch)
        self.pairs = pairs
        # Where rank 0 appends each epoch's copy draw (None: not recorded).
        self.record = record

    def on_train_start(self) -> None:
        if self.record is not None and self.global_rank == 0 and self.record.is_file():
            # Resuming: epochs from here on are drawn again, so their old lines go.
            kept = [ln for ln in self.record.read_text().splitlines()
                    if ln.strip().endswith("}") and json.loads(ln)["epoch"] < self.current_epoch]
            atomic_write_text(self.record, "".join(f"{ln}\n" for ln in kept))

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if not self.pairs.bank:
            return
        draw = self.pairs.set_epoch(self.current_epoch, len(self._x))
        if self.record is not None and self.global_rank == 0:
            with open(self.record, "a") as fh:
                fh.write(json.dumps({"epoch": self.current_epoch, "copies": draw.tolist()}) + "\n")

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        idx, _ = batch
        gen = self._generator(batch_idx)
        idx = idx.cpu()
        x = self._x[idx]
        twin = self.pairs.twins(x, idx, gen)
        x, twin = random_crops([x, twin], self.cfg.pretrain.crop_frames, gen)
        x, twin = x.to(self.device), twin.to(self.device)
        mask_ratio = self.model.sample_mask_ratio(gen)
        # Masks are drawn on the compute device; the stream is still fixed by (seed, epoch, batch).
        gen_dev = self._generator(batch_idx, device=self.device) if self.device.type != "cpu" else gen
        # One encoder pass over clip and twin: both branches share the mask ratio, so they stack. The clips'
        # masks are drawn first, as two passes would draw them (the same masks on the CPU generator).
        n = len(x)
        latent_both, mask_both, restore_both = self.model.forward_encoder(torch.cat([x, twin]), mask_ratio, gen_dev)
        latent, latent_aug = latent_both[:n], latent_both[n:]
        mask, ids_restore = mask_both[:n], restore_both[:n]
        pred = self.model.forward_decoder(latent, ids_restore)
        z = self.model.project(latent, x)
        z_aug = self.model.project(latent_aug, twin)
        p = self.cfg.pretrain
        parts = pretrain_loss(
            z.float(), z_aug.float(), pred.float(), self.model.target(x).float(), mask,
            w_nce=p.w_nce, w_vcr=p.w_vcr, w_mae=p.w_mae, tau=p.tau, norm_pix=self.model.config.norm_pix_loss,
        )
        self._check_finite(parts)
        self._log_parts(parts, len(idx))
        return parts["loss"]


class FinetuneModule(StageModule):
    """Fine-tuning: ``w_supcon * SupCon(z) + w_ce * cross-entropy(classify(z))`` over machine-ID classes."""

    stage = "finetune"

    def __init__(self, model: RCMAE, cfg: RunConfig, x: torch.Tensor, labels: torch.Tensor,
                 steps_per_epoch: int, stats: FeatureStats | None = None) -> None:
        super().__init__(model, cfg, x, labels, steps_per_epoch)
        # Augmented pseudo-classes: (machine ID, transform) classes over the un-normalised log-mels.
        self.pseudo = None
        if cfg.finetune.pseudo_classes:
            from rcmae.augment.pseudo import PseudoClassAugment

            if stats is None:
                raise ValueError("FinetuneModule: finetune.pseudo_classes needs the run's feature statistics")
            self.pseudo = PseudoClassAugment(cfg.finetune.pseudo_classes, cfg.features.n_mels, cfg.features.fmin,
                                             cfg.features.fmax)
            self._mean = torch.as_tensor(stats.mean, dtype=torch.float32)[:, None]
            self._std = torch.as_tensor(stats.std, dtype=torch.float32)[:, None]
        if cfg.finetune.freeze_encoder:
            # Only the projection and the classifier learn.
            for name, p in self.model.named_parameters():
                p.requires_grad = name.startswith(("proj", "head"))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        idx, labels = batch
        gen = self._generator(batch_idx)
        f = self.cfg.finetune
        if f.balanced:
            idx = balanced_indices(self._labels, len(idx), gen)
            labels = self._labels[idx]
        x = self._x[idx.cpu()]
        if f.augment:
            from rcmae.augment.specaugment import spec_augment

            x = spec_augment(x, self.cfg.pretrain.specaugment, gen)
        if self.pseudo is not None:
            from rcmae.augment.pseudo import pseudo_labels

            k = self.pseudo.draw(len(idx), gen)
            raw = self.pseudo(x * self._std + self._mean, k, self.cfg.pretrain.crop_frames, gen)
            x = (raw - self._mean) / self._std
            labels = pseudo_labels(labels.cpu(), k, self.pseudo.n_transforms)
        else:
            (x,) = random_crops([x], self.cfg.pretrain.crop_frames, gen)
        labels = labels.to(self.device)
        lam, perm = 1.0, torch.arange(len(idx))
        if f.mixup_alpha > 0:
            import scipy.special

            from rcmae.models.losses import mixup

            u = float(torch.rand(1, generator=gen))
            lam = float(scipy.special.betaincinv(f.mixup_alpha, f.mixup_alpha, u))
            lam = max(lam, 1.0 - lam)  # the first label dominates (SupCon uses it)
            perm = torch.randperm(len(idx), generator=gen)
            x = mixup(x, lam, perm)
        perm = perm.to(self.device)
        x = x.to(self.device)
        z = self.model.embed(x)
        if f.head == "arcface":
            from rcmae.models.losses import arcface_logits, cosine_logits

            cos = cosine_logits(z.float(), self.model.head.weight.float())
            logits = arcface_logits(cos, labels, f.scale, f.margin)
            logits_b = arcface_logits(cos, labels[perm], f.scale, f.margin) if lam < 1.0 else logits
        else:
            logits = logits_b = self.model.classify(z).float()
        parts = finetune_loss(z.float(), logits, labels, w_scl=f.w_supcon, w_ce=f.w_ce, tau=f.tau,
                              label_smoothing=f.label_smoothing)
        if lam < 1.0:
            from rcmae.models.losses import mixup_cross_entropy

            ce = mixup_cross_entropy(logits, logits_b, labels, labels[perm], lam, f.label_smoothing)
            parts = {"loss": parts["loss"] + f.w_ce * (ce - parts["ce"]), "supcon": parts["supcon"], "ce": ce}
        self._check_finite(parts)
        self._log_parts(parts, len(idx))
        return parts["loss"]


def balanced_indices(labels: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` clip indices, class-balanced: a class uniformly, then one of its clips uniformly (with replacement)."""
    classes = torch.unique(labels)
    pick = classes[torch.randint(0, len(classes), (n,), generator=generator)]
    out = torch.empty(n, dtype=torch.long)
    for c in classes:
        members = torch.nonzero(labels == c).flatten()
        slots = torch.nonzero(pick == c).flatten()
        out[slots] = members[torch.randint(0, len(members), (len(slots),), generator=generator)]
    return out
