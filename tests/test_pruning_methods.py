"Pruning methods as registered classes: a user's connection or node method goes through every path the paper's do."
import contextlib

import pytest
import torch

from netdeviation.models import get_model
from netdeviation.pruning import (CONNECTION_METHODS, METHODS, NODE_METHODS, PRUNING_METHODS, ConnectionMethod, NodeMethod,
                                  compute_masks, get_masks, get_method, keep_highest, magnitude_mask, method_kind, prune,
                                  register_method)


@contextlib.contextmanager
def registered(cls):
    "`cls` registered inside the block, and gone after it (the table as it was)."
    register_method(cls)
    try: yield cls
    finally: PRUNING_METHODS.pop(cls.name)


class Largest(ConnectionMethod):
    "Prunes the largest |w| (a connection method that is not one of the paper's): magnitude pruning of max|w| + 1 - |w|."
    name = "largest"
    def compute_mask(self, w, amount, default_mask, generator):
        return magnitude_mask(w.detach().abs().max() + 1 - w.detach().abs(), amount, default_mask)


class LastNodes(NodeMethod):
    "Prunes the nodes of highest index: a deterministic node score."
    name = "last_nodes"
    def scores(self, nodes, generator): return -torch.arange(nodes.n, dtype=torch.float32, device=nodes.device)


class MeanActivation(NodeMethod):
    name, needs_data = "mean_activation", True
    def scores(self, nodes, generator):
        y = nodes.activations
        return y.abs().reshape(len(y), nodes.n, -1).mean((0, 2))


def lenet(name="lenet_300_100", seed=0):
    torch.manual_seed(seed)
    return get_model(name)


def images(model, n=32, seed=1):
    return torch.rand(n, *model.input_shape, generator=torch.Generator().manual_seed(seed))


def test_the_table_holds_the_paper_methods():
    assert METHODS == tuple(PRUNING_METHODS)[:5] == ("random", "magnitude", "random_node", "magnitude_node", "clustered")
    assert {m: method_kind(m) for m in METHODS} == {**dict.fromkeys(CONNECTION_METHODS, "connection"), **dict.fromkeys(NODE_METHODS, "node")}


def test_a_method_object_equals_its_name():
    m = lenet()
    for name, opts in (("magnitude", {}), ("random_node", {}), ("clustered", {"keep": "centre"})):
        a = compute_masks(m, name, 0.4, data=images(m), seed=3, **opts)
        b = compute_masks(m, get_method(name, **opts), 0.4, data=images(m), seed=3)
        assert all(torch.equal(a[n][p], b[n][p]) for n in a for p in a[n]), name
    with pytest.raises(ValueError, match="options: give them to the method object"): compute_masks(m, get_method("clustered"), 0.4, keep="centre")


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_a_registered_connection_method(scope):
    m = lenet()
    ws = {n: l.weight.detach().abs() for n, l in m.named_modules() if isinstance(l, torch.nn.Linear)}
    with registered(Largest):
        assert method_kind("largest") == "connection" and "largest" not in METHODS
        masks = compute_masks(m, "largest", 0.3, scope=scope)
        groups = [[n] for n in ws] if scope == "layer" else [list(ws)]  # what is ranked together
        for names in groups:
            w = torch.cat([ws[n].flatten() for n in names]); k = torch.cat([masks[n]["weight"].flatten() for n in names])
            assert int((k == 0).sum()) == round(0.3*w.numel()) and w[k == 1].max() <= w[k == 0].min()
        once = get_masks(prune(m, "largest", 0.5, scope=scope))
        twice = compute_masks(prune(m, "largest", 0.5, scope=scope), "largest", 0.5, scope=scope)  # re-pruning: within the old mask
        for n in ws:
            assert bool((twice[n]["weight"] <= once[n]["weight"]).all())
            if scope == "layer": assert int(twice[n]["weight"].sum()) == int(once[n]["weight"].sum()) - round(0.5*int(once[n]["weight"].sum()))
    with pytest.raises(ValueError, match="method: expected one of"): compute_masks(m, "largest", 0.3)


@pytest.mark.parametrize("name", ["lenet_300_100", "lenet5", "resnet8"])
def test_a_registered_node_method(name):
    m = lenet(name)
    with registered(LastNodes):
        assert method_kind(LastNodes) == "node"
        with pytest.raises(ValueError, match="scope: 'global' is for the connection methods"): compute_masks(m, "last_nodes", 0.5, scope="global")
        plain = compute_masks(m, "last_nodes", 0.5)
        pruned = prune(m, "last_nodes", 0.5)
        got = get_masks(pruned)
        assert all(torch.equal(plain[n][p], got[n][p]) for n in plain for p in plain[n])
        if name != "resnet8":                                            # a chain: every hidden layer keeps its first half
            for layer, d in plain.items():
                if "bias" in d and d["bias"].numel() > 10:               # a hidden layer (the output layer keeps all 10)
                    n = d["bias"].numel()
                    assert d["bias"].tolist() == [1.0]*(n - round(0.5*n)) + [0.0]*round(0.5*n), layer


@pytest.mark.parametrize("name", ["lenet_300_100", "resnet8"])
def test_a_registered_method_that_needs_data(name):
    m = lenet(name); x = images(m)
    with registered(MeanActivation):
        with pytest.raises(ValueError, match="data: mean_activation pruning needs the pruning images"): compute_masks(m, "mean_activation", 0.5)
        masks = compute_masks(m, "mean_activation", 0.5, data=x)
        assert sum(int((d["weight"] == 0).sum()) for d in masks.values()) > 0
        if name == "lenet_300_100":
            from netdeviation.pruning import stage_outputs
            y = stage_outputs(m, x)["fc1"]
            assert torch.equal(masks["fc1"]["bias"].bool(), keep_highest(y.abs().reshape(len(y), 300, -1).mean((0, 2)), 0.5))


def test_registering_is_checked():
    with pytest.raises(ValueError, match="a method named 'random' is registered"): register_method(type("R", (ConnectionMethod,), {"name": "random"}))
    with pytest.raises(ValueError, match="needs a `name`"): register_method(type("N", (NodeMethod,), {}))
    with pytest.raises(TypeError, match="expected a subclass of ConnectionMethod or NodeMethod"): register_method(int)
    assert tuple(PRUNING_METHODS) == METHODS


def test_a_node_method_must_answer_a_keep_vector():
    class Bad(NodeMethod):
        name = "bad"
        def compute_mask(self, nodes, amount, generator, seed): return torch.ones(nodes.n)
    with registered(Bad), pytest.raises(ValueError, match=r"compute_mask must return a bool tensor of shape \(300,\)"):
        compute_masks(lenet(), "bad", 0.5)


def test_a_registered_method_goes_through_the_sweep_the_bounds_and_the_explorer():
    "`deviation_sweep`, the bounds' choice of μ and the explorer's checks take any registered method, and refuse it once it is gone."
    from netdeviation.bounds import _mu_method
    from netdeviation.deviation import deviation_sweep
    from netdeviation.explorer import _check_args
    m = lenet(); x = images(m)
    explorer_args = lambda method: _check_args("lenet_300_100", method, 0.5, 0.01, "paper", 0, 1.0, 20, "cpu", None, None)
    with registered(Largest), registered(LastNodes):
        df = deviation_sweep(m, x, methods=("largest", "magnitude", "last_nodes"), amounts=(0.3, 0.5), progress=False)
        assert sorted(set(df.method)) == ["largest", "last_nodes", "magnitude"] and len(df) == 6
        dev = df.set_index(["method", "amount"]).dev
        for a in (0.3, 0.5): assert abs(dev["largest", a]) > abs(dev["magnitude", a])  # removing the largest weights deviates more
        assert (_mu_method("largest", "auto"), _mu_method("last_nodes", "auto")) == ("secant", "pl")  # μ follows the method's kind
        explorer_args("largest"); explorer_args("last_nodes")
    with pytest.raises(ValueError, match="methods: expected names among the registered methods"):
        deviation_sweep(m, x, methods=("largest",), amounts=(0.3,), progress=False)
    with pytest.raises(ValueError, match="method: expected one of the registered methods"): _mu_method("largest", "auto")
    with pytest.raises(ValueError, match="method: expected one of the registered methods"): explorer_args("largest")
