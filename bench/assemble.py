"""Rebuild the tables that rest on committed raw results, then BENCHMARKS.md from bench/results/.

    python bench/assemble.py            # rewrite them
    python bench/assemble.py --check    # exit 1 if any committed table differs from its rebuild

From the raw files alone (nothing is rerun):
- each suite's table, bench/results/<name>-suite.md, from bench/results/raw/suite-<name>/ (one JSON per run, written
  by bench/collect_suite.py), aggregated by the product's own ``rcmae.evaluation.suite.aggregate_suite`` and drawn
  by ``render_suite``;
- its intervals page, bench/results/intervals-<name>.md, from intervals-<name>.json (bench/suite_intervals.py
  computes that file from the same raw files);
- the README's "What to expect" table (between its ``expect`` markers), from the report suite's raw files and
  intervals, and its design-suite table (between its ``design`` markers) from the design suite's raw files;
- pages whose bench script keeps raw JSON and draws its page from it alone: mutation and the pages in
  ``RENDERED`` below (each script's ``render``).
The one hand-written page is the decisions log (bench/results/decisions.md). Study logs written before raw files
were kept live in docs/studies/, outside BENCHMARKS.md.
Then BENCHMARKS.md concatenates the pages of bench/results/ under the section titles below.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
RAW = RESULTS / "raw"
README = ROOT / "README.md"
EXPECT = ("<!-- expect:start (bench/assemble.py writes this table) -->", "<!-- expect:end -->")
DESIGN = ("<!-- design:start (bench/assemble.py writes this table) -->", "<!-- design:end -->")
# The README's design-suite rows: suite row -> label.
DESIGN_ROWS = [
    ("rcmae:ensemble", "rcmae `tiny`, scorer `ensemble` of `stats_maha` + `frame_pca` (**the `tiny` default**)"),
    ("rcmae:stats_maha", "rcmae `tiny`, scorer `stats_maha`"),
    ("rcmae:maha", "rcmae `tiny`, scorer `maha` (network embedding + band statistics)"),
    ("rcmae:knn", "rcmae `tiny`, scorer `knn`"),
    ("rcmae:idprob", "rcmae `tiny`, scorer `idprob` (the paper's score)"),
    ("ae", "DCASE 2020 AE baseline (official settings, 100 epochs)"),
    ("knn", "kNN on per-clip mean/std log-mel"),
]
sys.path.insert(0, str(ROOT / "bench"))

INTRO = """# BENCHMARKS

Every number here was measured by a command in `bench/` (or `rcmae benchmark`), on the machine and date
given with it; `python bench/run_all.py` reruns the speed and difficulty scripts, each writes its table to
`bench/results/`, and `python bench/assemble.py` rebuilds this page from them. No GPU was lent to the
sessions that measured these: every number is from a 2-core AMD EPYC VM shared with other jobs (load
average 2-8), so wall times are upper bounds. Every page below is drawn from committed raw results; the study
logs of how presets and defaults were first chosen, written before raw files were kept, are in docs/studies/.
"""

# Pages drawn by a bench script's ``render(raw)`` from bench/results/<page>.json alone: (page, script).
RENDERED = [("cost", "bench_cost"), ("first_run", "bench_first_run"), ("monitor", "bench_monitor"),
            ("pipeline", "bench_pipeline"), ("families-calibration", "families_calibration"),
            ("idprob-report", "idprob_report"), ("idprob-design", "idprob_report"), ("frontend-cpu", "bench_frontend"),
            ("frontend-cuda", "bench_frontend"), ("speed", "bench_scoring"), ("augment", "bench_augment"),
            ("audioldm", "bench_audioldm"), ("export", "bench_export"), ("reliability", "bench_reliability"),
            ("demo", "demo_difficulty"), ("paper", "bench_paper"),
            ("scorers", "bench_scorers"), ("scorer-candidates", "bench_scorer_candidates"),
            ("dcase2023-default", "benchmark_pages"), ("baselines", "benchmark_pages"),
            ("ablations", "benchmark_pages"), ("training-step", "bench_training_step")]

# BENCHMARKS.md: (section title, pages of bench/results/ in order). Study logs (docs/studies/) are not included.
SECTIONS = [
    ("Generalization: rcmae vs the AE and kNN baselines over a suite of unlike data sets",
     ["design-suite.md", "intervals-design.md"]),
    ("Detection accuracy on the demo data: rcmae vs the DCASE 2020 AE baseline and kNN, and rcmae's ablations",
     ["baselines.md", "ablations.md"]),
    ("Domain shift: rcmae vs the AE baseline on the 2023-style demo set (DCASE 2021-2025 protocol)",
     ["dcase2023-default.md"]),
    ("Scorers on unlike data sets: accuracy and speed", ["scorers.md", "scorer-candidates.md"]),
    ("The angular-margin classifier family (STgram-style, ArcFace)", ["design-margin-suite.md"]),
    ("The paper's own score (idprob) with augmented pseudo-classes, three seeds",
     ["idprob-report.md", "idprob-design.md"]),
    ("The demo data: difficulty and generation time", ["demo.md"]),
    ("Front-end speed", ["frontend-cpu.md", "frontend-cuda.md"]),
    ("Scoring and training speed", ["speed.md", "training-step.md"]),
    ("Augmentation speed", ["augment.md", "audioldm.md"]),
    ("Workbench quick demo and a newcomer's first run", ["first_run.md", "pipeline.md"]),
    ("Monitoring long recordings", ["monitor.md"]),
    ("Exported bundles: size and speed", ["export.md"]),
    ("Reliability under faults", ["reliability.md"]),
    ("The paper on a GPU: throughput, AudioLDM, full-schedule hours", ["paper.md", "cost.md"]),
    ("Decisions: chosen on the design suite, run once on the report suite",
     ["decisions.md", "report-suite.md", "intervals-report.md", "families-calibration.md",
      "design-stats-none-suite.md"]),
    ("Mutation testing", ["mutation.md"]),
]


def demote(text: str) -> str:
    """Drop a file's own title and push its headings one level down."""
    lines = text.strip().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join("#" + line if line.startswith("#") else line for line in lines).strip() + "\n"


def suite_report(name: str) -> dict:
    """The suite report (as ``run_suite`` writes it) rebuilt from the committed raw files of one suite call."""
    from rcmae.evaluation.suite import aggregate_suite

    base = RAW / f"suite-{name}"
    meta = json.loads((base / "suite.json").read_text())
    benches = {}
    for s in meta["sets"]:
        if s["status"] != "ok":
            continue
        systems: dict[str, dict] = {}
        for path in sorted((base / s["name"]).glob("*.json")):
            run = json.loads(path.read_text())
            systems.setdefault(run["system"], {"runs": []})["runs"].append(
                {"seed": run["seed"], "status": "ok", "rows": {r: {"average": v["average"]} for r, v in
                                                               run["rows"].items()}})
        for rec in systems.values():
            rec["runs"].sort(key=lambda r: r["seed"])
        benches[s["name"]] = {"systems": systems}
    return {**meta, "rows": aggregate_suite(benches), "set_failures": {}}


def suite_page(name: str) -> str:
    from rcmae.evaluation.suite import render_suite

    commits = sorted({json.loads(p.read_text())["commit"] or "unknown"
                      for p in (RAW / f"suite-{name}").glob("*/*.json")})
    return (render_suite(suite_report(name)) + f"\nRebuilt by `python bench/assemble.py` from the raw files in "
            f"bench/results/raw/suite-{name}/ (one per run; the runs' commits: "
            f"{', '.join(c[:7] for c in commits)}).\n")


def expect_table(name: str = "report", row: str = "rcmae:ensemble", base: str = "ae") -> str:
    """README's table: per report set, the default and the AE (seed means) and their difference with intervals."""
    report = suite_report(name)
    intervals = json.loads((RESULTS / f"intervals-{name}.json").read_text())["sets"]
    rows = {r["row"]: r for r in report["rows"]}
    ours, theirs = rows[row], rows[base]
    lines = ["| set | rcmae `tiny` default (ensemble of `stats_maha` + `frame_pca`) | DCASE 2020 AE (official "
             "settings) | difference: AUC / pAUC [95 % interval] |", "|---|---:|---:|---:|"]
    for s in report["sets"]:
        n = s["name"]
        if n not in ours["per_set"] or n not in theirs["per_set"]:
            continue
        a, b = ours["per_set"][n], theirs["per_set"][n]
        cell = " / ".join(f"{100 * a[m]['mean']:.1f}" for m in ("auc", "pauc"))
        cell_b = " / ".join(f"{100 * b[m]['mean']:.1f}" for m in ("auc", "pauc"))
        diff = []
        for m in ("auc", "pauc"):
            d = intervals[n]["diff"][m]
            diff.append(f"{100 * d['value']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"
                        + ("" if d["win"] else " (no call)"))
        seeds = len(intervals[n]["seeds"])
        lines.append(f"| {n} ({seeds} seed{'s' if seeds > 1 else ''}) | {cell} | {cell_b} | {' / '.join(diff)} |")
    mean = " / ".join(f"{100 * ours['mean'][m]['mean']:.1f}" for m in ("auc", "pauc"))
    mean_b = " / ".join(f"{100 * theirs['mean'][m]['mean']:.1f}" for m in ("auc", "pauc"))
    d = " / ".join(f"{100 * (ours['mean'][m]['mean'] - theirs['mean'][m]['mean']):+.1f}" for m in ("auc", "pauc"))
    lines.append(f"| **mean of the {len(ours['sets'])} sets** | **{mean}** | **{mean_b}** | **{d}** |")
    return "\n".join(lines) + "\n"


def design_table(name: str = "design", row: str = "rcmae:ensemble", base: str = "ae",
                 columns: tuple[str, ...] = ("near-identical", "domain-shift")) -> str:
    """README's design-suite table: suite means (mean ± sample std over seeds of each seed's mean over the sets),
    two sets' seed means, and the default's lead over the AE with and without the real set."""
    report = suite_report(name)
    rows = {r["row"]: r for r in report["rows"]}
    sets = [s["name"] for s in report["sets"] if s["status"] == "ok"]
    seeds = report["repeat"]

    def stat(s: dict) -> str:
        return f"{s['mean']:.3f}" + (f" ± {s['std']:.3f}" if s["n"] > 1 else "")

    def pair(r: dict, n: str) -> str:
        cell = r["per_set"].get(n)
        return "-" if cell is None else " / ".join(f"{cell[m]['mean']:.3f}" for m in ("auc", "pauc"))

    lines = ["| system | suite mean AUC | suite mean pAUC | " + " | ".join(f"{c} AUC / pAUC" for c in columns) + " |",
             "|---|---:|---:|" + "---:|" * len(columns)]
    for key, label in DESIGN_ROWS:
        if key not in rows:
            continue
        r = rows[key]
        if not r["complete"]:
            missing = ", ".join(s for s in sets if s not in r["sets"])
            label += (f" ({len(r['sets'])} of the {len(sets)} sets: {missing} has one unit, too few classes to "
                      "fine-tune on)")
        lines.append(f"| {label} | {stat(r['mean']['auc'])} | {stat(r['mean']['pauc'])} | "
                     + " | ".join(pair(r, c) for c in columns) + " |")
    ours, theirs = rows[row], rows[base]

    def lead(keep: list[str]) -> str:
        diff = {m: np.mean([ours["per_set"][n][m]["mean"] - theirs["per_set"][n][m]["mean"] for n in keep])
                for m in ("auc", "pauc")}
        return f"{diff['auc']:+.2f} AUC and {diff['pauc']:+.2f} pAUC"

    synthetic = [n for n in sets if not n.startswith("real")]
    plural = "s" if seeds > 1 else ""
    lines += ["", f"{len(sets)} sets, {seeds} training seed{plural} (cells: mean ± std over seeds of "
              f"the suite mean; per-set cells: seed means). Over these sets the default leads the official AE by "
              f"{lead(sets)} ({lead(synthetic)} on the {len(synthetic)} synthetic sets). Rebuilt by "
              f"`python bench/assemble.py` from bench/results/raw/suite-{name}/."]
    return "\n".join(lines) + "\n"


def rebuilt() -> dict[Path, str]:
    """Every file this script writes, as it would write it now."""
    out: dict[Path, str] = {}
    for base in sorted(RAW.glob("suite-*")):
        name = base.name.removeprefix("suite-")
        out[RESULTS / f"{name}-suite.md"] = suite_page(name)
        if (RESULTS / f"intervals-{name}.json").is_file():
            import suite_intervals

            out[RESULTS / f"intervals-{name}.md"] = suite_intervals.render(name)
    if (RAW / "suite-report").is_dir() and (RESULTS / "intervals-report.json").is_file():
        text = README.read_text()
        start, end = text.index(EXPECT[0]) + len(EXPECT[0]), text.index(EXPECT[1])
        text = text[:start] + "\n" + expect_table() + text[end:]
        if (RAW / "suite-design").is_dir():
            start, end = text.index(DESIGN[0]) + len(DESIGN[0]), text.index(DESIGN[1])
            text = text[:start] + "\n" + design_table() + text[end:]
        out[README] = text
    import mutation

    if mutation.RAW.is_file():
        out[RESULTS / "mutation.md"] = mutation.render_text(mutation.load_raw(), mutation.committed_head())
    # Bench scripts that keep their raw numbers beside the page and draw the page from them alone.
    import importlib

    for name, module in RENDERED:
        if (RESULTS / f"{name}.json").is_file():
            render = importlib.import_module(module).render
            out[RESULTS / f"{name}.md"] = render(json.loads((RESULTS / f"{name}.json").read_text()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a committed table differs")
    args = ap.parse_args()
    tables = rebuilt()
    if args.check:
        stale = [p for p, text in tables.items() if not p.is_file() or p.read_text() != text]
        stale += [ROOT / "BENCHMARKS.md"] if (ROOT / "BENCHMARKS.md").read_text() != benchmarks_page(tables) else []
        for p in stale:
            print(f"{p.relative_to(ROOT)}: differs from its rebuild; run python bench/assemble.py")
        sys.exit(1 if stale else 0)
    for path, text in tables.items():
        path.write_text(text)
    (ROOT / "BENCHMARKS.md").write_text(benchmarks_page(tables))
    print(f"wrote {len(tables)} tables and {ROOT / 'BENCHMARKS.md'}")


def benchmarks_page(tables: dict[Path, str]) -> str:
    def read(path: Path) -> str:
        return tables[path] if path in tables else path.read_text()

    parts = [INTRO, "## Contents\n" + "".join(f"{i}. {title}\n" for i, (title, _) in enumerate(SECTIONS, 1))]
    for i, (title, files) in enumerate(SECTIONS, 1):
        bodies = [demote(read(RESULTS / f))
                  for f in files if (RESULTS / f) in tables or (RESULTS / f).is_file()]
        if bodies:
            parts.append(f"## {i}. {title}\n\n" + "\n".join(bodies))
    return "\n".join(parts)


if __name__ == "__main__":
    main()
