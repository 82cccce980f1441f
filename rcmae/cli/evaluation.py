"""`rcmae baseline`, `rcmae benchmark`, `rcmae figures` and `rcmae reproduce`."""

from __future__ import annotations

import argparse
from pathlib import Path

from rcmae.cli.common import UsageError, parse_pair


# ---------------------------------------------------------------- baseline / benchmark
def _cmd_baseline(args: argparse.Namespace) -> int:
    from rcmae.evaluation import baselines

    knn_kw = {}
    if args.name == "knn":
        knn_kw = {"k": args.k, "metric": args.metric, "embeddings": Path(args.embeddings) if args.embeddings else None}
    elif args.k != 1 or args.metric or args.embeddings:
        raise UsageError("--k, --metric and --embeddings apply to the knn baseline only")
    results = baselines.run_baseline(
        args.name, data=Path(args.data), out=Path(args.out), epochs=args.epochs, seed=args.seed, device=args.device,
        **knn_kw,
    )
    avg = results["average"]
    print(f"{args.name}: AUC {avg['auc']:.4f}  pAUC {avg['pauc']:.4f}  (results in {args.out})")
    return 0


def add_baseline(sub) -> None:
    p = sub.add_parser("baseline", help="run a baseline detector (ae: the DCASE 2020 autoencoder; knn)")
    p.add_argument("name", choices=["ae", "knn"])
    p.add_argument("--data", required=True, help="data folder with train clips and labelled test clips")
    p.add_argument("--out", required=True, help="folder for results.json, challenge CSVs (and AE models/)")
    p.add_argument("--epochs", type=int, default=None, help="AE epochs (default 100, as the official baseline)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--k", type=int, default=1, help="knn: neighbours averaged (default 1)")
    p.add_argument("--metric", choices=["euclidean", "cosine"], default=None,
                   help="knn: distance (default euclidean on log-mel statistics, cosine on run embeddings)")
    p.add_argument("--embeddings", default=None, metavar="RUN", help="knn: use this run's encoder embeddings")
    p.set_defaults(func=_cmd_baseline)


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from rcmae.evaluation import benchmark

    if args.suite:
        return _cmd_benchmark_suite(args)
    if not args.out:
        raise ValueError("--out is required: the folder for benchmark.json and table.md")
    if not args.data:
        raise ValueError("give --data DIR (one data set) or --suite NAME (a suite of sets; --suite list shows them)")
    out = benchmark.run_benchmark(data=Path(args.data), out=Path(args.out), **_benchmark_common(args))
    print((Path(out) / "table.md").read_text())
    return 0


def _cmd_benchmark_suite(args: argparse.Namespace) -> int:
    from rcmae.evaluation import suite

    if args.suite == "list":
        print(suite.describe_suites())
        return 0
    if args.data:
        raise ValueError("--data and --suite exclude each other: a suite brings its own data sets")
    if not args.out:
        raise ValueError("--out is required: the folder for suite.json, suite.md and sets/<set>/")
    out = suite.run_suite(args.suite, out=Path(args.out), data_root=args.suite_data, real_samples=args.real_samples,
                          report_only=args.report_only, **_benchmark_common(args))
    print((Path(out) / "suite.md").read_text())
    return 0


def _benchmark_common(args: argparse.Namespace) -> dict:
    """What ``rcmae benchmark`` passes alike to one data set and to a suite: systems, preset, seeds, overrides."""
    return {"systems": [s for s in args.systems.split(",") if s], "preset": args.preset, "repeat": args.repeat,
            "overrides": args.set, "rescore": args.rescore, **_benchmark_aug(args)}


def _benchmark_aug(args: argparse.Namespace) -> dict:
    """``run_benchmark``'s ``aug`` and ``aug_options`` from the ``--aug*`` flags (only those given)."""
    options = {"model": args.aug_model, "per_clip": args.per_clip, "steps": args.aug_steps,
               "device": args.aug_device, "limit": args.aug_limit}
    options = {k: v for k, v in options.items() if v is not None}
    if args.allow_download:
        options["allow_download"] = True
    if options and args.aug == "specaugment":
        raise UsageError("--aug-model/--per-clip/--aug-steps/--aug-device apply to a bank; --aug specaugment has none")
    return {"aug": args.aug, "aug_options": options}


def _add_benchmark_aug_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--aug", choices=["procedural", "audioldm", "specaugment"], default="procedural",
                   help="bank for the rcmae arms: procedural (default), audioldm (the paper's; Table 3 is "
                        "--systems rcmae,rcmae-nodda --aug audioldm) or specaugment (no bank)")
    p.add_argument("--aug-model", default=None, help="AudioLDM folder or model id (default cvssp/audioldm-s-full-v2)")
    p.add_argument("--per-clip", type=int, default=None,
                   help="augmented copies per clip, one drawn per clip per epoch (default 1)")
    p.add_argument("--aug-steps", type=lambda s: parse_pair(s, int), default=None,
                   help="AudioLDM: S range MIN:MAX (default 10:50, the paper's Table 2)")
    p.add_argument("--aug-device", default=None, help="AudioLDM device, e.g. cuda:0")
    p.add_argument("--aug-limit", type=int, default=None, help="augment only the first N clips (quick looks)")
    p.add_argument("--allow-download", action="store_true", help="AudioLDM: allow fetching weights from the hub")


def add_benchmark(sub) -> None:
    p = sub.add_parser("benchmark", help="run several systems on the same data (or a suite of sets); one table")
    p.add_argument("--data", default=None, help="data folder with train clips and labelled test clips")
    p.add_argument("--suite", default=None, metavar="NAME",
                   help="run over every set of a suite (design, report, tiny; `--suite list` shows them) and report "
                        "each set and the mean; see docs/benchmark.md")
    p.add_argument("--suite-data", default=None, metavar="DIR",
                   help="where suite sets are generated and reused (default <workspace>/data/suites)")
    p.add_argument("--real-samples", default=None, metavar="DIR",
                   help="DCASE 2020 sample folder for the suite's real-slider set "
                        "(default ../shared/data/dcase2020-samples; skipped with a note when absent)")
    p.add_argument("--rescore", action="store_true",
                   help="score finished rcmae runs in OUT again with the current scorers (no retraining); with "
                        "--set score.KEY=VALUE, a copy of each run under those score settings")
    p.add_argument("--report-only", action="store_true",
                   help="with --suite: run nothing, report the runs already finished in OUT (and what is missing)")
    p.add_argument("--out", default=None,
                   help="folder for benchmark.json, table.md and each system's outputs (suite.json, suite.md, "
                        "sets/<set>/ with --suite); required")
    p.add_argument("--systems", default="rcmae,ae,knn",
                   help="comma list of: rcmae, rcmae-nodda, rcmae-novcr, rcmae-contrastive, rcmae-mae, "
                        "rcmae-nopretrain, margin (the angular-margin classifier, its own preset), ae, knn "
                        "(default rcmae,ae,knn)")
    p.add_argument("--preset", default="tiny", help="rcmae preset: tiny | paper | a YAML file (default tiny)")
    p.add_argument("--repeat", type=int, default=1, help="repeat with N seeds; mean and spread per cell")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for the rcmae systems; ae.KEY=V / knn.KEY=V go to that baseline")
    _add_benchmark_aug_flags(p)
    p.set_defaults(func=_cmd_benchmark)


# ---------------------------------------------------------------- figures
def _cmd_figures(args: argparse.Namespace) -> int:
    from rcmae.evaluation import figures

    for path in figures.write_figures(Path(args.run), Path(args.out), scorer=args.scorer, seed=args.seed):
        print(path)
    return 0


def add_figures(sub) -> None:
    p = sub.add_parser("figures", help="the paper's figures as PNG + SVG: t-SNE, ROC, score histograms, curves")
    p.add_argument("--run", required=True, help="an evaluated run folder")
    p.add_argument("--out", required=True, help="folder for the .png/.svg files (and the plotted points as CSV)")
    p.add_argument("--scorer", default=None, help="scorer for ROC and histograms (default: the run's default)")
    p.add_argument("--seed", type=int, default=0, help="t-SNE seed (default 0)")
    p.set_defaults(func=_cmd_figures)


# ---------------------------------------------------------------- reproduce
def _cmd_reproduce(args: argparse.Namespace) -> int:
    from rcmae.evaluation import reproduce

    arms = tuple(a for a in args.arms.split(",") if a)
    if not arms or any(a not in reproduce.ARMS for a in arms):
        raise UsageError(f"--arms {args.arms!r}: a comma list of {', '.join(reproduce.ARMS)}")
    opts = reproduce.Options(
        out=Path(args.out), data=Path(args.data) if args.data else None, mirror=args.mirror, preset=args.preset,
        overrides=list(args.set), pretrain_data=args.pretrain_data, arms=arms, gpus=args.gpus,
        aug_model=args.aug_model, per_clip=args.per_clip, aug_steps=args.aug_steps, bank_shards=args.bank_shards,
        seed=args.seed,
    )
    if args.dry_run:
        from rcmae.evaluation.reproduce.cost import Throughput

        throughput = Throughput(args.gpu, args.train_utilisation, args.audioldm_utilisation)
        try:
            throughput.check()
        except ValueError as err:
            raise UsageError(str(err)) from None
        measure = False if args.no_measure else (True if args.measure else None)
        reproduce.dry_run(opts, step_times=args.step_times, clips=args.clips, measure=measure,
                          finetune_clips=args.finetune_clips, throughput=throughput)
        return 0
    report = reproduce.run_all(opts, cli_main=args.cli_main)
    print(Path(report).read_text())
    return 0


def add_reproduce(sub) -> None:
    p = sub.add_parser("reproduce", help="the paper's DCASE 2020 experiments (Tables 3 and 4) in one command")
    p.add_argument("--out", required=True, help="folder for data (when fetched), bank, runs, logs and the report")
    p.add_argument("--data", default=None,
                   help="an existing DCASE 2020 Task 2 folder (dev_data/ + eval_data/); default: fetch from Zenodo")
    p.add_argument("--mirror", default="https://zenodo.org", help="archive server (default https://zenodo.org)")
    p.add_argument("--preset", default="paper", help="training preset (default paper)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    p.add_argument("--pretrain-data", choices=["all", "train"], default="all",
                   help="all: every clip, as the paper's 'all audios' (default); train: training clips only")
    p.add_argument("--arms", default="rcmae,rcmae-nodda", help="Table 3 arms to run (default both)")
    p.add_argument("--gpus", type=int, default=None, help="GPUs for banks and DDP training (default: all visible)")
    p.add_argument("--aug-model", default=None, help="AudioLDM folder or model id (default cvssp/audioldm-s-full-v2)")
    p.add_argument("--per-clip", type=int, default=4,
                   help="AudioLDM copies per clip, one drawn per clip per epoch (default 4)")
    p.add_argument("--aug-steps", type=lambda s: parse_pair(s, int), default=None,
                   help="AudioLDM S range MIN:MAX (default 10:50, the paper's Table 2)")
    p.add_argument("--bank-shards", type=int, default=None, help="bank processes (default: one per GPU)")
    p.add_argument("--seed", type=int, default=0, help="bank seed (default 0)")
    p.add_argument("--dry-run", action="store_true", help="print the steps, data volume and estimated GPU hours")
    p.add_argument("--step-times", default=None,
                   help="dry run: step times JSON written by bench/bench_paper.py on a GPU (default: measure now)")
    p.add_argument("--clips", type=int, default=None,
                   help="dry run without data: pretraining clips to price (default: DCASE 2020's published counts)")
    p.add_argument("--finetune-clips", type=int, default=None,
                   help="dry run with --clips: fine-tuning clips (default: DCASE 2020's ratio to --clips)")
    p.add_argument("--gpu", default="h100", help="dry run: GPU to price on (h100, a100, l40s, rtx4090, rtx3090ti; "
                                                  "default h100)")
    p.add_argument("--train-utilisation", type=float, default=0.40,
                   help="dry run: assumed fraction of the GPU's bf16 peak reached in training (default 0.40)")
    p.add_argument("--audioldm-utilisation", type=float, default=0.25,
                   help="dry run: assumed fraction of the peak reached by AudioLDM generation (default 0.25)")
    p.add_argument("--measure", action="store_true",
                   help="dry run: time training steps on this machine now, even without a GPU (a CPU time, said so)")
    p.add_argument("--no-measure", action="store_true",
                   help="dry run: do not measure step times, even on a GPU (the FLOP model alone)")
    p.set_defaults(func=_cmd_reproduce)
