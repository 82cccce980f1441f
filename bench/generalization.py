"""Write bench/results/generalization.md from a suite run's suite.json (rcmae benchmark --suite default).

    python bench/generalization.py SUITE_OUT [--default-row rcmae:maha] [--note TEXT ...]

The tables are rendered by rcmae.evaluation.suite.render_suite from suite.json (nothing is typed by hand); below them,
the issue-9 targets are checked for the default row against `ae`: suite-mean AUC and pAUC margins of at least
0.04, and a win on the near-identical and domain-shift sets alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rcmae.evaluation.suite import render_suite

ROOT = Path(__file__).resolve().parent.parent
TARGET_MARGIN = 0.04


def verdict(report: dict, default_row: str) -> list[str]:
    """Lines that check the issue-9 targets for ``default_row`` against ``ae`` (numbers from suite.json)."""
    rows = {r["row"]: r for r in report["rows"]}
    if default_row not in rows or "ae" not in rows:
        return [f"- `{default_row}` or `ae` is missing from this run: no verdict."]
    d, ae = rows[default_row], rows["ae"]
    n_seeds = min(d["mean"]["auc"]["n"], ae["mean"]["auc"]["n"])
    common = [s for s in d["per_set"] if s in ae["per_set"]]
    n_sets = len([s for s in report["sets"] if s["status"] == "ok"])
    scope = ("all sets" if d["complete"] and ae["complete"] and len(common) == len(report["sets"])
             else f"only the {len(common)} set(s) where both ran: {', '.join(common)}; the suite has "
                  f"{len(report['sets'])}, {n_sets} with results - a PARTIAL verdict")
    lines = []
    for m, name in (("auc", "AUC"), ("pauc", "pAUC")):
        a = sum(ae["per_set"][s][m]["mean"] for s in common) / len(common)
        b = sum(d["per_set"][s][m]["mean"] for s in common) / len(common)
        ok = b - a >= TARGET_MARGIN
        lines.append(f"- mean {name} over {scope}: `{default_row}` {b:.3f} vs `ae` {a:.3f}: {b - a:+.3f} -> target "
                     f"(>= +{TARGET_MARGIN:.2f}) **{'met' if ok else 'NOT met'}** ({n_seeds} "
                     f"seed{'s' if n_seeds != 1 else ''}; the issue asks for 3)")
    for s in ("near-identical", "domain-shift"):
        if s not in d["per_set"] or s not in ae["per_set"]:
            lines.append(f"- `{s}`: not in this run")
            continue
        a, b = ae["per_set"][s], d["per_set"][s]
        wins = [b[m]["mean"] > a[m]["mean"] for m in ("auc", "pauc")]
        lines.append(f"- `{s}` alone: AUC {b['auc']['mean']:.3f} vs {a['auc']['mean']:.3f}, pAUC "
                     f"{b['pauc']['mean']:.3f} vs {a['pauc']['mean']:.3f} -> beats the AE: "
                     f"**{'yes' if all(wins) else 'AUC only' if wins[0] else 'pAUC only' if wins[1] else 'no'}**")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite_out", help="the --out folder of rcmae benchmark --suite")
    parser.add_argument("--default-row", default="rcmae:maha", help="the row of the chosen default")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "generalization.md"))
    parser.add_argument("--intro", default=None, help="a Markdown file put before the tables")
    parser.add_argument("--outro", default=None, help="a Markdown file put after the verdict")
    args = parser.parse_args()
    report = json.loads((Path(args.suite_out) / "suite.json").read_text())
    body = render_suite(report).strip().splitlines()
    body[0] = "## " + body[0].lstrip("# ")
    parts = ["# Generalization: rcmae vs the AE and kNN baselines over the default suite", ""]
    if args.intro:
        parts += [Path(args.intro).read_text().strip(), ""]
    parts += body + ["", f"### Issue-9 targets for the default (`{args.default_row}`)", ""]
    parts += verdict(report, args.default_row)
    if args.outro:
        parts += ["", Path(args.outro).read_text().strip()]
    Path(args.out).write_text("\n".join(parts) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
