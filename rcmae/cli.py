"""The ``rcmae`` command: parses arguments, calls one engine function per subcommand, prints.

Every subcommand is a thin wrapper: the work lives in the engine modules, so the workbench
and the Python API do exactly what the command line does. Engine imports are deferred to
the handlers so that ``rcmae --help`` stays fast and needs no torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


class UsageError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _pair(text: str, kind=float) -> tuple:
    """Parse ``MIN:MAX`` (or a single value) into a (min, max) tuple."""
    parts = text.split(":")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX, got {text!r}")
    try:
        lo, hi = kind(parts[0]), kind(parts[1])
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX numbers, got {text!r}") from err
    if lo > hi:
        raise argparse.ArgumentTypeError(f"MIN must not exceed MAX in {text!r}")
    return lo, hi


def _shard(text: str) -> tuple[int, int]:
    """Parse ``I/N`` (0-based shard I of N)."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected I/N (e.g. 0/4), got {text!r}") from err
    if n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"shard {text!r}: need 0 <= I < N")
    return i, n


def _add_trainer_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", default="auto", help="GPUs to use: a count, a list like 0,1, or 'auto' (default)")
    p.add_argument("--num-nodes", type=int, default=1, help="number of nodes for multi-node DDP (default 1)")
    p.add_argument("--precision", default=None, help="e.g. bf16-mixed (GPU default), 32-true (CPU default)")
    p.add_argument("--accelerator", default="auto", help="auto (default), cpu or gpu")


# ---------------------------------------------------------------- demo-data
def _cmd_demo_data(args: argparse.Namespace) -> int:
    from rcmae import demo

    out = Path(args.out)
    if args.if_missing and demo.is_demo_data(out):
        print(f"demo data already at {out}")
        return 0
    root = demo.make_demo_data(
        out,
        seed=args.seed,
        train_per_id=args.train_per_id,
        test_per_id=args.test_per_id,
        progress=not args.quiet,
        mode=args.mode,
        target_train_per_id=args.target_train_per_id,
    )
    print(f"demo data written to {root}")
    return 0


def _add_demo_data(sub) -> None:
    p = sub.add_parser("demo-data", help="write the synthetic demo factory data set (DCASE 2020 layout)")
    p.add_argument("out", help="output folder (dev_data/<type>/{train,test} is created inside)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same bytes")
    p.add_argument("--train-per-id", type=int, default=50, help="normal training clips per machine ID (default 50)")
    p.add_argument(
        "--test-per-id", type=int, default=20, help="normal and anomalous test clips each per ID (default 20)"
    )
    p.add_argument("--if-missing", action="store_true", help="do nothing when OUT already holds demo data")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--mode", default="2020", choices=["2020", "near-identical", "domain-shift", "2023"],
        help="2020 (default: the original set); near-identical (units of a type differ by a few percent); "
        "domain-shift (2020 layout, many source + a few target-condition training clips); "
        "2023 (DCASE 2023 layout: sections, source/target domains, attributes). See docs/demo-data.md",
    )
    p.add_argument(
        "--target-train-per-id", type=int, default=3,
        help="target-domain training clips per ID/section in the domain-shift and 2023 modes (default 3); "
        "--train-per-id then counts the source ones",
    )
    p.set_defaults(func=_cmd_demo_data)


# ---------------------------------------------------------------- index
def _cmd_index(args: argparse.Namespace) -> int:
    from rcmae import data

    index = data.index_dataset(Path(args.dir), strict=not args.skip_unmatched, ground_truth=args.ground_truth)
    domains = data.has_domains(index)
    # DCASE 2021-2025 data: counts per type/section/domain; 2020: per type/ID.
    table = data.domain_counts(index) if domains else data.count_table(index)
    if args.csv:
        index.to_csv(args.csv, index=False)
    print(table.to_string(index=False))
    print(f"{len(index)} clips, {index['machine_type'].nunique()} machine types, "
          f"{len(data.id_classes(index))} train ID classes")
    if domains:
        print(f"{len(data.attribute_classes(index))} train section/attribute classes; "
              f"{index.attrs.get('ground_truth', 0)} clips labelled from ground-truth CSVs")
    for path, problem in index.attrs.get("skipped", []):
        print(f"skipped {path}: {problem}", file=sys.stderr)
    return 0


def _add_index(sub) -> None:
    p = sub.add_parser("index", help="print the per-type/ID (2021+: type/section/domain)/split/label clip counts")
    p.add_argument("dir", help="a DCASE 2020 / 2021+ data folder, or one machine-type folder")
    p.add_argument("--csv", help="also write the full per-clip index to this CSV file")
    p.add_argument("--skip-unmatched", action="store_true",
                   help="skip (and list) .wav files that fit no layout instead of stopping at the first")
    p.add_argument("--ground-truth", metavar="DIR",
                   help="folder with the challenge's ground_truth_{data,domain,attributes}/ CSVs (DCASE 2021+ eval "
                        "sets; those under DIR itself are found without this)")
    p.set_defaults(func=_cmd_index)


# ---------------------------------------------------------------- pretrain / finetune
def _fit_scorers_after_training(run: Path) -> None:
    """Fit thresholds and train embeddings of a freshly trained run (first process only under DDP).

    Training never imports scoring (the run folder is the contract): the orchestration calls it here.
    """
    if any(int(os.environ.get(var, 0)) != 0 for var in ("RANK", "LOCAL_RANK", "NODE_RANK")):
        return
    from rcmae import score

    score.fit_run(run)


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from rcmae import train

    run = train.pretrain(
        data=Path(args.data),
        out=Path(args.out),
        preset=args.preset,
        aug=args.aug,
        epochs=args.epochs,
        overrides=args.set,
        resume=args.resume,
        devices=args.devices,
        num_nodes=args.num_nodes,
        precision=args.precision,
        accelerator=args.accelerator,
        replay=args.replay,
    )
    _fit_scorers_after_training(run)
    print(f"pretrained run: {run}")
    return 0


def _add_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="self-supervised RC-MAE pretraining (MAE + InfoNCE + VCR)")
    p.add_argument("--data", required=True, help="data folder (its train clips are used)")
    p.add_argument("--out", required=True, help="run folder to create (or resume)")
    p.add_argument("--preset", default="tiny",
                   help="tiny | paper | paper+ | idprob | audiomae | margin (the angular-margin classifier, one "
                   "stage) | a YAML file (default tiny)")
    p.add_argument("--aug", default="specaugment", help="specaugment (the paper's 'without DDA' arm) or a bank folder")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's pretraining epochs")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--replay", default=None, metavar="RUN",
                   help="with a bank: pair clips with the copies RUN drew per epoch (its augment_draws.jsonl)")
    _add_trainer_flags(p)
    p.set_defaults(func=_cmd_pretrain)


def _cmd_finetune(args: argparse.Namespace) -> int:
    from rcmae import train

    run = train.finetune(
        run=Path(args.run),
        data=Path(args.data) if args.data else None,
        epochs=args.epochs,
        overrides=args.set,
        resume=args.resume,
        devices=args.devices,
        num_nodes=args.num_nodes,
        precision=args.precision,
        accelerator=args.accelerator,
    )
    _fit_scorers_after_training(run)
    print(f"fine-tuned run: {run}")
    return 0


def _add_finetune(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a pretrained run on machine-ID, section or attribute classes "
                                        "(SupCon + CE; finetune.classes)")
    p.add_argument("--run", required=True, help="a pretrained run folder")
    p.add_argument("--data", default=None, help="data folder (default: the one the run was pretrained on)")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's fine-tuning epochs")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    p.add_argument("--resume", action="store_true", help="continue fine-tuning from its last checkpoint")
    _add_trainer_flags(p)
    p.set_defaults(func=_cmd_finetune)


# ---------------------------------------------------------------- evaluate / score
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from rcmae import score

    results = score.evaluate_run(
        Path(args.run), data=Path(args.data) if args.data else None, scorer=args.scorer
    )
    for name, res in results.items():
        avg = res["average"]
        line = (f"{name:>8}: AUC {avg['auc']:.4f}  pAUC {avg['pauc']:.4f}" if avg["auc"] is not None else
                f"{name:>8}: no labelled test clips (scores and decisions written for submission)")
        official = res.get("official") or {}
        if official.get("score") is not None:  # DCASE 2021+ data (docs/metrics.md)
            line += (f"  | AUC source {official['hmean_source']:.4f}  AUC target {official['hmean_target']:.4f}  "
                     f"pAUC {official['pauc_hmean']:.4f}  official score {official['score']:.4f} (harmonic means)")
        print(line)
    print(f"results in {Path(args.run) / 'eval'}")
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score every labelled test clip; write eval/results*.json and challenge CSVs")
    p.add_argument("--run", required=True, help="a run folder")
    p.add_argument("--data", default=None, help="data folder (default: the run's)")
    p.add_argument("--scorer", default=None, help="only this scorer (default: all; results.json holds the default)")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_score(args: argparse.Namespace) -> int:
    import json

    from rcmae import score

    detector = score.Detector.load(Path(args.run))
    for note in detector.notes:
        print(note, file=sys.stderr)
    rows = detector.score_paths(
        [Path(p) for p in args.paths], scorer=args.scorer, machine_type=args.machine_type, machine_id=args.machine_id
    )
    for r in rows:
        if r.get("note"):  # clips of another length than the run's: said, never silently padded or cut
            print(f"{r['path']}: {r['note']}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            if r.get("error"):
                print(f"{r['path']}: skipped ({r['error']})")
            elif r["threshold"] is None:
                print(f"{r['path']}: score {r['score']:.4f}  ({r['scorer']}; no threshold fitted)")
            else:
                print(f"{r['path']}: score {r['score']:.4f}  threshold {r['threshold']:.4f}  {r['decision']}")
    return 1 if any(r.get("error") for r in rows) else 0


def _add_score(sub) -> None:
    p = sub.add_parser("score", help="score clips with a trained run: score, threshold, decision")
    p.add_argument("--run", required=True, help="a run folder")
    p.add_argument("paths", nargs="+", help="wav files or folders")
    p.add_argument("--scorer", default=None, help="idprob | knn | recon (default: the run's default)")
    p.add_argument("--machine-type", default=None, help="machine type when file names do not carry it")
    p.add_argument("--machine-id", default=None, help="machine ID when file names do not carry it")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_score)


# ---------------------------------------------------------------- augment
def _cmd_augment(args: argparse.Namespace) -> int:
    from rcmae.augment import bank

    summary = bank.build_bank(
        data=Path(args.data),
        out=Path(args.out),
        backend=args.backend,
        model=args.model,
        prompts=Path(args.prompts) if args.prompts else None,
        per_clip=args.per_clip,
        t0=args.t0,
        steps=args.steps,
        guidance=args.guidance,
        snr=args.snr,
        seed=args.seed,
        shard=args.shard,
        device=args.device,
        allow_download=args.allow_download,
        limit=args.limit,
    )
    print(summary)
    return 0


def _add_augment(sub) -> None:
    from rcmae.augment import bank

    p = sub.add_parser("augment", help="write an augmentation bank (procedural or AudioLDM)")
    p.add_argument("--data", required=True, help="data folder (its train clips are augmented)")
    p.add_argument("--out", required=True, help="bank folder (created, or resumed)")
    p.add_argument("--backend", choices=["procedural", "audioldm"], default="procedural")
    p.add_argument("--model", default=None, help="AudioLDM folder or model id (default cvssp/audioldm-s-full-v2)")
    p.add_argument("--prompts", default=None, help="prompt library YAML (default: the paper's six prompts)")
    p.add_argument("--per-clip", type=int, default=1, help="augmentations per clip (default 1)")
    p.add_argument("--t0", type=float, default=bank.DEFAULT_T0,
                   help="AudioLDM: fraction of the S steps that are re-noised (default 0.5)")
    p.add_argument("--steps", type=lambda s: _pair(s, int), default=bank.PAPER_STEPS,
                   help="AudioLDM: S range MIN:MAX, drawn per clip (default 10:50, the paper's Table 2)")
    p.add_argument("--guidance", type=float, default=bank.PAPER_GUIDANCE,
                   help="AudioLDM: classifier-free guidance (default 2.5, the paper's Table 2)")
    p.add_argument("--snr", type=_pair, default=(0.0, 10.0), help="procedural: mix SNR range in dB MIN:MAX")
    p.add_argument("--seed", type=int, default=0, help="base seed; each clip gets its own recorded seed")
    p.add_argument("--shard", type=_shard, default=(0, 1), help="do shard I of N (for several GPUs/machines)")
    p.add_argument("--device", default=None, help="e.g. cuda:0 (default: cuda if available, else cpu)")
    p.add_argument("--allow-download", action="store_true", help="AudioLDM: allow fetching weights from the hub")
    p.add_argument("--limit", type=int, default=None, help="only the first N clips (quick looks)")
    p.set_defaults(func=_cmd_augment)


# ---------------------------------------------------------------- prompts
def _cmd_prompts(args: argparse.Namespace) -> int:
    from rcmae import prompts

    return prompts.main(args)


def _add_prompts(sub) -> None:
    p = sub.add_parser("prompts", help="the factory-noise prompt library: list, add, add-paper, remove, generate")
    p.add_argument("--library", default=None, help="prompt library YAML (default: <workspace>/prompts.yaml)")
    ps = p.add_subparsers(dest="action", required=True)
    ps.add_parser("list", help="list prompts")
    a = ps.add_parser("add", help="add a prompt")
    a.add_argument("text")
    a.add_argument("--tag", action="append", default=[])
    a.add_argument("--note", default="")
    ps.add_parser("add-paper", help="add the paper's Table 1 prompts (word for word) that the library lacks")
    r = ps.add_parser("remove", help="remove a prompt by id")
    r.add_argument("id")
    g = ps.add_parser("generate", help="generate prompts with an LLM (or the built-in template generator)")
    g.add_argument("-n", type=int, default=5, help="how many (default 5)")
    g.add_argument("--model", default=None, help="LLM model name (default from settings or gpt-4o-mini)")
    g.add_argument("--base-url", default=None, help="OpenAI-compatible server (default: OPENAI_BASE_URL)")
    g.add_argument("--template", action="store_true", help="use the template generator even if an LLM is set")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the LLM (default 30)")
    g.add_argument("--dry-run", action="store_true", help="print, do not add to the library")
    p.set_defaults(func=_cmd_prompts)


# ---------------------------------------------------------------- baseline / benchmark
def _cmd_baseline(args: argparse.Namespace) -> int:
    from rcmae import baselines

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


def _add_baseline(sub) -> None:
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
    from rcmae import benchmark

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
    from rcmae import suite

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
    p.add_argument("--aug-steps", type=lambda s: _pair(s, int), default=None,
                   help="AudioLDM: S range MIN:MAX (default 10:50, the paper's Table 2)")
    p.add_argument("--aug-device", default=None, help="AudioLDM device, e.g. cuda:0")
    p.add_argument("--aug-limit", type=int, default=None, help="augment only the first N clips (quick looks)")
    p.add_argument("--allow-download", action="store_true", help="AudioLDM: allow fetching weights from the hub")


def _add_benchmark(sub) -> None:
    p = sub.add_parser("benchmark", help="run several systems on the same data (or a suite of sets); one table")
    p.add_argument("--data", default=None, help="data folder with train clips and labelled test clips")
    p.add_argument("--suite", default=None, metavar="NAME",
                   help="run over every set of a suite (default, tiny; `--suite list` shows them) and report "
                        "each set and the mean; see docs/benchmark.md")
    p.add_argument("--suite-data", default=None, metavar="DIR",
                   help="where suite sets are generated and reused (default <workspace>/data/suites)")
    p.add_argument("--real-samples", default=None, metavar="DIR",
                   help="DCASE 2020 sample folder for the suite's real-slider set "
                        "(default ../shared/data/dcase2020-samples; skipped with a note when absent)")
    p.add_argument("--rescore", action="store_true",
                   help="score finished rcmae runs in OUT again with the current scorers (no retraining)")
    p.add_argument("--report-only", action="store_true",
                   help="with --suite: run nothing, report the runs already finished in OUT (and what is missing)")
    p.add_argument("--out", default=None,
                   help="folder for benchmark.json, table.md and each system's outputs (suite.json, suite.md, "
                        "sets/<set>/ with --suite); required")
    p.add_argument("--systems", default="rcmae,ae,knn",
                   help="comma list of: rcmae, rcmae-nodda, rcmae-novcr, rcmae-contrastive, rcmae-mae, "
                        "rcmae-nopretrain, ae, knn (default rcmae,ae,knn)")
    p.add_argument("--preset", default="tiny", help="rcmae preset: tiny | paper | a YAML file (default tiny)")
    p.add_argument("--repeat", type=int, default=1, help="repeat with N seeds; mean and spread per cell")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for the rcmae systems; ae.KEY=V / knn.KEY=V go to that baseline")
    _add_benchmark_aug_flags(p)
    p.set_defaults(func=_cmd_benchmark)


# ---------------------------------------------------------------- figures
def _cmd_figures(args: argparse.Namespace) -> int:
    from rcmae import figures

    for path in figures.write_figures(Path(args.run), Path(args.out), scorer=args.scorer, seed=args.seed):
        print(path)
    return 0


def _add_figures(sub) -> None:
    p = sub.add_parser("figures", help="the paper's figures as PNG + SVG: t-SNE, ROC, score histograms, curves")
    p.add_argument("--run", required=True, help="an evaluated run folder")
    p.add_argument("--out", required=True, help="folder for the .png/.svg files (and the plotted points as CSV)")
    p.add_argument("--scorer", default=None, help="scorer for ROC and histograms (default: the run's default)")
    p.add_argument("--seed", type=int, default=0, help="t-SNE seed (default 0)")
    p.set_defaults(func=_cmd_figures)


# ---------------------------------------------------------------- reproduce
def _cmd_reproduce(args: argparse.Namespace) -> int:
    from rcmae import reproduce

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
        reproduce.dry_run(opts, step_times=args.step_times, clips=args.clips, measure=not args.no_measure)
        return 0
    report = reproduce.run_all(opts)
    print(Path(report).read_text())
    return 0


def _add_reproduce(sub) -> None:
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
    p.add_argument("--aug-steps", type=lambda s: _pair(s, int), default=None,
                   help="AudioLDM S range MIN:MAX (default 10:50, the paper's Table 2)")
    p.add_argument("--bank-shards", type=int, default=None, help="bank processes (default: one per GPU)")
    p.add_argument("--seed", type=int, default=0, help="bank seed (default 0)")
    p.add_argument("--dry-run", action="store_true", help="print the steps, data volume and estimated GPU hours")
    p.add_argument("--step-times", default=None,
                   help="dry run: step times JSON written by bench/bench_paper.py on a GPU (default: measure now)")
    p.add_argument("--clips", type=int, default=None, help="dry run without data: estimate for this many clips")
    p.add_argument("--no-measure", action="store_true", help="dry run: do not measure step times")
    p.set_defaults(func=_cmd_reproduce)


# ---------------------------------------------------------------- jobs
def _cmd_jobs(args: argparse.Namespace) -> int:
    from rcmae import jobs

    return jobs.main(args)


def _add_jobs(sub) -> None:
    p = sub.add_parser("jobs", help="background jobs: list, launch, cancel, log, run-queue")
    p.add_argument("--workspace", default=None, help="workspace folder (default: $RCMAE_WORKSPACE or ./workspace)")
    js = p.add_subparsers(dest="action", required=True)
    js.add_parser("list", help="list jobs and their state")
    la = js.add_parser("launch", help="queue an rcmae command as a background job")
    la.add_argument("--gpus", default="", help="GPU ids for CUDA_VISIBLE_DEVICES, e.g. 0,1 (default: CPU)")
    la.add_argument("--name", default=None)
    la.add_argument("argv", nargs=argparse.REMAINDER, help="the rcmae subcommand and its arguments")
    c = js.add_parser("cancel", help="cancel a job")
    c.add_argument("id", type=int)
    lg = js.add_parser("log", help="print the end of a job's log")
    lg.add_argument("id", type=int)
    lg.add_argument("--lines", type=int, default=40)
    rq = js.add_parser("run-queue", help="start queued jobs whose GPUs are free")
    rq.add_argument("--wait", action="store_true", help="keep starting jobs until the queue is empty")
    p.set_defaults(func=_cmd_jobs)


# ---------------------------------------------------------------- export / monitor / demo-app (deployment)
def _cmd_export(args: argparse.Namespace) -> int:
    from rcmae import export

    out = export.export_run(Path(args.run), Path(args.out), format=args.format, scorer=args.scorer,
                            examples=args.examples, overwrite=args.overwrite)
    meta = export.Bundle(out).meta
    print(f"bundle written to {out} ({meta['format']}, scorer {meta['scorer']}, {len(meta['units'])} machine(s)); "
          f"load it as {out / 'README.md'} shows")
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write a self-contained detector bundle (TorchScript or ONNX) of a run")
    p.add_argument("--run", required=True, help="a trained (and ideally evaluated) run folder")
    p.add_argument("--out", required=True, help="the bundle folder to create")
    p.add_argument("--format", default="torchscript", choices=["torchscript", "onnx"],
                   help="torchscript (load with torch alone; default) or onnx (load with onnxruntime alone)")
    p.add_argument("--scorer", default=None, help="the scorer to export (default: the run's default)")
    p.add_argument("--examples", type=int, default=3,
                   help="normal training clips per machine copied into the bundle for listening (default 3)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    p.set_defaults(func=_cmd_export)


def _cmd_monitor(args: argparse.Namespace) -> int:
    from rcmae import monitor

    out = Path(args.out) if args.out else Path(args.paths[0]).with_suffix("").parent / "monitor"
    results, skipped = monitor.monitor(args.paths, out, bundle=args.bundle, run=args.run, scorer=args.scorer,
                                       machine_type=args.machine_type, machine_id=args.machine_id, hop=args.hop,
                                       min_duration=args.min_duration, threshold=args.threshold, plot=args.plot,
                                       progress=not args.quiet)
    for res in results:
        print(f"{res.path}: {res.duration:.1f} s, {len(res.series)} windows, {len(res.events)} event(s) above "
              f"{res.threshold:.4f} ({res.scorer}, {res.machine_type}/{res.machine_id})")
        for _, ev in res.events.iterrows():
            print(f"  event {int(ev['event'])}: {ev['start_s']:.1f}-{ev['end_s']:.1f} s, peak {ev['peak_score']:.4f} "
                  f"at {ev['peak_s']:.1f} s")
        print(f"  -> {', '.join(str(p) for p in res.files.values())}")
    for path, why in skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)
    return 1 if skipped else 0


def _add_monitor(sub) -> None:
    p = sub.add_parser("monitor", help="score long recordings with a sliding window: score series, events, plot")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bundle", default=None, help="an exported bundle (rcmae export)")
    src.add_argument("--run", default=None, help="a run folder")
    p.add_argument("paths", nargs="+", help="recordings (.wav/.flac) or folders of them")
    p.add_argument("--out", default=None, help="output folder (default: monitor/ beside the first recording)")
    p.add_argument("--scorer", default=None, help="with --run: the scorer (default: the run's default)")
    p.add_argument("--machine-type", default=None, help="machine type (default: the only one, or from the path)")
    p.add_argument("--machine-id", default=None, help="machine ID (default: the only one, or id_XX in the name)")
    p.add_argument("--hop", type=float, default=1.0, help="seconds between window starts (default 1.0)")
    p.add_argument("--min-duration", type=float, default=1.0,
                   help="shortest event in seconds; shorter threshold crossings are ignored (default 1.0)")
    p.add_argument("--threshold", type=float, default=None, help="override the machine's fitted threshold")
    p.add_argument("--plot", default="html", choices=["html", "png", "none"], help="plot format (default html)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_monitor)


def _cmd_demo_app(args: argparse.Namespace) -> int:
    from rcmae import demo_app

    demo_app.launch(Path(args.bundle), host=args.host, port=args.port, share=args.share)
    return 0


def _add_demo_app(sub) -> None:
    p = sub.add_parser("demo-app", help="a Gradio demo of an exported bundle: upload or record, see the verdict")
    p.add_argument("bundle", help="an exported bundle folder (rcmae export)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true",
                   help="also open a public Gradio share link (sends traffic through Gradio's servers)")
    p.set_defaults(func=_cmd_demo_app)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rcmae",
        description="rcmae: unsupervised anomalous machine-sound detection (RC-MAE and baselines).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_demo_data,
        _add_index,
        _add_pretrain,
        _add_finetune,
        _add_evaluate,
        _add_score,
        _add_augment,
        _add_prompts,
        _add_baseline,
        _add_benchmark,
        _add_figures,
        _add_reproduce,
        _add_jobs,
        _add_export,
        _add_monitor,
        _add_demo_app,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import os

    args = build_parser().parse_args(argv)
    if os.environ.get("RCMAE_DEBUG"):
        return int(args.func(args) or 0)
    try:
        return int(args.func(args) or 0)
    except (UsageError, ValueError, FileNotFoundError, KeyError) as err:
        # Engine errors are written to be read: one line, naming the file/field and the fix.
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"rcmae {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
