"""Rescoring a finished run under other score settings (``rcmae benchmark --rescore --set score.KEY=VALUE``).

A rescored row is made by a flag, never by a hand edit: the run is copied, the copy gets the ``score.*``
overrides, and the copy is fitted and scored. The trained run is never touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from rcmae.files import check_replaceable, read_json


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


def _check_rescored_copy(dest: Path) -> None:
    """Refuse, in one line, a ``dest`` that is not empty and not an earlier rescored copy (a folder whose run.json
    records rescore_overrides): a trained run that happens to sit there, or any other folder, is never replaced."""
    if not dest.exists():
        return
    check_replaceable(dest, "run.json", "rescored run folder", flag="a rescore")
    if any(dest.iterdir()) and "rescore_overrides" not in read_json(dest / "run.json"):
        raise ValueError(f"{dest}: a run folder that is not a rescored copy (its run.json has no "
                         "rescore_overrides); a rescore replaces only its own copies. Move it away")


def rescored_copy(run: Path, dest: Path, score_overrides: list[str]) -> Path:
    """A copy of ``run`` (weights, references, no ``eval/``) at ``dest`` whose config has ``score_overrides``.

    The original run is never touched; the copy's ``run.json`` records the overrides (``rescore_overrides``) and
    its scorers are fitted afresh (the score settings are part of every fit's stamp).
    """
    from rcmae.run.config import load_config, save_config
    from rcmae.run.folder import update_run_json

    _check_rescored_copy(dest)
    # Built beside dest in a folder made now, then moved into place: an interrupted copy never looks finished.
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    copy = staging / dest.name
    try:
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("eval", "*.lock", "progress.json"))
        save_config(load_config(copy / "config.yaml", score_overrides), copy / "config.yaml")
        update_run_json(copy, rescore_overrides=list(score_overrides), rescored_from=str(run))
        if dest.exists():
            _check_rescored_copy(dest)  # again, right before it goes: the copy above took a while
            if any(dest.iterdir()):
                shutil.rmtree(dest)  # an earlier rescored copy: its run.json records rescore_overrides (just checked)
            else:
                dest.rmdir()  # empty: rmdir removes nothing else, and fails if anything appeared meanwhile
        os.replace(copy, dest)
    finally:
        # Only what this call made: the copy it was building (gone once moved into place), then mkdtemp's folder.
        shutil.rmtree(copy, ignore_errors=True)
        with contextlib.suppress(OSError):
            staging.rmdir()
    return dest
