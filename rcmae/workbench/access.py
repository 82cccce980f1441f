"""Who may use the workbench and where: login, allowed folders, paths kept inside the workspace."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from pathlib import Path

from rcmae.workspace import Workspace

# ---------------------------------------------------------------- access: login and allowed folders
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# The longest file name most file systems take is 255 bytes; keep room for a "-<n>" suffix and a temp prefix.
MAX_NAME_BYTES = 200


class PathNotAllowed(ValueError):
    """A typed path that leaves the workspace (``../``, an absolute path, a symlink) and no allowed root holds it."""


def login_required(address: str | None) -> bool:
    """Whether the workbench must ask for a login: it listens beyond loopback, or ``$RCMAE_REQUIRE_LOGIN`` is set.

    Args:
        address: Streamlit's ``server.address``; empty means every interface.
    """
    if os.environ.get("RCMAE_REQUIRE_LOGIN", "").strip() not in ("", "0"):
        return True
    addr = (address or "").strip().strip("[]")
    return not (addr in LOOPBACK_HOSTS or addr.startswith("127."))


def login_secret(secrets: Mapping[str, object] | None = None) -> str | None:
    """The workbench password: ``$RCMAE_PASSWORD``, else the file ``$RCMAE_PASSWORD_FILE``, else ``rcmae_password``
    in Streamlit's secrets (``.streamlit/secrets.toml``, never committed). None when none is set."""
    value = os.environ.get("RCMAE_PASSWORD", "")
    if not value and os.environ.get("RCMAE_PASSWORD_FILE"):
        path = Path(os.environ["RCMAE_PASSWORD_FILE"]).expanduser()
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as err:
            raise ValueError(f"$RCMAE_PASSWORD_FILE={path}: cannot read it ({err.strerror}); fix the path") from err
    if not value and secrets is not None:
        value = str(secrets.get("rcmae_password", "") or "")
    return value or None


def check_login(given: str, secret: str) -> bool:
    """Constant-time comparison of a typed password with the secret."""
    return hmac.compare_digest(given.encode("utf-8"), secret.encode("utf-8"))


def allowed_roots(ws: Workspace | None = None) -> list[Path]:
    """Folders typed paths may point into: the workspace the app was started with (and ``ws``), plus the
    operator's ``allowed_roots`` list in that workspace's ``settings.yaml``."""
    import yaml

    home = Workspace.default()
    roots = [home.root]
    if ws is not None and ws.root != home.root:
        roots.append(ws.root)
    if home.settings.is_file():
        try:
            extra = (yaml.safe_load(home.settings.read_text()) or {}).get("allowed_roots") or []
        except (yaml.YAMLError, AttributeError) as err:
            raise ValueError(f"{home.settings}: not valid YAML ({err}); fix allowed_roots") from err
        if isinstance(extra, str) or not isinstance(extra, list):
            raise ValueError(f"{home.settings}: allowed_roots must be a list of folders")
        roots += [Path(str(r)).expanduser().resolve() for r in extra]
    return [r.resolve() for r in roots]


def resolve_path(ws: Workspace, text: str | os.PathLike, under: str | os.PathLike | None = None) -> Path:
    """Resolve a path typed into a page; it must stay inside the workspace or an allowed root.

    Relative paths are taken from ``under`` (default: the workspace). Symlinks and ``..`` are resolved
    before the check, so neither can lead outside.

    Raises:
        PathNotAllowed: one line naming the path, where it leads, and how to allow it.
    """
    raw = str(text).strip()
    if not raw:
        raise PathNotAllowed("path: empty; type a name or a folder inside the workspace")
    if "\x00" in raw:  # no file system path holds a null byte; refused like any other bad path
        raise PathNotAllowed(f"{raw!r}: holds a null byte; type a name or a folder inside the workspace")
    base = Path(under) if under is not None else ws.root
    path = (base / Path(raw).expanduser()).resolve()
    roots = allowed_roots(ws)
    if not any(path == r or path.is_relative_to(r) for r in roots):
        home = Workspace.default()
        raise PathNotAllowed(
            f"{raw}: leads to {path}, outside the workspace {ws.root}; use a name inside it, or let the operator "
            f"add the folder to allowed_roots in {home.settings}"
        )
    return path


def guard_workspace(text: str | os.PathLike) -> Workspace:
    """The workspace named in the sidebar box: the start workspace, a folder inside it, or an allowed root."""
    home = Workspace.default()
    return Workspace(resolve_path(home, text, under=home.root.parent))


def page_workspace(text: str | os.PathLike | None) -> Workspace:
    """The workspace a page works in: the sidebar's choice when :func:`guard_workspace` allows it, else the
    start workspace (the sidebar shows why). Created when missing."""
    if not text:
        return Workspace.default().ensure()
    try:
        return guard_workspace(text).ensure()
    except PathNotAllowed:
        return Workspace.default().ensure()


def short_name(name: str, limit: int = MAX_NAME_BYTES) -> str:
    """``name`` cut to ``limit`` UTF-8 bytes, keeping its extension and a hash of the full name (unique)."""
    if len(name.encode("utf-8")) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > 10:
        stem, ext = name, ""
    tag = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    keep = limit - len(ext.encode()) - len(tag) - 2
    cut = stem.encode("utf-8")[:keep].decode("utf-8", errors="ignore")
    return f"{cut}-{tag}" + (f".{ext}" if ext else "")
