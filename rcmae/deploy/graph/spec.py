"""A detector graph as data: a JSON spec of constructor calls plus arrays, rebuilt by rcmae's own code.

The export graph classes are marked with :func:`recorded`: each instance keeps the arguments it was built with.
:func:`encode` walks those arguments into a JSON tree whose leaves are plain values or names of arrays (stored
in an ``.npz`` file), and :func:`decode` calls the same constructors again. Nothing in a spec names code: a
node's class must be one of the classes registered here (the graph classes, and the two configured modules
:class:`~rcmae.data.features.LogMel` and :class:`~rcmae.models.rcmae.RCMAE`, whose trained weights are arrays
too), and the arrays are read with ``allow_pickle=False``. A spec from anywhere can make rcmae build one of its
own graphs, never run code of its own.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from rcmae.data.features import LogMel, LogMelConfig
from rcmae.models.rcmae import RCMAE, ModelConfig

SPEC_VERSION = 1
# Class name -> class of every recorded graph node (filled by @recorded at import).
NODES: dict[str, type] = {}
# Modules built from a flat config dataclass whose state (trained weights) travels as arrays.
CONFIGURED: dict[str, tuple[type[nn.Module], type]] = {"LogMel": (LogMel, LogMelConfig),
                                                        "RCMAE": (RCMAE, ModelConfig)}


class SpecError(ValueError):
    """A graph that cannot be written as a spec, or a spec that is not one rcmae can rebuild; one line."""


def recorded(cls: type) -> type:
    """Class decorator: instances keep their constructor arguments (``_spec_args``) for :func:`encode`.

    A class with a ``spec_args(args) -> args`` method may replace them by an equivalent, smaller form that its
    constructor also accepts (the Gaussian banks store their compressed precisions).
    """
    init = cls.__init__
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):  # noqa: N807
        init(self, *args, **kwargs)
        if type(self) is cls:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            recorded_args: dict | None = {}
            for name, value in list(bound.arguments.items())[1:]:
                kind = signature.parameters[name].kind
                if kind is inspect.Parameter.VAR_KEYWORD:
                    recorded_args.update(value)
                elif kind is inspect.Parameter.VAR_POSITIONAL:
                    if value:  # positional extras have no names to rebuild with: encode() refuses the node
                        recorded_args = None
                        break
                else:
                    recorded_args[name] = value
            if recorded_args is not None and hasattr(self, "spec_args"):
                recorded_args = self.spec_args(recorded_args)  # a class may store a smaller, equivalent form
            object.__setattr__(self, "_spec_args", recorded_args)

    cls.__init__ = __init__
    if cls.__name__ in NODES and NODES[cls.__name__] is not cls:
        raise RuntimeError(f"two graph classes named {cls.__name__}")
    NODES[cls.__name__] = cls
    return cls


def encode(obj: Any) -> tuple[dict, dict[str, np.ndarray]]:
    """``(spec, arrays)`` of a recorded graph: a JSON-able tree and the arrays it names."""
    arrays: dict[str, np.ndarray] = {}
    memo: dict[int, int] = {}
    nodes: list[dict] = []

    def put(a: np.ndarray) -> str:
        key = f"a{len(arrays)}"
        arrays[key] = np.ascontiguousarray(a)
        return key

    def walk(x: Any) -> Any:
        if x is None or isinstance(x, bool | int | str):
            return x
        if isinstance(x, float):
            return x if math.isfinite(x) else {"float": repr(x)}
        if isinstance(x, np.generic):
            return walk(x.item())
        if isinstance(x, np.ndarray):
            if x.dtype == object:
                raise SpecError("a graph argument is an object array; it cannot be written as data")
            return {"array": put(x)}
        if isinstance(x, torch.Tensor):
            return {"tensor": put(x.detach().cpu().numpy())}
        if isinstance(x, list | tuple):
            return {"list" if isinstance(x, list) else "tuple": [walk(v) for v in x]}
        if isinstance(x, dict):
            if not all(isinstance(k, str) for k in x):
                raise SpecError("a graph argument is a dict with non-string keys")
            return {"dict": {k: walk(v) for k, v in x.items()}}
        if id(x) in memo:  # a shared node (one network seen by two heads) is built once
            return {"ref": memo[id(x)]}
        name = type(x).__name__
        if name in CONFIGURED and type(x) is CONFIGURED[name][0]:
            node = {"configured": name, "config": walk(dataclasses.asdict(x.config)),
                    "state": {k: put(v.detach().cpu().numpy()) for k, v in x.state_dict().items()}}
        elif NODES.get(name) is type(x) and getattr(x, "_spec_args", None) is not None:
            node = {"node": name, "args": {k: walk(v) for k, v in x._spec_args.items()}}
        else:
            raise SpecError(f"{type(x).__qualname__} is not a recorded graph class; it cannot be written as data")
        memo[id(x)] = len(nodes)
        nodes.append(node)
        return {"ref": memo[id(x)]}

    root = walk(obj)
    return {"version": SPEC_VERSION, "nodes": nodes, "root": root}, arrays


def decode(spec: dict, arrays: dict[str, np.ndarray]) -> Any:
    """Rebuild a graph from :func:`encode`'s output; :class:`SpecError` on anything it does not know."""
    if not isinstance(spec, dict) or spec.get("version") != SPEC_VERSION:
        raise SpecError(f"graph spec version {spec.get('version') if isinstance(spec, dict) else None!r} is not "
                        f"{SPEC_VERSION}; re-export the bundle with this rcmae")
    nodes = spec.get("nodes")
    if not isinstance(nodes, list):
        raise SpecError("graph spec has no node list; re-export the bundle")
    built: dict[int, Any] = {}

    def array(key: Any) -> np.ndarray:
        if not isinstance(key, str) or key not in arrays:
            raise SpecError(f"graph spec names an array {key!r} that the bundle does not hold")
        return arrays[key]

    def node(k: Any) -> Any:
        if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < len(nodes):
            raise SpecError(f"graph spec refers to node {k!r}, which it does not hold")
        if k not in built:
            built[k] = None  # a node that (indirectly) contains itself is refused below
            built[k] = make(nodes[k])
        if built[k] is None:
            raise SpecError(f"graph spec node {k} contains itself")
        return built[k]

    def make(n: Any) -> Any:
        if not isinstance(n, dict):
            raise SpecError("graph spec node is not an object")
        if "configured" in n:
            name = n["configured"]
            if name not in CONFIGURED:
                raise SpecError(f"graph spec names module {name!r}; rcmae builds only {', '.join(CONFIGURED)}")
            cls, config_cls = CONFIGURED[name]
            fields = walk(n.get("config"))
            if not isinstance(fields, dict):
                raise SpecError(f"graph spec: the config of {name} is not an object")
            try:
                module = cls(config_cls(**fields))
                state = {k: torch.from_numpy(np.array(array(v))) for k, v in dict(n.get("state", {})).items()}
                module.load_state_dict(state, strict=True)
            except (TypeError, RuntimeError) as err:
                raise SpecError(f"graph spec: {name} cannot be rebuilt ({str(err).splitlines()[0]})") from None
            return module.eval()
        name = n.get("node")
        cls = NODES.get(name) if isinstance(name, str) else None
        if cls is None:
            raise SpecError(f"graph spec names class {name!r}, which is not an rcmae graph class; refused")
        raw = n.get("args")
        if not isinstance(raw, dict):
            raise SpecError(f"graph spec: the arguments of {name} are not an object")
        args = {str(k): walk(v) for k, v in raw.items()}
        try:
            return cls(**args)
        except (TypeError, ValueError, IndexError, RuntimeError) as err:
            raise SpecError(f"graph spec: {name} cannot be rebuilt ({str(err).splitlines()[0]})") from None

    def walk(x: Any) -> Any:
        if x is None or isinstance(x, bool | int | float | str):
            return x
        if isinstance(x, dict) and len(x) == 1:
            (tag, v), = x.items()
            if tag == "float":
                return float(v)
            if tag == "array":
                return array(v)
            if tag == "tensor":
                return torch.from_numpy(np.array(array(v)))
            if tag in ("list", "tuple") and isinstance(v, list):
                items = [walk(i) for i in v]
                return items if tag == "list" else tuple(items)
            if tag == "dict" and isinstance(v, dict):
                return {str(k): walk(i) for k, i in v.items()}
            if tag == "ref":
                return node(v)
        raise SpecError(f"graph spec holds a value rcmae does not read: {str(x)[:60]}")

    return walk(spec.get("root"))
