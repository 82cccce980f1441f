"""Where the workbench keeps its things: data sets, prompts, banks, runs, benchmarks, jobs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    """The folder layout of a workspace (default ``./workspace`` or ``$RCMAE_WORKSPACE``)."""

    root: Path

    @classmethod
    def default(cls, root: str | os.PathLike | None = None) -> Workspace:
        return cls(Path(root or os.environ.get("RCMAE_WORKSPACE") or "workspace").resolve())

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def demo_data(self) -> Path:
        return self.data / "demo"

    @property
    def prompts(self) -> Path:
        return self.root / "prompts.yaml"

    @property
    def banks(self) -> Path:
        return self.root / "banks"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def benchmarks(self) -> Path:
        return self.root / "benchmarks"

    @property
    def jobs_db(self) -> Path:
        return self.root / "jobs.sqlite"

    @property
    def settings(self) -> Path:
        return self.root / "settings.yaml"

    def ensure(self) -> Workspace:
        for folder in (self.data, self.banks, self.runs, self.benchmarks):
            folder.mkdir(parents=True, exist_ok=True)
        return self
