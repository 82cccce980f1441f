"""`rcmae pretrain` and `rcmae finetune`."""

from __future__ import annotations

import argparse
from pathlib import Path

from rcmae.cli.common import add_trainer_flags, fit_scorers_after_training


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from rcmae.training import stages as train

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
    fit_scorers_after_training(run)
    print(f"pretrained run: {run}")
    return 0


def add_pretrain(sub) -> None:
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
    add_trainer_flags(p)
    p.set_defaults(func=_cmd_pretrain)


def _cmd_finetune(args: argparse.Namespace) -> int:
    from rcmae.training import stages as train

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
    fit_scorers_after_training(run)
    print(f"fine-tuned run: {run}")
    return 0


def add_finetune(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a pretrained run on machine-ID, section or attribute classes "
                                        "(SupCon + CE; finetune.classes)")
    p.add_argument("--run", required=True, help="a pretrained run folder")
    p.add_argument("--data", default=None, help="data folder (default: the one the run was pretrained on)")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's fine-tuning epochs")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    p.add_argument("--resume", action="store_true", help="continue fine-tuning from its last checkpoint")
    add_trainer_flags(p)
    p.set_defaults(func=_cmd_finetune)
