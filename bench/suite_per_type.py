"""One machine type across a suite's sets: a Markdown table of every row's AUC/pAUC on that type (seed 0).

    python bench/suite_per_type.py SUITE_OUT --type fan [--results SET:ROW=results.json ...]

For a suite that did not finish: the rows come from the finished runs' record.json files
(``rcmae.evaluation.suite.collect_set``); ``--results`` adds a row's results.json for a set from elsewhere, e.g. the AE
baseline scored on the type alone with the per-type model its unfinished suite run had already saved
(``rcmae baseline ae`` reuses a model trained with the same settings).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rcmae.evaluation.suite import SUITES, collect_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite_out")
    parser.add_argument("--type", required=True)
    parser.add_argument("--suite", default="default")
    parser.add_argument("--results", action="append", default=[], metavar="SET:ROW=FILE")
    args = parser.parse_args()
    table: dict[str, dict[str, tuple[float, float]]] = {}
    sets = [s.name for s in SUITES[args.suite]]
    for name in sets:
        bench = collect_set(Path(args.suite_out) / "sets" / name)
        for rec in bench["systems"].values():
            for run in rec["runs"]:
                if run["seed"] != 0:
                    continue
                for row, res in run["rows"].items():
                    t = res["per_type"].get(args.type)
                    if t:
                        table.setdefault(row, {})[name] = (t["auc"], t["pauc"])
    for item in args.results:
        key, _, path = item.partition("=")
        name, _, row = key.partition(":")
        res = json.loads(Path(path).read_text())["per_type"][args.type]
        table.setdefault(row, {})[name] = (res["auc"], res["pauc"])
    sets = [s for s in sets if any(s in v for v in table.values())]
    print("| row | " + " | ".join(f"{s} AUC | {s} pAUC" for s in sets) + " |")
    print("|---|" + "---:|" * (2 * len(sets)))
    for row in sorted(table, key=lambda r: -sum(v[0] for v in table[r].values()) / len(table[r])):
        cells = []
        for s in sets:
            v = table[row].get(s)
            cells += [f"{v[0] * 100:.1f}", f"{v[1] * 100:.1f}"] if v else ["-", "-"]
        print(f"| {row} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
