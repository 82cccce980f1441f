"""`report.md` / `report.json`: Tables 3 and 4 per machine type beside the paper's values."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from rcmae.evaluation.figures import TSNE_FIGURES
from rcmae.evaluation.reproduce.paper import ARMS, PAPER_ORDER, PAPER_TABLE3, PAPER_TABLE4, paper_oddities
from rcmae.evaluation.reproduce.plan import Options
from rcmae.files import atomic_write_text, read_json, write_json


# ---------------------------------------------------------------- report
def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ours(out: Path, arm: str) -> dict | None:
    path = out / "runs" / arm / "eval" / "results.json"
    return read_json(path) if path.is_file() else None


def write_report(out: str | os.PathLike, opts: Options | None = None) -> Path:
    """``report.md`` and ``report.json``: Tables 3 and 4 with the paper's values beside this run's (in %)."""
    out = Path(out)
    results = {arm: _ours(out, arm) for arm in ARMS}

    def cell(arm: str, mtype: str, metric: str) -> float | None:
        res = results.get(arm)
        if res is None:
            return None
        if mtype == "Average":
            return 100 * res["average"][metric]
        val = res["per_type"].get(mtype, {}).get(metric)
        return None if val is None else 100 * val

    rows = [*PAPER_ORDER, "Average"]
    odd = paper_oddities()
    marked = {(o["method"], o["machine_type"], o["metric"]) for o in odd if o["table"] == "Table 4"}

    def paper_cell(method: str, mtype: str, metric: str, value: float) -> str:
        return _pct(value) + (" †" if (method, mtype, metric) in marked else "")
    table3 = {t: {"paper_without_dda": PAPER_TABLE3[t][0], "paper_with_dda": PAPER_TABLE3[t][1],
                  "ours_without_dda": cell("rcmae-nodda", t, "pauc"), "ours_with_dda": cell("rcmae", t, "pauc")}
              for t in rows}
    table4 = {"paper": {m: {t: {"auc": v[t][0], "pauc": v[t][1]} for t in rows} for m, v in PAPER_TABLE4.items()},
              "ours": {arm: {t: {"auc": cell(arm, t, "auc"), "pauc": cell(arm, t, "pauc")} for t in rows}
                       for arm in ARMS}}
    scorer = next((r.get("system", "") for r in results.values() if r), "")
    lines = [
        "# RC-MAE on DCASE 2020 Task 2: this reproduction beside the paper",
        "",
        f"- runs: {out / 'runs'}; preset `{opts.preset if opts else '?'}`; scorer of this run: `{scorer or '-'}`",
        "- values in %; per machine type: mean over its IDs; Average: mean over the six types (the paper's "
        "convention); pAUC: max FPR 0.1, McClish-standardised as in DCASE; '-' = not run / type not in the data",
        "",
        "## Table 3: RC-MAE without and with diffusion-based data augmentation (pAUC)",
        "",
        "| machine type | paper without DDA | paper with DDA | ours without DDA | ours with DDA |",
        "|---|---:|---:|---:|---:|",
    ]
    for t in rows:
        r = table3[t]
        lines.append(f"| {t} | {_pct(r['paper_without_dda'])} | {_pct(r['paper_with_dda'])} | "
                     f"{_pct(r['ours_without_dda'])} | {_pct(r['ours_with_dda'])} |")
    head = " | ".join(f"{t} AUC | {t} pAUC" for t in rows)
    lines += ["", "## Table 4: per machine type AUC / pAUC, the paper's rows and ours", "",
              f"| method | {head} |", "|---|" + "---:|" * (2 * len(rows))]
    for method, vals in table4["paper"].items():
        lines.append(f"| {method} | " + " | ".join(f"{paper_cell(method, t, 'AUC', vals[t]['auc'])} | "
                                                    f"{paper_cell(method, t, 'pAUC', vals[t]['pauc'])}"
                                                    for t in rows) + " |")
    for arm, label in (("rcmae", "RC-MAE with DDA (this run)"), ("rcmae-nodda", "RC-MAE without DDA (this run)")):
        vals = table4["ours"][arm]
        lines.append(f"| {label} | " + " | ".join(f"{_pct(vals[t]['auc'])} | {_pct(vals[t]['pauc'])}"
                                                   for t in rows) + " |")
    lines += ["", "† The paper's value does not add up (found by arithmetic on its tables; printed as published):", ""]
    lines += [f"- {o['table']}, {o['method']}, {o['machine_type']} {o['metric']}: {o['note']}." for o in odd]
    lines += ["", "## Figures 3 and 4: t-SNE of this reproduction's embeddings", "",
              "One panel per machine type, colour = machine ID, o = normal, x = anomaly (`rcmae figures`).", ""]
    for arm, label in (("rcmae", "with DDA"), ("rcmae-nodda", "without DDA")):
        lines.append(f"### RC-MAE {label} (`runs/{arm}`)")
        lines.append("")
        for stem, caption in TSNE_FIGURES.items():
            path = out / "figures" / arm / f"{stem}.png"
            lines.append(f"![{caption}](figures/{arm}/{stem}.png)" if path.is_file() else
                         f"- {caption}: not drawn yet (`rcmae figures --run {out / 'runs' / arm} --out "
                         f"{out / 'figures' / arm}`)")
            lines.append("")
    report = {"table3": table3, "table4": table4, "paper_oddities": odd,
              "figures": {arm: {stem: f"figures/{arm}/{stem}.png" for stem in TSNE_FIGURES
                                if (out / "figures" / arm / f"{stem}.png").is_file()} for arm in ARMS},
              "runs": {a: str(out / "runs" / a) for a in ARMS},
              "preset": opts.preset if opts else None,
              "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(opts).items()}
              if opts else None}
    write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", "\n".join(lines))
    return out / "report.md"
