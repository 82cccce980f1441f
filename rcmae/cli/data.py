"""`rcmae demo-data` and `rcmae index`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


# ---------------------------------------------------------------- demo-data
def _cmd_demo_data(args: argparse.Namespace) -> int:
    from rcmae.data import demo

    out = Path(args.out)
    if args.recording:
        from rcmae.data.demo.recording import make_demo_recording

        rec = Path(args.recording)
        if not (args.if_missing and rec.is_file()):
            make_demo_recording(rec, seconds=args.recording_seconds, seed=args.seed)
            print(f"demo recording ({args.recording_seconds:g} s, anomalies listed in {rec.with_suffix('.csv')}) "
                  f"written to {rec}")
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


def add_demo_data(sub) -> None:
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
    p.add_argument("--recording", default=None, metavar="WAV",
                   help="also write a long recording of demo fan ID 00 with anomalous stretches (for rcmae monitor "
                   "and the Monitor page) and its truth table WAV.csv")
    p.add_argument("--recording-seconds", type=float, default=180.0, help="its length (default 180 s)")
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


def add_index(sub) -> None:
    p = sub.add_parser("index", help="print the per-type/ID (2021+: type/section/domain)/split/label clip counts")
    p.add_argument("dir", help="a DCASE 2020 / 2021+ data folder, or one machine-type folder")
    p.add_argument("--csv", help="also write the full per-clip index to this CSV file")
    p.add_argument("--skip-unmatched", action="store_true",
                   help="skip (and list) .wav files that fit no layout instead of stopping at the first")
    p.add_argument("--ground-truth", metavar="DIR",
                   help="folder with the challenge's ground_truth_{data,domain,attributes}/ CSVs (DCASE 2021+ eval "
                        "sets; those under DIR itself are found without this)")
    p.set_defaults(func=_cmd_index)
