"""A detector bundle on disk: loading it, its loaders, model card and README."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from rcmae.files import read_json
from rcmae.scorers.base import decide

BUNDLE_VERSION = 1
# ``graph`` (the default) is data: a JSON spec of rcmae's own graph classes plus arrays (graph.npz), rebuilt by
# rcmae (rcmae.deploy.graph.spec). ``onnx`` is data too (onnxruntime runs no Python); ``torchscript`` is code.
FORMATS = ("graph", "onnx", "torchscript")
MODEL_FILES = {"graph": "graph.json", "torchscript": "detector.pt", "onnx": "detector.onnx"}
GRAPH_ARRAYS = "graph.npz"
OUTPUTS = ("score", "embedding", "logmel")


class ExportError(ValueError):
    """A run or scorer that cannot be exported, or a folder that is not a bundle; one line."""


LOADER_GRAPH = '''
from rcmae.deploy.bundle import Bundle  # pip install rcmae: it rebuilds the graph from graph.json + graph.npz

def load_detector(bundle):
    b = Bundle(bundle)  # checks manifest.json; reading the bundle runs no code of its own

    def score(wave, machine_type, machine_id):
        """wave: 1-D float32 samples at b.sample_rate; returns (score, threshold, is_anomalous)."""
        r = b.score(wave, machine_type, machine_id)
        return r["score"], r["threshold"], r["decision"] == "anomaly"

    return b.meta, score
'''

LOADER_TORCHSCRIPT = '''
import json, pathlib
import torch

def load_detector(bundle):
    bundle = pathlib.Path(bundle)
    meta = json.loads((bundle / "detector.json").read_text())
    model = torch.jit.load(str(bundle / meta["model_file"]), map_location="cpu").eval()
    units = {(u["machine_type"], u["machine_id"]): u for u in meta["units"]}

    def score(wave, machine_type, machine_id):
        """wave: 1-D float32 samples at meta["sample_rate"]; returns (score, threshold, is_anomalous)."""
        unit = units[(machine_type, machine_id)]
        x = torch.zeros(1, meta["clip_samples"])
        w = torch.as_tensor(wave, dtype=torch.float32)[: meta["clip_samples"]]
        x[0, : w.numel()] = w
        with torch.no_grad():
            s = float(model(x, torch.tensor([unit["index"]]))[0][0])
        thr = unit["threshold"]
        return s, thr, thr is not None and s > thr

    return meta, score
'''

LOADER_ONNX = '''
import json, pathlib
import numpy as np
import onnxruntime

def load_detector(bundle):
    bundle = pathlib.Path(bundle)
    meta = json.loads((bundle / "detector.json").read_text())
    session = onnxruntime.InferenceSession(str(bundle / meta["model_file"]), providers=["CPUExecutionProvider"])
    units = {(u["machine_type"], u["machine_id"]): u for u in meta["units"]}

    def score(wave, machine_type, machine_id):
        """wave: 1-D float32 samples at meta["sample_rate"]; returns (score, threshold, is_anomalous)."""
        unit = units[(machine_type, machine_id)]
        x = np.zeros((1, meta["clip_samples"]), dtype=np.float32)
        w = np.asarray(wave, dtype=np.float32)[: meta["clip_samples"]]
        x[0, : w.size] = w
        s = float(session.run(["score"], {"wave": x, "unit": np.array([unit["index"]], dtype=np.int64)})[0][0])
        thr = unit["threshold"]
        return s, thr, thr is not None and s > thr

    return meta, score
'''


# ------------------------------------------------------------------------------------------ loading
MANIFEST = "manifest.json"


def load_graph(spec_path: Path, arrays_path: Path) -> torch.nn.Module:
    """The detector module of a ``graph`` bundle: rcmae's graph classes rebuilt from the spec and its arrays."""
    from rcmae.deploy.graph.spec import SpecError, decode

    if not arrays_path.is_file():
        raise ExportError(f"{arrays_path}: the bundle's arrays are missing; re-export the bundle")
    try:
        with np.load(arrays_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        module = decode(read_json(spec_path), arrays)
    except (SpecError, ValueError, OSError) as err:
        raise ExportError(f"{spec_path}: {str(err).splitlines()[0]}; re-export the bundle") from None
    from rcmae.deploy.graph.heads import ExportedDetector

    if not isinstance(module, ExportedDetector):
        raise ExportError(f"{spec_path}: its root is not a detector graph; re-export the bundle")
    return module.eval()


class BundleTrustError(ExportError):
    """A TorchScript bundle loaded without the caller saying they trust it (TorchScript is code)."""


def file_hashes(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file of a bundle folder except the manifest itself."""
    import hashlib

    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            out[p.relative_to(folder).as_posix()] = h.hexdigest()
    return out


class Bundle:
    """An exported bundle, loaded for scoring (a graph spec rebuilt by rcmae, ONNX with onnxruntime, TorchScript
    with torch).

    Reading a bundle runs nothing: its ``manifest.json`` (sha256 of every file) is checked first, and a bundle
    whose files do not match it is refused. A graph spec (the default format) is data that rcmae rebuilds from
    its own graph classes and arrays read without pickle; an ONNX graph is data that onnxruntime interprets. A
    TorchScript module is code (``torch.jit.load`` runs it), so its model loads only with ``trust=True``
    (``--trust`` on the command line), and only when it is first used: ``meta`` and the thresholds never need it.

    Args:
        path: The bundle folder.
        trust: Load a TorchScript model (run its code). Graph and ONNX bundles need no trust.
    """

    def __init__(self, path: str | os.PathLike, trust: bool = False) -> None:
        self.path = Path(path)
        self.trust = trust
        meta_path = self.path / "detector.json"
        if not meta_path.is_file():
            raise ExportError(f"{self.path}: not an rcmae bundle (no detector.json); make one with `rcmae export`")
        manifest = self.path / MANIFEST
        if not manifest.is_file():
            raise ExportError(f"{self.path}: no {MANIFEST} (sha256 of its files); re-export it with this rcmae")
        expected, found = read_json(manifest).get("sha256", {}), file_hashes(self.path)
        if expected != found:
            bad = sorted(set(expected) ^ set(found) | {f for f in expected if found.get(f) != expected[f]})
            raise ExportError(f"{self.path}: its files do not match {MANIFEST} ({', '.join(bad[:4])}"
                              f"{', ...' if len(bad) > 4 else ''}); refused. Re-export it, or get it again from its "
                              "source")
        self.meta = read_json(meta_path)
        if self.meta.get("version") != BUNDLE_VERSION:
            raise ExportError(f"{meta_path}: bundle version {self.meta.get('version')} is not {BUNDLE_VERSION}; "
                              "re-export it with this rcmae")
        self.model_path = self.path / self.meta["model_file"]
        if not self.model_path.is_file():
            raise ExportError(f"{self.model_path}: the bundle's model file is missing; re-export the bundle")
        self.format = self.meta["format"]
        self._model = self._session = None
        self.sample_rate = int(self.meta["sample_rate"])
        self.clip_samples = int(self.meta["clip_samples"])
        self.scorer = self.meta["scorer"]
        self.units = [(u["machine_type"], u["machine_id"]) for u in self.meta["units"]]
        self._unit = {(u["machine_type"], u["machine_id"]): u for u in self.meta["units"]}
        ex = self.path / "examples" / "examples.json"
        self.examples = read_json(ex) if ex.is_file() else []

    def _load(self) -> None:
        if self._model is not None or self._session is not None:
            return
        if self.format == "graph":
            self._model = load_graph(self.model_path, self.path / GRAPH_ARRAYS)
            return
        if self.format == "onnx":
            import onnxruntime

            self._session = onnxruntime.InferenceSession(str(self.model_path), providers=["CPUExecutionProvider"])
            return
        if not self.trust:
            raise BundleTrustError(
                f"{self.path}: a TorchScript bundle is code, and loading it runs that code; refused. Pass --trust "
                "(Bundle(path, trust=True); the Monitor page's trust box) only for a bundle from a source you "
                "trust, or export it again as data (rcmae export, default --format graph)")
        self._model = torch.jit.load(str(self.model_path), map_location="cpu").eval()

    def unit_index(self, machine_type: str, machine_id: str) -> int:
        """The model's unit input for a machine; one clear line when the bundle does not know it."""
        unit = self._unit.get((str(machine_type), str(machine_id)))
        if unit is None:
            known = ", ".join(f"{t}/{i}" for t, i in self.units)
            raise ExportError(f"machine {machine_type} id {machine_id} is not in the bundle {self.path} (known: "
                              f"{known}); pass the right --machine-type/--machine-id")
        return int(unit["index"])

    def threshold(self, machine_type: str, machine_id: str) -> float | None:
        """The unit's decision threshold (``None`` when none was fitted)."""
        return self._unit[(str(machine_type), str(machine_id))]["threshold"]

    def fit_length(self, wave: np.ndarray) -> np.ndarray:
        """Zero-pad or cut a 1-D waveform to the bundle's clip length (as ``rcmae.data.audio.load_audio`` does)."""
        wave = np.asarray(wave, dtype=np.float32)
        return np.pad(wave[: self.clip_samples], (0, max(0, self.clip_samples - wave.size)))

    def run(self, waves: np.ndarray, units: Sequence[int]) -> dict[str, np.ndarray]:
        """Raw model outputs ``{"score", "embedding", "logmel"}`` for waves ``[B, clip_samples]``."""
        waves = np.ascontiguousarray(waves, dtype=np.float32)
        unit = np.asarray(units, dtype=np.int64)
        if waves.ndim != 2 or waves.shape[1] != self.clip_samples:
            raise ExportError(f"bundle input must be [B, {self.clip_samples}] samples, got {waves.shape}")
        self._load()
        if self._model is not None:
            with torch.no_grad():
                res = self._model(torch.from_numpy(waves), torch.from_numpy(unit))
            return {k: v.numpy() for k, v in zip(OUTPUTS, res, strict=True)}
        res = self._session.run(list(OUTPUTS), {"wave": waves, "unit": unit})
        return dict(zip(OUTPUTS, res, strict=True))

    def score_waveforms(self, waves: np.ndarray, machine_types: Sequence[str],
                        machine_ids: Sequence[str]) -> np.ndarray:
        """Scores ``[B]`` of waves ``[B, clip_samples]`` (``Detector.score_waveforms``'s signature)."""
        units = [self.unit_index(t, i) for t, i in zip(machine_types, machine_ids, strict=True)]
        return self.run(waves, units)["score"].astype(np.float64)

    @property
    def logmel(self) -> torch.nn.Module | None:
        """The graph's log-mel front-end (graph bundles only: ``None`` for TorchScript and ONNX, whose graphs take
        waveforms alone). With it the streaming monitor computes a recording's log-mel once
        (:mod:`rcmae.deploy.stream`) and scores it with :meth:`score_logmels`."""
        if self.format != "graph":
            return None
        self._load()
        return self._model.logmel

    def score_logmels(self, db: torch.Tensor, machine_types: Sequence[str],
                      machine_ids: Sequence[str]) -> np.ndarray:
        """Scores ``[B]`` of dB log-mels ``[B, F, T]`` from :attr:`logmel` (graph bundles only)."""
        if self.logmel is None:
            raise ExportError(f"{self.path}: a {self.format} bundle scores waveforms only; use score_waveforms")
        unit = torch.as_tensor([self.unit_index(t, i) for t, i in zip(machine_types, machine_ids, strict=True)],
                               dtype=torch.int64)
        with torch.no_grad():
            return self._model.score_db(db, unit)[0].numpy().astype(np.float64)

    def score(self, wave: np.ndarray, machine_type: str, machine_id: str) -> dict:
        """One clip: ``{"score", "threshold", "decision", "embedding", "logmel"}``."""
        out = self.run(self.fit_length(wave)[None], [self.unit_index(machine_type, machine_id)])
        s = float(out["score"][0])
        thr = self.threshold(machine_type, machine_id)
        decision = decide(s, thr)  # a NaN/inf score is "invalid", never normal
        return {"machine_type": str(machine_type), "machine_id": str(machine_id), "scorer": self.scorer,
                "score": s if decision != "invalid" else None, "threshold": thr, "decision": decision,
                "embedding": out["embedding"][0], "logmel": out["logmel"][0]}

    def nearest_examples(self, embedding: np.ndarray, machine_type: str, machine_id: str, k: int = 3) -> list[dict]:
        """The bundle's example clips of a unit, nearest first (cosine distance of the embeddings)."""
        rows = [r for r in self.examples if (r["machine_type"], r["machine_id"]) == (machine_type, machine_id)]
        if not rows:
            return []
        z = np.asarray([r["embedding"] for r in rows], dtype=np.float64)
        q = np.asarray(embedding, dtype=np.float64)
        d = 1.0 - (z / np.linalg.norm(z, axis=1, keepdims=True)) @ (q / max(np.linalg.norm(q), 1e-12))
        order = np.argsort(d, kind="stable")[:k]
        return [{**rows[o], "path": str(self.path / rows[o]["file"]), "distance": float(d[o])} for o in order]


def list_bundles(folder: str | os.PathLike) -> list[Path]:
    """Bundle folders (those with a ``detector.json``) directly inside ``folder``, newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if (p / "detector.json").is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)
