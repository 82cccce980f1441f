"""Pages of bench/results/ that are one ``rcmae benchmark`` call on one generated data set, kept as raw runs.

    python bench/benchmark_pages.py PAGE --work DIR        # make the set, run the benchmark, keep its runs, draw
    python bench/benchmark_pages.py PAGE --from-bench OUT  # only collect a finished benchmark folder
    python bench/benchmark_pages.py PAGE --render          # redraw the page from the committed JSON

PAGE is one of ``PAGES``:

- ``baselines``: the default demo set (``rcmae demo-data SET``: 5 machine types x 3 IDs, 50 normal training clips
  per ID, 20 normal + 20 anomalous test clips per ID), ``--systems rcmae,ae,knn --repeat 3``.
- ``ablations``: the same set, the five rcmae ablation arms, one seed.
- ``dcase2023-default``: the scaled-down 2023-style set (``--mode 2023 --train-per-id 30 --target-train-per-id 3
  --test-per-id 10``: 5 machine types, one section each; per type 30 source + 3 target normal training clips,
  10 normal + 10 anomalous test clips per domain), ``--systems rcmae,ae,knn``.

Every page runs the `tiny` preset's own settings and the AE's official 100 epochs: nothing is edited by hand, the
default scorer is the preset's. Each system's runs (every row's per-type, per-domain and official results) are kept
in bench/results/<page>.json; ``render`` aggregates them with the benchmark's own code
(:func:`rcmae.evaluation.benchmark.aggregate_runs`) and draws bench/results/<page>.md (bench/assemble.py redraws it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, load_raw, save_raw, write_result  # noqa: E402

ABLATIONS = "rcmae-nodda,rcmae-novcr,rcmae-contrastive,rcmae-mae,rcmae-nopretrain"
PAGES = {
    "baselines": {
        "title": "rcmae next to the DCASE 2020 AE baseline and kNN on the demo data",
        "data": "demo", "data_args": [], "systems": "rcmae,ae,knn", "repeat": 3,
        "about": "the default demo set (5 machine types x 3 IDs, 50 normal training clips per ID, 20 normal + 20 "
                 "anomalous test clips per ID)",
    },
    "ablations": {
        "title": "rcmae's ablation arms on the demo data",
        "data": "demo", "data_args": [], "systems": ABLATIONS, "repeat": 1,
        "about": "the default demo set of the `baselines` page; the full `rcmae` rows are that page's",
        "summary": True,
    },
    "dcase2023-default": {
        "title": "The default on the 2023-style demo set (DCASE 2021-2025 protocol)",
        "data": "small2023",
        "data_args": ["--mode", "2023", "--train-per-id", "30", "--target-train-per-id", "3", "--test-per-id", "10"],
        "systems": "rcmae,ae,knn", "repeat": 1,
        "about": "a scaled-down 2023-style set: 10 normals per domain, so a domain AUC moves in steps of 0.5 % and "
                 "one seed carries several points of noise",
    },
}
KEEP = ("per_type", "average", "official", "dcase2021", "domain_per_type")


def rcmae_cli(args: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "rcmae.cli", *args], check=True)


def collect(page: str, out: Path, note: str = "") -> dict:
    """The raw record of a finished benchmark folder: every run of every system, rows cut to ``KEEP``."""
    spec = PAGES[page]
    bench = json.loads((out / "benchmark.json").read_text())
    systems = {}
    for name, rec in bench["systems"].items():
        runs = []
        for run in rec["runs"]:
            rows = {row: {k: res[k] for k in KEEP if k in res} for row, res in (run.get("rows") or {}).items()}
            runs.append({k: run.get(k) for k in ("seed", "status", "error", "wall_s", "peak_mib", "commit")}
                        | {"rows": rows})
        systems[name] = {"runs": runs}
    meta = {k: bench[k] for k in ("data", "preset", "repeat", "overrides", "machine", "date", "command",
                                  "augmentation")}
    return {"page": page, "header": header(spec["title"]),
            "data_command": " ".join(["rcmae demo-data SET", *spec["data_args"]]), "bench": meta,
            "systems": systems} | ({"note": note} if note else {})


def lead(rows: list[dict]) -> str:
    """One sentence comparing the preset's default with the AE, from the aggregated rows: the official score where
    the runs have one (DCASE 2021-2025 data), else the average AUC / pAUC and the machine types won."""
    by = {r["row"]: r for r in rows if r.get("status") != "failed"}
    if any(r.get("official") for r in by.values()):
        official = {k: r["official"]["score"]["mean"] for k, r in by.items() if r.get("official")}
        default, ae = official.get("rcmae:ensemble"), official.get("ae")
        if default is None or ae is None:
            return ""
        return (f"The default (`rcmae:ensemble`, the preset's own, with domain banks) scores an official score of "
                f"**{100 * default:.1f}** against **{100 * ae:.1f}** for the AE at its official 100 epochs.")
    if "rcmae:ensemble" not in by or "ae" not in by:
        return ""
    ours, ae = by["rcmae:ensemble"]["average"], by["ae"]["average"]
    types = sorted(by["ae"]["per_type"])
    cell = {k: by[k]["per_type"] for k in ("rcmae:ensemble", "ae")}
    ahead = [t for t in types if all(cell["rcmae:ensemble"][t][m]["mean"] > cell["ae"][t][m]["mean"]
                                     for m in ("auc", "pauc"))]
    return (f"The default (`rcmae:ensemble`, the preset's own) averages **{100 * ours['auc']['mean']:.1f} AUC / "
            f"{100 * ours['pauc']['mean']:.1f} pAUC** against **{100 * ae['auc']['mean']:.1f} / "
            f"{100 * ae['pauc']['mean']:.1f}** for the AE at its official settings, and is ahead on both on "
            f"{len(ahead)} of the {len(types)} machine types. These are the sets the defaults were first tuned on, "
            "so they are not evidence of generalization: that is the report suite's.")


SUMMARY_SCORERS = ("ensemble", "maha", "knn", "idprob", "recon")


def summary(rows: list[dict]) -> str:
    """Average AUC / pAUC per system (row) and scorer (column), seed means: the ablation arms side by side."""
    by = {r["row"]: r for r in rows if r.get("status") != "failed"}
    systems = list(dict.fromkeys(r["system"] for r in rows))
    lines = ["| system | " + " | ".join(f"`{s}`" for s in SUMMARY_SCORERS) + " | wall s |",
             "|---|" + "---:|" * (len(SUMMARY_SCORERS) + 1)]
    for system in systems:
        cells = []
        for scorer in SUMMARY_SCORERS:
            r = by.get(f"{system}:{scorer}")
            avg = None if r is None else r["average"]
            cells.append("-" if avg is None else f"{100 * avg['auc']['mean']:.1f} / {100 * avg['pauc']['mean']:.1f}")
        wall = next((r["wall_s"]["mean"] for r in rows if r["system"] == system and r.get("wall_s")), None)
        lines.append(f"| {system} | " + " | ".join(cells) + f" | {'-' if wall is None else f'{wall:.0f}'} |")
    return "\n".join(lines)


def render(raw: dict) -> str:
    """bench/results/<page>.md from the raw runs alone."""
    from rcmae.evaluation.benchmark import aggregate_runs, render_table

    spec = PAGES[raw["page"]]
    bench = {**raw["bench"], "rows": aggregate_runs(raw["systems"])}
    table = render_table(bench).split("\n", 2)[2]  # without the "# Benchmark on ..." title
    seeds = raw["bench"]["repeat"]
    parts = [raw["header"].rstrip(), "",
             f"Data: `{raw['data_command']}`, {spec['about']}. Systems: `{spec['systems']}`, "
             f"{seeds} seed{'s' if seeds > 1 else ''}, nothing edited by hand: the rows are the benchmark's own."
             + "".join(f" {t}" for t in (lead(bench["rows"]), raw.get("note", "")) if t), ""]
    if spec.get("summary"):
        parts += ["Average AUC / pAUC in % per arm and scorer (the default `ensemble` and its training-free members "
                  "do not use the network, so they are the same in every arm by construction; the network's scorers "
                  "are what an arm can move):", "", summary(bench["rows"]), "", "Every row, per machine type:", ""]
    return "\n".join(parts + [table.strip(), ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", choices=sorted(PAGES))
    ap.add_argument("--work", type=Path, help="folder for the data set and the benchmark output (run both)")
    ap.add_argument("--from-bench", type=Path, help="collect a finished `rcmae benchmark` folder instead")
    ap.add_argument("--render", action="store_true", help="only redraw the page from the committed JSON")
    ap.add_argument("--note", default="", help="a sentence for the page, e.g. the machine's load during the runs")
    args = ap.parse_args()
    spec = PAGES[args.page]
    if not args.render:
        if args.from_bench:
            out = args.from_bench
        elif args.work:
            data, out = args.work / spec["data"], args.work / args.page
            if not data.is_dir():
                rcmae_cli(["demo-data", str(data), *spec["data_args"], "--quiet"])
            rcmae_cli(["benchmark", "--data", str(data), "--out", str(out), "--systems", spec["systems"],
                       "--repeat", str(spec["repeat"])])
        else:
            ap.error("pass --work, --from-bench or --render")
        save_raw(args.page, collect(args.page, out, args.note))
    text = render(load_raw(args.page))
    print(text)
    print(write_result(args.page, text))


if __name__ == "__main__":
    main()
