"""`rcmae augment` and `rcmae prompts`."""

from __future__ import annotations

import argparse
from pathlib import Path

from rcmae.augment.llm import generate_prompts
from rcmae.augment.prompts import TABLE1_PROMPTS, PromptLibrary, PromptLibraryError
from rcmae.cli.common import parse_pair, parse_shard


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


def add_augment(sub) -> None:
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
    p.add_argument("--steps", type=lambda s: parse_pair(s, int), default=bank.PAPER_STEPS,
                   help="AudioLDM: S range MIN:MAX, drawn per clip (default 10:50, the paper's Table 2)")
    p.add_argument("--guidance", type=float, default=bank.PAPER_GUIDANCE,
                   help="AudioLDM: classifier-free guidance (default 2.5, the paper's Table 2)")
    p.add_argument("--snr", type=parse_pair, default=(0.0, 10.0), help="procedural: mix SNR range in dB MIN:MAX")
    p.add_argument("--seed", type=int, default=0, help="base seed; each clip gets its own recorded seed")
    p.add_argument("--shard", type=parse_shard, default=(0, 1), help="do shard I of N (for several GPUs/machines)")
    p.add_argument("--device", default=None, help="e.g. cuda:0 (default: cuda if available, else cpu)")
    p.add_argument("--allow-download", action="store_true", help="AudioLDM: allow fetching weights from the hub")
    p.add_argument("--limit", type=int, default=None, help="only the first N clips (quick looks)")
    p.set_defaults(func=_cmd_augment)


# ---------------------------------------------------------------- prompts
def add_prompts(sub) -> None:
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


# ---------------------------------------------------------------- command line
def _cmd_prompts(args: argparse.Namespace) -> int:
    """``rcmae prompts list|add|add-paper|remove|generate`` (see ``rcmae.cli``)."""
    from rcmae.workspace import Workspace

    library = PromptLibrary(Path(args.library) if args.library else Workspace.default().prompts)
    if args.action == "list":
        for p in library.list():
            used = f" used by {', '.join(p['used_by'])}" if p["used_by"] else ""
            tags = f" [{', '.join(p['tags'])}]" if p["tags"] else ""
            print(f"{p['id']:>5}  {p['text']}{tags}{used}")
        return 0
    if args.action == "add":
        item = library.add(args.text, tags=args.tag, notes=args.note)
        print(f"added {item['id']}: {item['text']}")
        return 0
    if args.action == "add-paper":
        added = library.add_table1()
        for item in added:
            print(f"added {item['id']}: {item['text']}")
        there = len(TABLE1_PROMPTS) - len(added)
        print(f"{library.path}: {len(added)} Table 1 prompt(s) added, {there} already there")
        return 0
    if args.action == "remove":
        item = library.remove(args.id)
        print(f"removed {item['id']}: {item['text']}")
        return 0
    if args.action == "generate":
        prompts, source = generate_prompts(
            args.n, model=args.model, base_url=args.base_url, seed=args.seed,
            use_llm=False if args.template else None, timeout=getattr(args, "timeout", 30.0), existing=library.texts(),
        )
        print(f"prompts from: {source}")
        if len(prompts) < args.n:
            print(f"asked for {args.n}, got {len(prompts)} valid new prompts")
        for text in prompts:
            if args.dry_run:
                print(f"  {text}")
            else:
                item = library.add(text, tags=["generated", "template" if source == "template" else "llm"],
                                   notes=f"generated by {source}")
                print(f"added {item['id']}: {text}")
        return 0
    raise PromptLibraryError(f"unknown prompts action {args.action!r}; use list, add, add-paper, remove or generate")
