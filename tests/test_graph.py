"The graph: one walk per model, clear errors for what it cannot follow, and the graph path on zoo networks."
import collections

import pytest
import torch
from torch import nn

import netdeviation.graph as graph
from netdeviation.deviation import deviation, deviation_sweep, graph_activations, original_activations
from netdeviation.graph import UnsupportedOperation, prunable_layers, trace
from netdeviation.models import get_model
from netdeviation.pruning import prune


@pytest.fixture
def walks(monkeypatch):
    "Counts the walks over each model's children (`graph._walk`, the only place a chain is split)."
    calls, real = collections.Counter(), graph._walk
    def counting(model):
        calls[id(model)] += 1
        return real(model)
    monkeypatch.setattr(graph, "_walk", counting)
    return calls


def test_a_sweep_walks_the_model_once(walks):
    "A Net Deviation sweep (connection and clustered points) walks the original once and no copy at all."
    torch.manual_seed(0)
    m, x = get_model("lenet_300_100").eval(), torch.randn(200, 1, 28, 28)
    df = deviation_sweep(m, x, methods=("magnitude", "random_node", "clustered"), amounts=(0.3, 0.6), progress=False)
    assert len(df) == 6
    assert walks[id(m)] == 1 and sum(walks.values()) == 1


def test_a_pruned_copy_is_walked_once(walks):
    torch.manual_seed(0)
    m, x = get_model("lenet5").eval(), torch.randn(50, 1, 28, 28)
    p = prune(m, "magnitude", 0.5)
    deviation(m, p, x); deviation(m, p, x)
    assert walks[id(m)] == 1 and walks[id(p)] <= 1


def test_trace_is_cached_per_model():
    m = get_model("resnet8")
    assert trace(m) is trace(m)
    assert trace(get_model("resnet8")) is not trace(m)


def test_a_changed_chain_is_walked_again():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    assert [s.name for s in graph.stages(net)[1]] == ["0", "2"]
    net.append(nn.Linear(2, 2))
    assert [s.name for s in graph.stages(net)[1]] == ["0", "2", "3"]


@pytest.mark.parametrize("bad, where", [
    (nn.Sequential(nn.Linear(3, 3), nn.Softmax(1)), "module '1' (Softmax)"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.LayerNorm([2, 4, 4])), "module '1' (LayerNorm)"),
])
def test_unsupported_operation_is_named(bad, where):
    with pytest.raises(UnsupportedOperation) as e: original_activations(bad, torch.randn(2, *((3,) if isinstance(bad[0], nn.Linear) else (1, 6, 6))))
    msg = str(e.value)
    assert where in msg and "register" in msg and "Supported modules" in msg


def test_product_of_tensors_is_refused_when_bounding():
    class Gate(nn.Module):
        def __init__(self): super().__init__(); self.fc = nn.Linear(4, 4)
        def forward(self, x): return self.fc(x) * torch.sigmoid(x)
    m = Gate().eval()
    with pytest.raises(UnsupportedOperation, match="product of two tensors"):
        deviation(m, {"fc": {"weight": torch.ones(4, 4)}}, torch.randn(3, 4))


def test_untraceable_model_says_what_to_do():
    class Branchy(nn.Module):
        def __init__(self): super().__init__(); self.fc = nn.Linear(2, 2)
        def forward(self, x): return self.fc(x) if x.sum() > 0 else -x
    with pytest.raises(UnsupportedOperation, match="torch.fx could not trace Branchy"):
        graph_activations(Branchy(), torch.randn(2, 2))


@pytest.mark.parametrize("name", ["resnet8", "bn_cnn"])
def test_zoo_prunable_layers_in_forward_order(name):
    m = get_model(name)
    names = [n for n, _ in prunable_layers(m)]
    assert names == trace(m).layer_names() and len(names) == len(set(names))
    mods = dict(m.named_modules())
    assert all(isinstance(mods[n], (nn.Linear, nn.Conv1d, nn.Conv2d)) for n in names)
