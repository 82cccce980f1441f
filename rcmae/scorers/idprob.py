"""``idprob``: the paper's score, ``-log softmax(logits)[own class]`` of the fine-tuned machine-ID classifier.

Averaged over crop windows when the run trains on crops. Needs a fine-tuned classifier over at least two units;
it has no references (fitting only keeps the normal set).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from rcmae.scorers.base import Clips, Scorer, ScoringError


class IdProbScorer(Scorer):
    """``idprob`` over the classes of a fine-tuned model.

    Args:
        cfg, run: As :class:`Scorer`.
        model: The fine-tuned ``RCMAE`` (``None`` when the run is not fine-tuned).
        classes: ``(machine_type, machine_id)`` in classifier order.
        windows: Crop windows of a log-mel batch.
        device: Where the model runs.
    """

    name = "idprob"

    def __init__(self, cfg, run, model, classes: Sequence[tuple[str, str]],
                 windows: Callable[[torch.Tensor], list[torch.Tensor]], device: torch.device) -> None:
        super().__init__(cfg, run)
        self.model, self.windows, self.device = model, windows, device
        self.classes = [tuple(c) for c in classes]
        self.class_index = {c: i for i, c in enumerate(self.classes)}

    def unavailable(self) -> str:
        if len(self.classes) < 2:
            return "a single machine ID: no classes to tell apart"
        if self.model is None or self.model.head is None:
            return "the run is not fine-tuned"
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
            per_window = [-torch.log_softmax(self.model.classify(self.model.embed(w)).double(), -1)
                          .gather(1, ib[:, None])[:, 0] for w in self.windows(xb)]
            out.append(torch.stack(per_window).mean(0))
        return torch.cat(out).cpu().numpy().astype(np.float64)
