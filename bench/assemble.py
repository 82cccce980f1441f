"""Assemble BENCHMARKS.md from the tables the bench scripts wrote to bench/results/.

    python bench/assemble.py
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

INTRO = """# BENCHMARKS

Every number here was measured by a command in `bench/` (or `rcmae benchmark`), on the machine and date
given with it; `python bench/run_all.py` reruns the speed and difficulty scripts, each writes its table to
`bench/results/`, and `python bench/assemble.py` rebuilds this page from them. No GPU was lent to the
sessions that measured these: every number is from a 2-core AMD EPYC VM shared with other jobs (load
average 2-8), so wall times are upper bounds.
"""

SECTIONS = [
    ("Generalization: rcmae vs the AE and kNN baselines over a suite of unlike data sets", ["generalization.md"]),
    ("Detection accuracy on the demo data: rcmae vs the DCASE 2020 AE baseline and kNN", ["baselines.md"]),
    ("Domain shift: rcmae vs the AE baseline on the 2023-style demo set (DCASE 2021-2025 protocol)",
     ["dcase2023.md"]),
    ("RC-MAE in the small-data regime: what was tried", ["training.md"]),
    ("Scorers on unlike data sets: accuracy and speed", ["scorers.md"]),
    ("A real-data sanity check (DCASE 2020 slider)", ["real_slider.md"]),
    ("The angular-margin classifier family (STgram-style, ArcFace)", ["classifier.md"]),
    ("The paper's own score (idprob): what moves it", ["idprob.md"]),
    ("The demo data: difficulty and generation time", ["demo.md"]),
    ("Front-end speed", ["frontend-cpu.md", "frontend-cuda.md"]),
    ("Scoring and training speed", ["speed.md"]),
    ("Augmentation speed", ["augment.md", "audioldm.md"]),
    ("Workbench quick demo and a newcomer's first run", ["first_run.md", "pipeline.md", "workbench.md"]),
    ("Monitoring long recordings", ["monitor.md"]),
    ("Exported bundles: size and speed", ["export.md"]),
    ("Reliability under faults", ["reliability.md"]),
    ("The paper on a GPU: throughput, AudioLDM, full-schedule hours", ["paper.md", "cost.md"]),
    ("Decisions: chosen on the design suite, run once on the report suite",
     ["decisions.md", "report-suite.md", "intervals-report.md"]),
    ("Mutation testing", ["mutation.md"]),
]


def demote(text: str) -> str:
    """Drop a file's own title and push its headings one level down."""
    lines = text.strip().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join("#" + line if line.startswith("#") else line for line in lines).strip() + "\n"


def main() -> None:
    parts = [INTRO, "## Contents\n" + "".join(f"{i}. {title}\n" for i, (title, _) in enumerate(SECTIONS, 1))]
    for i, (title, files) in enumerate(SECTIONS, 1):
        bodies = [demote((RESULTS / f).read_text()) for f in files if (RESULTS / f).is_file()]
        if bodies:
            parts.append(f"## {i}. {title}\n\n" + "\n".join(bodies))
    (ROOT / "BENCHMARKS.md").write_text("\n".join(parts))
    print(f"wrote {ROOT / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
