"""The graph spec (rcmae.deploy.graph.spec): a recorded graph round-trips as data, and a spec rcmae did not write
is refused with one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rcmae.deploy.graph.heads import BandStatsEmbedder, EnsembleGraph, FrameGraph
from rcmae.deploy.graph.knn import Banks
from rcmae.deploy.graph.spec import SpecError, decode, encode


def _ensemble() -> EnsembleGraph:
    rng = np.random.default_rng(0)
    banks = Banks([np.empty(0)] * 3, [0, 0, 1], 2)  # unit 0 has two banks (domains), unit 1 one
    frames = FrameGraph("pca", rng.standard_normal((3, 10)), rng.standard_normal((2, 10, 4)),
                        rng.random((2, 4)) + 0.1, banks, 5)
    maha = FrameGraph("maha", rng.standard_normal((3, 10)), rng.standard_normal((2, 10, 10)),
                      rng.random((2, 10)) + 0.1, banks, 5)
    return EnsembleGraph([frames, maha, frames], rng.standard_normal((3, 2, 2)))


def test_a_recorded_graph_round_trips_through_json_and_arrays_exactly():
    graph = _ensemble()
    spec, arrays = encode(graph)
    spec = json.loads(json.dumps(spec, allow_nan=False))  # what is written is plain JSON
    back = decode(spec, {k: v.copy() for k, v in arrays.items()})
    assert type(back) is EnsembleGraph
    want, got = graph.state_dict(), back.state_dict()
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k
    # The shared member is built once, as in the original.
    assert back.parts[0] is back.parts[2] and back.parts[0] is not back.parts[1]
    x = torch.randn(4, 2, 12)
    unit = torch.tensor([0, 1, 1, 0])
    assert torch.equal(back(x, torch.zeros(4, 1), unit), graph(x, torch.zeros(4, 1), unit))
    # No constructor arguments -> an empty argument object; a node with them names each one.
    spec2, _ = encode(BandStatsEmbedder())
    assert spec2["nodes"] == [{"node": "BandStatsEmbedder", "args": {}}]


def test_values_keep_their_kind():
    from rcmae.deploy.graph.spec import recorded

    @recorded
    class Holder(torch.nn.Module):
        def __init__(self, a, b, c, d) -> None:
            super().__init__()

    spec, arrays = encode(Holder((1, 2), [1.5, float("inf")], {"k": np.float32(2.5)}, torch.arange(3)))
    back = decode(json.loads(json.dumps(spec)), arrays)
    args = back._spec_args
    assert args["a"] == (1, 2) and args["b"] == [1.5, float("inf")] and args["c"] == {"k": 2.5}
    assert torch.equal(args["d"], torch.arange(3))


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda s, a: s["nodes"].__setitem__(0, {"node": "Popen", "args": {}}), "names class 'Popen'"),
    (lambda s, a: s["nodes"].__setitem__(0, {"configured": "Sequential", "config": {}}), "rcmae builds only"),
    (lambda s, a: a.clear(), "does not hold"),
    (lambda s, a: s.__setitem__("root", {"ref": 99}), "refers to node 99"),
    (lambda s, a: s.__setitem__("root", {"eval": "1+1"}), "holds a value rcmae does not read"),
    (lambda s, a: s.__setitem__("version", 7), "version 7"),
    (lambda s, a: s["nodes"][-1]["args"].__setitem__("parts", {"list": [{"ref": len(s["nodes"]) - 1}]}),
     "contains itself"),
])
def test_a_spec_rcmae_did_not_write_is_refused_with_one_line(mutate, message):
    spec, arrays = encode(_ensemble())
    mutate(spec, arrays)
    with pytest.raises(SpecError, match=message) as err:
        decode(spec, arrays)
    assert "\n" not in str(err.value)


def test_an_unrecorded_module_cannot_be_written():
    with pytest.raises(SpecError, match="Linear is not a recorded graph class"):
        encode(EnsembleGraph([torch.nn.Linear(2, 2)], np.zeros((1, 1, 2))))
