"""The paper's published values (Tables 3 and 4) and the machine types in its order."""

from __future__ import annotations

MACHINE_TYPES = ("fan", "pump", "slider", "valve", "ToyCar", "ToyConveyor")
ARMS = ("rcmae", "rcmae-nodda")

# The paper's published values (%, Tables 3 and 4), machine types in the paper's column order.
PAPER_ORDER = ("valve", "fan", "pump", "slider", "ToyCar", "ToyConveyor")
PAPER_TABLE3 = {  # machine type -> (RC-MAE without DDA pAUC, RC-MAE with DDA pAUC)
    "valve": (98.01, 98.37), "fan": (87.44, 88.10), "pump": (83.89, 83.25), "slider": (97.16, 97.84),
    "ToyCar": (90.10, 91.35), "ToyConveyor": (65.38, 68.70), "Average": (86.99, 87.93),
}
PAPER_TABLE4 = {  # method -> machine type -> (AUC, pAUC)
    "AE Baseline": {"valve": (66.28, 50.98), "fan": (65.83, 52.45), "pump": (72.89, 59.99),
                    "slider": (84.76, 66.53), "ToyCar": (78.77, 67.58), "ToyConveyor": (72.53, 67.58),
                    "Average": (73.51, 65.85)},
    "GMADE": {"valve": (99.07, 96.20), "fan": (83.06, 79.55), "pump": (87.87, 82.38), "slider": (97.62, 89.70),
              "ToyCar": (95.57, 91.54), "ToyConveyor": (81.46, 66.62), "Average": (90.77, 84.33)},
    "MobileNetV2": {"valve": (88.65, 87.98), "fan": (80.19, 74.40), "pump": (82.53, 76.50),
                    "slider": (95.27, 85.22), "ToyCar": (87.66, 85.92), "ToyConveyor": (69.71, 56.43),
                    "Average": (84.34, 77.74)},
    "Glow_AFF": {"valve": (91.40, 75.00), "fan": (74.90, 65.30), "pump": (83.40, 73.80), "slider": (94.60, 82.80),
                 "ToyCar": (92.20, 84.10), "ToyConveyor": (71.50, 59.00), "Average": (85.20, 73.90)},
    "STgram-MFN": {"valve": (99.64, 98.44), "fan": (94.04, 88.97), "pump": (91.94, 81.75),
                   "slider": (99.55, 97.61), "ToyCar": (94.44, 87.68), "ToyConveyor": (74.57, 63.30),
                   "Average": (92.36, 86.34)},
    "AADCL": {"valve": (68.62, 55.03), "fan": (85.27, 68.93), "pump": (86.75, 70.85), "slider": (77.74, 61.62),
              "ToyCar": (88.79, 75.95), "ToyConveyor": (71.26, 57.40), "Average": (79.74, 64.96)},
    "RC-MAE (paper)": {"valve": (99.52, 98.37), "fan": (95.12, 88.10), "pump": (92.82, 83.25),
                       "slider": (99.10, 97.84), "ToyCar": (95.02, 91.35), "ToyConveyor": (84.80, 68.70),
                       "Average": (94.39, 87.93)},
}


def paper_oddities() -> list[dict]:
    """Published values that do not add up, found by arithmetic on the tables above (none is corrected).

    Each: ``{"table", "method", "machine_type", "metric", "note"}``. Two checks: an Average that is not the
    mean of its six per-type values (beyond the tables' 0.01 rounding), and a per-type value repeated
    exactly in the neighbouring column of the same row and metric (a likely copy error).
    """
    found = []
    tables = [("Table 4", m, {t: dict(zip(("AUC", "pAUC"), v, strict=True)) for t, v in vals.items()})
              for m, vals in PAPER_TABLE4.items()]
    tables += [("Table 3", arm, {t: {"pAUC": v[k]} for t, v in PAPER_TABLE3.items()})
               for k, arm in enumerate(("RC-MAE without DDA", "RC-MAE with DDA"))]
    for table, method, vals in tables:
        for metric in vals["Average"]:
            per = [vals[t][metric] for t in PAPER_ORDER]
            mean = sum(per) / len(per)
            if abs(mean - vals["Average"][metric]) > 0.01:
                found.append({"table": table, "method": method, "machine_type": "Average", "metric": metric,
                              "note": f"the published Average {vals['Average'][metric]:.2f} is not the mean of "
                                      f"the six per-type values ({mean:.2f})"})
            for a, b in zip(PAPER_ORDER, PAPER_ORDER[1:], strict=False):
                if vals[a][metric] == vals[b][metric]:
                    found.append({"table": table, "method": method, "machine_type": b, "metric": metric,
                                  "note": f"equals the {a} {metric} ({vals[a][metric]:.2f}) exactly: likely a "
                                          "copy error in the paper"})
    return found
