"""Module paths from before the packages-by-concern layout (rcmae 0.1), kept importable for users' scripts.

``import rcmae.score`` or ``from rcmae.train import pretrain`` still work: each old path is an alias of its new
module, or, where one old module was split in several, a module object holding the names of all of them. New code
imports the new paths (docs/DESIGN.md); nothing inside ``rcmae`` uses these aliases.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types

# old module -> its new home(s); the first module that defines a name wins.
MOVED: dict[str, tuple[str, ...]] = {
    "rcmae.audio": ("rcmae.data.audio",),
    "rcmae.features": ("rcmae.data.features",),
    "rcmae.inputs": ("rcmae.data.checks",),
    "rcmae.datasets": ("rcmae.data.datasets", "rcmae.training.pairs"),
    "rcmae.demo": ("rcmae.data.demo", "rcmae.data.demo.generate", "rcmae.data.demo.plan", "rcmae.data.demo.units",
                   "rcmae.data.demo.signals", "rcmae.data.demo.fan", "rcmae.data.demo.gearbox",
                   "rcmae.data.demo.pump", "rcmae.data.demo.slider", "rcmae.data.demo.valve"),
    "rcmae.model": ("rcmae.models.rcmae",),
    "rcmae.losses": ("rcmae.models.losses",),
    "rcmae.margin": ("rcmae.models.margin",),
    "rcmae.config": ("rcmae.run.config",),
    "rcmae.checkpoint": ("rcmae.run.checkpoint",),
    "rcmae.train": ("rcmae.training.stages", "rcmae.training.loop", "rcmae.training.modules", "rcmae.training.pairs",
                    "rcmae.run.folder", "rcmae.run.trainset", "rcmae.run.checkpoint"),
    "rcmae.margin_train": ("rcmae.training.margin", "rcmae.run.trainset", "rcmae.run.checkpoint"),
    "rcmae.score": ("rcmae.scorers.detector", "rcmae.scorers.fitting", "rcmae.evaluation.evaluate", "rcmae.scorers"),
    "rcmae.metrics": ("rcmae.evaluation.metrics",),
    "rcmae.baselines": ("rcmae.evaluation.baselines",),
    "rcmae.baselines.ae": ("rcmae.evaluation.baselines.ae",),
    "rcmae.baselines.knn": ("rcmae.evaluation.baselines.knn",),
    "rcmae.benchmark": ("rcmae.evaluation.benchmark",),
    "rcmae.suite": ("rcmae.evaluation.suite",),
    "rcmae.figures": ("rcmae.evaluation.figures",),
    "rcmae.reproduce": ("rcmae.evaluation.reproduce", "rcmae.evaluation.reproduce.plan",
                        "rcmae.evaluation.reproduce.fetch", "rcmae.evaluation.reproduce.steps",
                        "rcmae.evaluation.reproduce.report", "rcmae.evaluation.reproduce.paper"),
    "rcmae.export": ("rcmae.deploy.export", "rcmae.deploy.bundle"),
    "rcmae.scorers.graph": ("rcmae.deploy.graph", "rcmae.deploy.graph.build", "rcmae.deploy.graph.features",
                            "rcmae.deploy.graph.knn", "rcmae.deploy.graph.gaussian", "rcmae.deploy.graph.heads"),
    "rcmae.monitor": ("rcmae.deploy.monitor",),
    "rcmae.demo_app": ("rcmae.deploy.demo_app",),
    "rcmae.viz": ("rcmae.views",),
    "rcmae.jobs": ("rcmae.workbench.jobs", "rcmae.workbench.processes", "rcmae.workbench.runner"),
    "rcmae.prompts": ("rcmae.augment.prompts", "rcmae.augment.llm"),
}

# names whose function moved under another name: old module -> {old name: "new.module:new_name"}
RENAMED: dict[str, dict[str, str]] = {
    "rcmae.jobs": {"main": "rcmae.cli.jobs:_cmd_jobs"},
    "rcmae.prompts": {"main": "rcmae.cli.augment:_cmd_prompts"},
}


class LegacyFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old module paths of :data:`MOVED` (appended to ``sys.meta_path``: real modules come first)."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ARG002 - the finder protocol's signature
        if fullname in MOVED:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec):
        homes = [importlib.import_module(name) for name in MOVED[spec.name]]
        if len(homes) == 1:
            return homes[0]  # the very module: attributes set on one are seen through the other
        combined = types.ModuleType(spec.name, f"Old path of {', '.join(m.__name__ for m in homes)}.")
        for home in reversed(homes):  # the first home wins
            combined.__dict__.update({k: v for k, v in vars(home).items() if not k.startswith("__")})
        for old, new in RENAMED.get(spec.name, {}).items():
            module, _, name = new.partition(":")
            setattr(combined, old, getattr(importlib.import_module(module), name))
        return combined

    def exec_module(self, module):
        pass


def install() -> None:
    if not any(isinstance(f, LegacyFinder) for f in sys.meta_path):
        sys.meta_path.append(LegacyFinder())
