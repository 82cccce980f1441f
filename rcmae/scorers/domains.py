"""Domain shift (DCASE 2021-2025): separate source and target memory banks inside each unit's normal clips.

A DCASE 2022+ section trains on 990 source and 10 target normal clips. Pooled into one reference set, the
10 target clips barely move a Gaussian's mean and covariance, and a target test clip looks anomalous because
its operating condition is rare, not because the machine is faulty. As the 2023-2024 baselines do
("selective Mahalanobis"), the ``knn``, ``knn_joint`` and ``maha`` scorers therefore fit one reference set
per domain within each unit and score a clip by its **minimum** over the domains: a clip is normal when it
is close to the normal clips of either condition. With ``score.domain_banks=false`` they pool the domains.

The domain of a training clip comes from its DCASE 2021+ file name (``section_00_target_train_...``);
2020 names have none, and a unit with clips of one domain only keeps one bank (the 2020 behaviour).
Thresholds stay one per unit (section) over both domains' held-out scores, as the 2022+ rules require.
"""

from __future__ import annotations

import re

import numpy as np

_DOMAIN = re.compile(r"(?:^|[/\\])section_\d{2}_(source|target)_", re.IGNORECASE)
DOMAINS = ("source", "target")


def path_domains(paths) -> np.ndarray:
    """``"source"``/``"target"`` per path from the DCASE 2021+ file name, ``""`` when the name does not say."""
    out = []
    for p in paths:
        m = _DOMAIN.search(str(p))
        out.append(m.group(1).lower() if m else "")
    return np.asarray(out, dtype=object).astype(str)


def domain_banks(table: dict, rows: np.ndarray, exclude: int | None = None) -> list[np.ndarray]:
    """Split one unit's reference rows into per-domain banks (source first), each with ``exclude`` removed.

    Args:
        table: A :class:`rcmae.scorers.base.NormalSet` table (``path`` per row; the parsed domains are cached
            in it under ``"domain"``).
        rows: The unit's row indices into the table.
        exclude: A position *within* ``rows`` to leave out (leave-one-out), or ``None``.

    Returns:
        One array of row indices per domain present (empty banks dropped); a single bank when the unit has
        fewer than two domains.
    """
    rows = np.asarray(rows)
    if exclude is not None:
        rows = np.delete(rows, exclude)
    if "domain" not in table:
        table["domain"] = path_domains(table["path"])
    dom = table["domain"][rows]
    banks = [rows[dom == d] for d in DOMAINS]
    banks = [b for b in banks if b.size]
    if len(banks) < 2 or (dom == "").any():
        return [rows]
    return banks
