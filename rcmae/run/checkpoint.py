"""Safe checkpoint loading: every ``.ckpt``/``.pt`` rcmae reads goes through :func:`load_checkpoint`.

A PyTorch checkpoint is a pickle, and unpickling can run arbitrary code. rcmae therefore loads
with ``torch.load(weights_only=True)``: only tensors, plain containers (dict, list, tuple),
numbers, strings and the few types in :data:`SAFE_GLOBALS` can come back; anything else is
refused before it is constructed, so a hostile run folder executes nothing. rcmae's own
checkpoints (Lightning's dict of state dicts plus the ``rcmae`` metadata of plain JSON-like
values) need nothing beyond torch's defaults, so the allowlist is empty.

Damaged files (empty, torn by a crash, not a checkpoint at all) raise :class:`CheckpointError`
with one line: which file, what is wrong and what to do.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import Any

import torch

from rcmae.models.margin import MarginConfig, STgramNet
from rcmae.models.rcmae import RCMAE, ModelConfig
from rcmae.run import config as rconfig
from rcmae.run.folder import RunFolderError

# Types beyond torch's weights-only defaults that rcmae checkpoints may hold. Empty on purpose:
# configs are stored as plain dicts; add a class here only if it is a pure data holder.
SAFE_GLOBALS: list[Any] = []


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded safely: missing, empty, torn, not a checkpoint, or holding code."""


def _default_fix(path: Path) -> str:
    stem = path.stem
    if stem.endswith("-last"):
        other = path.with_name(stem[: -len("-last")] + "-best" + path.suffix)
        return (f"resume from the other checkpoint (copy {other.name} over {path.name}) "
                "or re-run the stage into a new --out")
    if stem.endswith("-best"):
        other = path.with_name(stem[: -len("-best")] + "-last" + path.suffix)
        return f"use the other checkpoint ({other.name}) or re-run the stage into a new --out"
    return "delete it and re-run the command that wrote it"


# Pickle instructions that call or build objects: what a checkpoint of tensors and plain containers never needs.
_CODE_OPS = {"GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD"}


def _asks_for_code(path: Path) -> bool:
    """Whether the file (or the pickle inside torch's zip) is a well-formed pickle that calls or builds objects.

    Read with ``pickletools.genops``, which decodes instructions and executes none; garbage is not a pickle.
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                name = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
                data = zf.read(name) if name else b""
        else:
            data = path.read_bytes()
        return bool({op.name for op, _, _ in pickletools.genops(data)} & _CODE_OPS)
    except Exception:  # noqa: BLE001 - not decodable as a pickle: corrupt, not hostile
        return False


def load_checkpoint(path: str | os.PathLike, fix: str | None = None) -> dict:
    """Load a checkpoint with ``weights_only=True`` (no code runs) onto the CPU.

    Args:
        path: The ``.ckpt`` / ``.pt`` file.
        fix: What the user should do when it is damaged (default: the other checkpoint of the
            stage, or re-running the stage).

    Returns:
        The checkpoint's top-level dict.

    Raises:
        CheckpointError: one line naming the file, the problem and the fix.
    """
    path = Path(path)
    fix = fix or _default_fix(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; {fix}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: empty checkpoint (0 bytes: its write was interrupted); {fix}")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message is a paragraph that ends by suggesting the unsafe loader: keep only the cause.
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        hostile = next((ln for ln in lines if "global" in ln.lower()), None)
        if hostile is not None:
            raise CheckpointError(
                f"{path}: refused: the checkpoint holds code or types outside the safe list ({hostile[:160]}); "
                "nothing from it was run. Only load runs you trust; re-run the stage to get a clean one"
            ) from err
        cause = next((ln for ln in lines if not ln.startswith(("Weights only", "Please file", "Check the"))),
                     type(err).__name__)
        if _asks_for_code(path):
            # A well-formed pickle that calls or builds objects (a legacy or hand-made one): it may hold code, so
            # never suggest another file of the same run; the safe loader ran none of it.
            kind = "a legacy pickle (not torch's zip format)" if not zipfile.is_zipfile(path) else "a pickle"
            raise CheckpointError(
                f"{path}: refused: {kind} that calls or builds objects the safe loader will not ({cause[:100]}); it "
                "may hold code, and nothing from it was run. Only load runs you trust; re-run the stage into a new "
                "--out (copying another checkpoint of this run over it is no fix: it may be hostile too)"
            ) from err
        raise CheckpointError(f"{path}: corrupt checkpoint (not a readable torch file: {cause[:160]}); {fix}") from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: truncated or corrupt checkpoint ({size} bytes; {first[:160]}); {fix}"
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not an rcmae checkpoint (holds a {type(state).__name__}, not a dict); {fix}")
    return state


def model_from_checkpoint(ckpt: Path) -> tuple[RCMAE | STgramNet, dict]:
    """Rebuild a run's model (RC-MAE or the margin family) from a stage checkpoint; returns it and its metadata."""
    state = load_checkpoint(ckpt)
    meta = state.get("rcmae")
    if not isinstance(meta, dict) or not isinstance(meta.get("model_config"), dict) \
            or not isinstance(state.get("state_dict"), dict):
        raise RunFolderError(f"{ckpt}: not an rcmae checkpoint (no rcmae.model_config/state_dict); re-run the stage")
    try:
        if meta.get("family") == "margin":
            return model_from_state(meta, state["state_dict"]), meta
        model = RCMAE(ModelConfig(**meta["model_config"]))
        weights = {k[len("model."):]: v for k, v in state["state_dict"].items() if k.startswith("model.")}
        model.load_state_dict(weights)
    except (TypeError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RunFolderError(f"{ckpt}: weights do not fit the model in the checkpoint ({first[:160]}); "
                             "re-run the stage") from err
    return model, meta


def model_from_state(meta: dict, state_dict: dict) -> STgramNet:
    """Rebuild an :class:`STgramNet` from a checkpoint's ``rcmae`` metadata and Lightning ``state_dict``."""
    run_cfg = rconfig.config_from_dict(meta["config"])
    model = STgramNet(MarginConfig(**meta["model_config"]), run_cfg.features)
    weights = {k[len("model."):]: v for k, v in state_dict.items() if k.startswith("model.")}
    model.load_state_dict(weights)
    return model
