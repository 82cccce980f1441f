"""The `rcmae` command: one parser, one small module per command group."""

from __future__ import annotations

import argparse
import os
import sys

from rcmae.cli.augment import add_augment, add_prompts
from rcmae.cli.common import UsageError
from rcmae.cli.data import add_demo_data, add_index
from rcmae.cli.deploy import add_demo_app, add_export, add_monitor
from rcmae.cli.evaluation import add_baseline, add_benchmark, add_figures, add_reproduce
from rcmae.cli.jobs import add_jobs
from rcmae.cli.score import add_evaluate, add_fit, add_score
from rcmae.cli.train import add_finetune, add_pretrain


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rcmae",
        description="rcmae: unsupervised anomalous machine-sound detection (RC-MAE and baselines).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        add_demo_data,
        add_index,
        add_fit,
        add_pretrain,
        add_finetune,
        add_evaluate,
        add_score,
        add_augment,
        add_prompts,
        add_baseline,
        add_benchmark,
        add_figures,
        add_reproduce,
        add_jobs,
        add_export,
        add_monitor,
        add_demo_app,
    ):
        add(sub)
    # Commands that run other commands in this process (reproduce's single-device steps) get main passed down.
    parser.set_defaults(cli_main=main)
    return parser


def main(argv: list[str] | None = None) -> int:
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

