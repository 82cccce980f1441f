"""``idprob``: the paper's score, ``-log softmax(logits)[own class]`` of the fine-tuned machine-ID classifier.

Averaged over crop windows when the run trains on crops (``score.idprob_windows: max`` keeps the highest window).
Needs a fine-tuned classifier over at least two units; it has no references (fitting only keeps the normal set).

With augmented pseudo-classes (``finetune.pseudo_classes``, :mod:`rcmae.augment.pseudo`) the classifier has ``K``
classes per unit (unit ``i``, transform ``k`` -> ``i * K + k``, transform 0 = unchanged) and the softmax runs over
all ``N * K``; the score is ``-log p(own unit, unchanged)`` (``score.idprob_pseudo: identity``) or
``-log sum_k p(own unit, transform k)`` (``marginal``).

Where the classes are section + attribute classes (DCASE 2023+, ``finetune.classes``), a clip's own class is
``<section>_<attributes>`` from its name; a clip whose attributes are unknown (bare evaluation names such as
``section_00_0000.wav``, or attribute values never seen in training) is scored against all of its section's
classes: ``-log max`` of their probabilities (``score.idprob_pool: max``, the default) or ``-log sum``
(``sum``: the section's probability). See docs/training.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from rcmae.scorers.base import Clips, Scorer, ScoringError


def _class_name(section: str, attributes: str) -> str:
    # rcmae.data.class_name (scorers import numpy and torch only); tests/training/test_attribute_classes.py
    # keeps the two equal.
    attributes = str(attributes or "")
    return str(section) if not attributes or attributes.lower() == "noattribute" else f"{section}_{attributes}"



def true_classes(classes: Sequence[tuple[str, str]], class_units: Sequence[tuple[str, str]] | None,
                 machine_types: Sequence[str], machine_ids: Sequence[str],
                 attributes: Sequence[str] | None = None) -> list[list[int]]:
    """Per clip, the classifier indices its ``idprob`` pools over: its own class, or its section's classes.

    Args:
        classes: ``(machine_type, name)`` in classifier order.
        class_units: Each class's ``(machine_type, machine_id)`` unit (``None``: each class is its own unit).
        machine_types, machine_ids: The clips' units.
        attributes: The clips' attribute tails (``""`` = unknown; ``None``: all unknown).

    Returns:
        One list per clip: ``[k]`` when the clip's own class ``k`` is known (its unit, for machine-ID classes, or
        ``(type, "<section>_<attributes>")``), else every class of its unit.

    Raises:
        ScoringError: a unit the run has no class of.
    """
    classes = [tuple(map(str, c)) for c in classes]
    units = classes if class_units is None else [tuple(map(str, u)) for u in class_units]
    index = {c: k for k, c in enumerate(classes)}
    members: dict[tuple[str, str], list[int]] = {}
    for k, u in enumerate(units):
        members.setdefault(u, []).append(k)
    attributes = [""] * len(machine_types) if attributes is None else list(attributes)
    out = []
    for t, i, a in zip(machine_types, machine_ids, attributes, strict=True):
        unit = (str(t), str(i))
        ks = members.get(unit)
        if not ks:
            known = ", ".join(f"{a}/{b}" for a, b in sorted(set(units)))
            raise ScoringError(f"machine {t} id {i} was not in this run's training data (known: {known}); "
                               "pass the right --machine-type/--machine-id or train on it")
        if len(ks) == 1 and classes[ks[0]] == unit:
            out.append(ks)  # machine-ID (or section) classes: the unit is the class
            continue
        own = (unit[0], _class_name(unit[1], a)) if str(a or "") else None
        out.append([index[own]] if own in index and index[own] in ks else list(ks))
    return out


def class_logp(logits: torch.Tensor, n_transforms: int = 1, mode: str = "identity") -> torch.Tensor:
    """``log p(class | clip)`` ``[B, C]`` in float64 from logits ``[B, C * K]`` (``K`` pseudo-class transforms).

    ``"identity"``: the log-probability of (class, transform 0); ``"marginal"``: summed over the class's transforms.
    With ``K = 1`` both are the plain log-softmax (the paper).
    """
    if logits.shape[-1] % n_transforms:
        raise ValueError(f"idprob: {logits.shape[-1]} classifier outputs are not a multiple of {n_transforms} "
                         "pseudo-class transforms")
    logp = torch.log_softmax(logits.double(), -1).reshape(len(logits), -1, n_transforms)
    if mode == "identity":
        return logp[..., 0]
    if mode == "marginal":
        return torch.logsumexp(logp, -1)
    raise ValueError(f"idprob: unknown mode {mode!r}; use identity or marginal")


def unit_probs(logits: torch.Tensor, n_transforms: int = 1) -> torch.Tensor:
    """``p(unit | clip)`` ``[B, N]`` from logits ``[B, N * K]``: the softmax summed over each unit's transforms."""
    return torch.softmax(logits.float(), -1).reshape(len(logits), -1, n_transforms).sum(-1)


class IdProbScorer(Scorer):
    """``idprob`` over the classes of a fine-tuned model.

    Args:
        cfg, run: As :class:`Scorer`.
        model: The fine-tuned ``RCMAE`` (``None`` when the run is not fine-tuned).
        classes: ``(machine_type, name)`` in classifier order: machine IDs / sections, or section + attributes.
        windows: Crop windows of a log-mel batch.
        device: Where the model runs.
        class_units: Each class's ``(machine_type, machine_id)`` unit (``None``: each class is its own unit).
        n_transforms: Classes per unit (1 + ``len(finetune.pseudo_classes)``).
    """

    name = "idprob"

    def __init__(self, cfg, run, model, classes: Sequence[tuple[str, str]],
                 windows: Callable[[torch.Tensor], list[torch.Tensor]], device: torch.device,
                 class_units: Sequence[tuple[str, str]] | None = None, n_transforms: int = 1) -> None:
        super().__init__(cfg, run)
        self.model, self.windows, self.device = model, windows, device
        self.n_transforms = int(n_transforms)
        self.classes = [tuple(c) for c in classes]
        self.class_index = {c: i for i, c in enumerate(self.classes)}
        self.class_units = None if class_units is None else [tuple(u) for u in class_units]

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

    def class_indices(self, machine_types: Sequence[str], machine_ids: Sequence[str],
                      attributes: Sequence[str] | None = None) -> list[list[int]]:
        """Per clip, the classifier indices it is scored against (:func:`true_classes`)."""
        return true_classes(self.classes, self.class_units, machine_types, machine_ids, attributes)

    @torch.no_grad()
    def score(self, clips: Clips) -> np.ndarray:
        x, bs = clips.x, self.cfg.batch_size
        sets = self.class_indices(clips.machine_types, clips.machine_ids, clips.attributes)
        pool = getattr(self.cfg, "idprob_pool", "max")
        out = []
        for b in range(0, len(x), bs):
            xb = x[b : b + bs].to(self.device)
            sb = sets[b : b + bs]
            # float64: a confident classifier's float32 -log p is exactly 0 (p rounds to 1) for most clips, and
            # those ties flatten the ranking (docs/studies/idprob.md).
            # Per window: log p(class | clip) [B, C] (of the class unchanged, or summed over its transforms).
            per_class = [class_logp(self.model.classify(self.model.embed(w)), self.n_transforms,
                                    getattr(self.cfg, "idprob_pseudo", "identity")) for w in self.windows(xb)]
            if all(len(s) == 1 for s in sb):
                ib = torch.tensor([s[0] for s in sb], device=self.device)
                per_window = torch.stack([-lp.gather(1, ib[:, None])[:, 0] for lp in per_class])
            else:
                # A clip of unknown attributes: -log max_k p_k or -log sum_k p_k over its section's classes k.
                mask = torch.zeros(len(sb), per_class[0].shape[1], dtype=torch.bool, device=self.device)
                for n, s in enumerate(sb):
                    mask[n, s] = True
                pooled = []
                for lp in per_class:
                    masked = lp.masked_fill(~mask, float("-inf"))
                    pooled.append(-(masked.max(1).values if pool == "max" else torch.logsumexp(masked, 1)))
                per_window = torch.stack(pooled)
            by_max = getattr(self.cfg, "idprob_windows", "mean") == "max"
            out.append(per_window.amax(0) if by_max else per_window.mean(0))
        return torch.cat(out).cpu().numpy().astype(np.float64)
