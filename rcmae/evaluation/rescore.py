"""Rescoring a finished run under other score settings (``rcmae benchmark --rescore --set score.KEY=VALUE``).

A rescored row is made by a flag, never by a hand edit: the run is copied, the copy gets the ``score.*``
overrides, and the copy is fitted and scored. The trained run is never touched.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rcmae.files import check_replaceable


def split_rescore_overrides(run: Path, overrides: list[str]) -> list[str]:
    """The ``score.*`` overrides of a rescore; refuse any other override that would change the trained run.

    A training setting (``pretrain.epochs=...``) that the run already has is accepted (the benchmark passes the
    overrides it trained with); one that differs needs retraining, so it is an error naming the key.
    """
    from rcmae.run.config import apply_overrides, config_to_dict, load_config

    score_part = [o for o in overrides if o.split("=", 1)[0].strip().startswith("score.")]
    rest = [o for o in overrides if o not in score_part]
    have = load_config(run / "config.yaml")
    want = apply_overrides(have, rest)
    if config_to_dict(want) != config_to_dict(have):
        changed = [o.split("=", 1)[0].strip() for o in rest
                   if config_to_dict(apply_overrides(have, [o])) != config_to_dict(have)]
        raise ValueError(f"{run}: --rescore cannot change training settings ({', '.join(changed)}); only score.* "
                         "overrides rescore a trained run: drop --rescore to train again")
    return score_part


def rescored_copy(run: Path, dest: Path, score_overrides: list[str]) -> Path:
    """A copy of ``run`` (weights, references, no ``eval/``) at ``dest`` whose config has ``score_overrides``.

    The original run is never touched; the copy's ``run.json`` records the overrides (``rescore_overrides``) and
    its scorers are fitted afresh (the score settings are part of every fit's stamp).
    """
    from rcmae.run.config import load_config, save_config
    from rcmae.run.folder import update_run_json

    if dest.exists():
        check_replaceable(dest, ("run.json", "config.yaml"), "rescored run folder", flag="a rescore")
        shutil.rmtree(dest)
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("eval", "*.lock", "progress.json"))
    save_config(load_config(dest / "config.yaml", score_overrides), dest / "config.yaml")
    update_run_json(dest, rescore_overrides=list(score_overrides), rescored_from=str(run))
    return dest
