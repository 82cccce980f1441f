"""``idprob``: the paper's score, ``-log softmax(logits)[own class]`` of the fine-tuned machine-ID classifier.

Averaged over crop windows when the run trains on crops (``score.idprob_windows: max`` keeps the highest window).
Needs a fine-tuned classifier over at least two units; it has no references (fitting only keeps the normal set).

With augmented pseudo-classes (``finetune.pseudo_classes``, :mod:`rcmae.augment.pseudo`) the classifier has ``K``
classes per unit (unit ``i``, transform ``k`` -> ``i * K + k``, transform 0 = unchanged) and the softmax runs over
all ``N * K``; the score is ``-log p(own unit, unchanged)`` (``score.idprob_pseudo: identity``) or
``-log sum_k p(own unit, transform k)`` (``marginal``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from rcmae.scorers.base import Clips, Scorer, ScoringError


def idprob_from_logits(logits: torch.Tensor, unit: torch.Tensor, n_transforms: int = 1,
                       mode: str = "identity") -> torch.Tensor:
    """``-log p`` of each row's own unit from classifier logits ``[B, N * K]``, in float64.

    Args:
        logits: Classifier logits, ``K = n_transforms`` consecutive classes per unit.
        unit: The unit index ``[B]`` (``0 .. N - 1``) of each row.
        n_transforms: ``K`` (1 = plain machine-ID classes, the paper).
        mode: ``"identity"``: ``-log p(unit, transform 0)``; ``"marginal"``: ``-log sum_k p(unit, k)``.
    """
    if logits.shape[-1] % n_transforms:
        raise ValueError(f"idprob: {logits.shape[-1]} classifier outputs are not a multiple of {n_transforms} "
                         "pseudo-class transforms")
    logp = torch.log_softmax(logits.double(), -1).reshape(len(logits), -1, n_transforms)
    own = logp[torch.arange(len(logits), device=logits.device), unit.to(logits.device)]  # [B, K]
    if mode == "identity":
        return -own[:, 0]
    if mode == "marginal":
        return -torch.logsumexp(own, -1)
    raise ValueError(f"idprob: unknown mode {mode!r}; use identity or marginal")


def unit_probs(logits: torch.Tensor, n_transforms: int = 1) -> torch.Tensor:
    """``p(unit | clip)`` ``[B, N]`` from logits ``[B, N * K]``: the softmax summed over each unit's transforms."""
    return torch.softmax(logits.float(), -1).reshape(len(logits), -1, n_transforms).sum(-1)


class IdProbScorer(Scorer):
    """``idprob`` over the classes of a fine-tuned model.

    Args:
        cfg, run: As :class:`Scorer`.
        model: The fine-tuned ``RCMAE`` (``None`` when the run is not fine-tuned).
        classes: ``(machine_type, machine_id)`` in classifier order.
        windows: Crop windows of a log-mel batch.
        device: Where the model runs.
        n_transforms: Classes per unit (1 + ``len(finetune.pseudo_classes)``).
    """

    name = "idprob"

    def __init__(self, cfg, run, model, classes: Sequence[tuple[str, str]],
                 windows: Callable[[torch.Tensor], list[torch.Tensor]], device: torch.device,
                 n_transforms: int = 1) -> None:
        super().__init__(cfg, run)
        self.model, self.windows, self.device = model, windows, device
        self.n_transforms = int(n_transforms)
        self.classes = [tuple(c) for c in classes]
        self.class_index = {c: i for i, c in enumerate(self.classes)}

    def unavailable(self) -> str:
        if len(self.classes) < 2:
            return "a single machine ID: no classes to tell apart"
        if self.model is None or self.model.head is None:
            return "the run is not fine-tuned"
        outputs = self.model.head.out_features
        if outputs != len(self.classes) * self.n_transforms:
            return (f"the classifier has {outputs} outputs, not {len(self.classes)} units x {self.n_transforms} "
                    "pseudo-class transforms (finetune.pseudo_classes changed after fine-tuning)")
        return ""

    def class_indices(self, machine_types: Sequence[str], machine_ids: Sequence[str]) -> list[int]:
        """Classifier indices of the units (one clear error for a unit the run was not trained on)."""
        out = []
        for t, i in zip(machine_types, machine_ids, strict=True):
            key = (str(t), str(i))
            if key not in self.class_index:
                known = ", ".join(f"{a}/{b}" for a, b in self.classes)
                raise ScoringError(f"machine {t} id {i} was not in this run's training data (known: {known}); "
                                   "pass the right --machine-type/--machine-id or train on it")
            out.append(self.class_index[key])
        return out

    @torch.no_grad()
    def score(self, clips: Clips) -> np.ndarray:
        x, bs = clips.x, self.cfg.batch_size
        idx = torch.tensor(self.class_indices(clips.machine_types, clips.machine_ids), device=self.device)
        out = []
        for b in range(0, len(x), bs):
            xb = x[b : b + bs].to(self.device)
            ib = idx[b : b + bs]
            # float64: a confident classifier's float32 -log p is exactly 0 (p rounds to 1) for most clips, and
            # those ties flatten the ranking (bench/results/idprob.md).
            per_window = torch.stack([
                idprob_from_logits(self.model.classify(self.model.embed(w)), ib, self.n_transforms,
                                   self.cfg.idprob_pseudo) for w in self.windows(xb)])
            out.append(per_window.amax(0) if self.cfg.idprob_windows == "max" else per_window.mean(0))
        return torch.cat(out).cpu().numpy().astype(np.float64)
