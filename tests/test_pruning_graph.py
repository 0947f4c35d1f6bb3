"Pruning networks that are not chains: coupled channel groups (residual adds, BatchNorm, flatten), checked by hand and by torch."
import copy

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.nn.utils import prune as torch_prune

from netdeviation.channels import channel_groups
from netdeviation.models import get_model
from netdeviation.graph import effective
from netdeviation.pruning import (CONNECTION_METHODS, METHODS, NODE_METHODS, compute_masks, group_masks,
                                  group_plan, prune, sparsity_report)

# --- the networks ---------------------------------------------------------------------------------------------------

class Block(nn.Module):
    "A BasicBlock: conv-BN-ReLU-conv-BN, plus the identity or a projection shortcut (1x1 conv + BN), then ReLU."
    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out)
        self.short = (nn.Sequential() if stride == 1 and c_in == c_out else
                      nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))
    def forward(self, x):
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + self.short(x))

class SmallResNet(nn.Module):
    "Stem (conv with bias + BN), an identity block, a downsampling block with a projection shortcut, pooling, a head."
    input_shape = (1, 12, 12)
    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(1, 8, 3, 1, 1), nn.BatchNorm2d(8)
        self.b1, self.b2 = Block(8, 8), Block(8, 10, 2)
        self.fc = nn.Linear(10, 4)
    def forward(self, x):
        return self.fc(self.b2(self.b1(torch.relu(self.bn(self.stem(x))))).mean((2, 3)))

def randomise_bn(model, seed=0):
    "Non-trivial BatchNorm statistics and affine parameters, so a BatchNorm is not the identity."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                for t in (m.weight, m.bias, m.running_mean): t.copy_(torch.randn(t.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()

def small_resnet():
    torch.manual_seed(0)
    return randomise_bn(SmallResNet())

def resnet18():
    torch.manual_seed(0)
    m = torchvision.models.resnet18(num_classes=10)
    m.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    return randomise_bn(m)

def images(n, shape, seed=1):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))

def zoo(name):
    try: return randomise_bn(get_model(name))
    except ValueError: pytest.skip(f"netdeviation.models has no {name!r} yet")

NETS = {"small_resnet": small_resnet, "resnet18": resnet18, "resnet8": lambda: zoo("resnet8"), "bn_cnn": lambda: zoo("bn_cnn")}
SHAPE = {"small_resnet": (1, 12, 12), "resnet18": (1, 28, 28), "resnet8": (1, 28, 28), "bn_cnn": (1, 28, 28)}

@pytest.fixture(scope="module")
def nets():
    "Each network once, its channel groups traced once, and its pruning images."
    out = {}
    def get(name):
        if name not in out:
            net = NETS[name]()
            x = images(16, SHAPE[name])
            out[name] = (net, channel_groups(net, x[:1]), x)
        return out[name]
    return get

def state(model): return {k: v.clone() for k, v in model.state_dict().items()}

def same_state(model, ref): return set(model.state_dict()) == set(ref) and all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())

# --- the coupling, built by hand --------------------------------------------------------------------------------------

def conv_bn(conv, bn, bias=False):
    return {(conv, "weight", "out"), (bn, "weight", "norm"), (bn, "bias", "norm")} | ({(conv, "bias", "out")} if bias else set())

# group name -> (channels, producers, members): the residual adds of SmallResNet read off its forward
HAND = {
    "stem":     (8, ["stem", "b1.conv2"], conv_bn("stem", "bn", bias=True) | conv_bn("b1.conv2", "b1.bn2")
                 | {(c, "weight", "in") for c in ("b1.conv1", "b2.conv1", "b2.short.0")}),
    "b1.conv1": (8, ["b1.conv1"], conv_bn("b1.conv1", "b1.bn1") | {("b1.conv2", "weight", "in")}),
    "b2.conv1": (10, ["b2.conv1"], conv_bn("b2.conv1", "b2.bn1") | {("b2.conv2", "weight", "in")}),
    "b2.conv2": (10, ["b2.conv2", "b2.short.0"], conv_bn("b2.conv2", "b2.bn2") | conv_bn("b2.short.0", "b2.short.1")
                 | {("fc", "weight", "in")}),
}

def test_small_resnet_groups_are_the_residual_coupling(nets):
    net, groups, _ = nets("small_resnet")
    assert {g.name: (g.n, g.producers, {(m.module, m.param, m.kind) for m in g.members}) for g in groups} == HAND
    assert all(torch.equal(m.index, torch.arange(g.n)[:, None]) for g in groups for m in g.members)

def test_resnet18_streams_are_coupled(nets):
    _, groups, _ = nets("resnet18")
    assert len(groups) == 12
    multi = [g.producers for g in groups if len(g.producers) > 1]
    assert multi == [["conv1", "layer1.0.conv2", "layer1.1.conv2"]] + \
                    [[f"layer{i}.0.conv2", f"layer{i}.0.downsample.0", f"layer{i}.1.conv2"] for i in (2, 3, 4)]
    assert all("fc" not in g.producers for g in groups)                     # the output layer is no group

def test_flatten_gives_each_filter_its_inputs(nets):
    net, groups, _ = nets("bn_cnn")
    g = next(g for g in groups if any(m.module == "fc1" and m.kind == "in" for m in g.members))
    r = net.fc1.in_features // g.n                                          # one filter's flattened map
    idx = next(m.index for m in g.members if m.module == "fc1")
    assert torch.equal(idx, torch.arange(g.n*r).view(g.n, r))               # nn.Flatten: channel c owns c*r ... c*r+r-1

# --- node methods: whole groups, exact counts ---------------------------------------------------------------------------

def slices(t, dim, channels): return t.movedim(dim, 0)[channels]

def check_group_dead(net, pruned_net, groups, amount, left=None):
    "Each group prunes round(amount*n) channels, and every member loses exactly them: out rows, biases, BN weight/bias, in columns."
    expected = {}
    for g in groups:
        dead = (effective(pruned_net.get_submodule(g.producers[0])).reshape(g.n, -1) == 0).all(1)
        assert int(dead.sum()) == round(amount*g.n) if left is None else g.n - int(dead.sum()) == left(g.n), g.name
        for m in g.members:
            w = effective(pruned_net.get_submodule(m.module), m.param)
            assert bool((slices(w, m.dim, m.index[dead].flatten()) == 0).all()), (g.name, m)   # no live weight
            mask = expected.setdefault((m.module, m.param), torch.ones_like(w))
            mask.movedim(m.dim, 0)[m.index[dead].flatten()] = 0
    for (mod, p), mask in expected.items():                 # nothing else is touched: the kept channels keep their weights
        orig = getattr(net.get_submodule(mod), p).detach()
        assert torch.equal(effective(pruned_net.get_submodule(mod), p), orig*mask), (mod, p)

@pytest.mark.parametrize("name", ["small_resnet", "resnet18", "resnet8", "bn_cnn"])
@pytest.mark.parametrize("method", NODE_METHODS)
def test_node_methods_prune_whole_groups(nets, name, method):
    net, groups, x = nets(name)
    before = state(net)
    amount = 0.3 if name == "small_resnet" else 0.5
    pruned = prune(net, method, amount, data=x, groups=groups, seed=1)
    check_group_dead(net, pruned, groups, amount)
    with torch.no_grad(): assert pruned(x).shape == net(x).shape
    assert same_state(net, before) and not any(hasattr(m, "weight_mask") for m in net.modules())

@pytest.mark.parametrize("method", NODE_METHODS)
def test_pruned_channels_carry_nothing(nets, method):
    "Functional check on the small ResNet: a pruned channel outputs 0 at every producer, and noise on it changes nothing."
    net, groups, x = nets("small_resnet")
    pruned = prune(net, method, 0.5, data=x, groups=groups).eval()
    with torch.no_grad():
        base = pruned(x)
        for g in groups:
            dead = (effective(pruned.get_submodule(g.producers[0])).reshape(g.n, -1) == 0).all(1)
            for o in g.outputs:
                seen = {}
                h = pruned.get_submodule(o).register_forward_hook(lambda mod, i, y: seen.update(y=y))
                pruned(x); h.remove()
                assert float(seen["y"][:, dead].abs().max()) == 0.0, (g.name, o)
                h = pruned.get_submodule(o).register_forward_hook(
                    lambda mod, i, y: y + 100*torch.randn_like(y)*dead.view(1, -1, *[1]*(y.dim() - 2)))
                noisy = pruned(x); h.remove()
                assert torch.equal(noisy, base), (g.name, o)

def test_node_pruning_twice_compounds(nets):
    net, groups, x = nets("small_resnet")
    once = prune(net, "magnitude_node", 0.5, groups=groups)
    twice = prune(once, "random_node", 0.5, groups=groups)
    check_group_dead(net, twice, groups, None, left=lambda n: n - round(0.5*n) - round(0.5*(n - round(0.5*n))))
    for a, b in zip(once.modules(), twice.modules()):
        if hasattr(a, "weight_mask"): assert bool((b.weight_mask <= a.weight_mask).all())

def test_chain_through_groups_gets_the_chain_masks():
    "The group path on a LeNet gives the chain path's masks (random_node: same streams; magnitude_node: eq. 4.12)."
    torch.manual_seed(0)
    net = get_model("lenet5_caffe")
    groups = channel_groups(net)
    for method in ("random_node", "magnitude_node"):
        plan = group_plan(net, groups, method, 0.5, groups, seed=3)
        ours = group_masks(net, groups, {n: p["keep"] for n, p in plan.items()})
        ref = compute_masks(net, method, 0.5, seed=3)
        assert set(ours) == set(ref) and all(torch.equal(ours[n][p], ref[n][p]) for n in ref for p in ref[n]), method

# --- connection methods: torch's own semantics per layer --------------------------------------------------------------

def conv_linear(model): return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d)]

def same_up_to_ties(mask, ref, w)->bool:
    "Masks equal, or pruning the same multiset of |w|: equal |w| at the threshold may be broken either way."
    return torch.equal(mask, ref) or (int((mask == 0).sum()) == int((ref == 0).sum())
                                      and torch.equal(w.abs()[mask == 0].sort().values, w.abs()[ref == 0].sort().values))

@pytest.mark.parametrize("name", ["small_resnet", "resnet8"])
def test_connection_methods_match_torch_per_layer(nets, name):
    net, _, _ = nets(name)
    before = state(net)
    mag, rnd = prune(net, "magnitude", 0.4), prune(net, "random", 0.4, seed=2)
    ref = copy.deepcopy(net)
    for _, l in conv_linear(ref): torch_prune.l1_unstructured(l, "weight", amount=0.4)
    for (n, l), (_, r), (_, q) in zip(conv_linear(mag), conv_linear(ref), conv_linear(rnd)):
        assert same_up_to_ties(l.weight_mask, r.weight_mask, r.weight_orig), n
        assert int((q.weight_mask == 0).sum()) == round(0.4*q.weight.numel()), n
        assert not hasattr(l, "bias_mask") or bool(l.bias_mask.all()), n
    assert not any(hasattr(m, "weight_mask") for m in mag.modules() if isinstance(m, nn.BatchNorm2d))
    with torch.no_grad(): assert mag(images(2, SHAPE[name])).shape == net(images(2, SHAPE[name])).shape
    assert same_state(net, before)

def test_global_magnitude_is_global_unstructured(nets):
    net, _, _ = nets("small_resnet")
    ours = prune(net, "magnitude", 0.6, scope="global")
    ref = copy.deepcopy(net)
    torch_prune.global_unstructured([(l, "weight") for _, l in conv_linear(ref)], torch_prune.L1Unstructured, amount=0.6)
    cat = lambda model, t: torch.cat([getattr(l, t).detach().flatten() for _, l in conv_linear(model)])
    assert same_up_to_ties(cat(ours, "weight_mask"), cat(ref, "weight_mask"), cat(ref, "weight_orig"))

# --- every method on torchvision's resnet18, and the report ---------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_resnet18_every_method_and_a_finite_report(nets, method):
    net, groups, x = nets("resnet18")
    pruned = prune(net, method, 0.5, data=x, groups=groups)
    rep = sparsity_report(pruned, input_shape=(1, 28, 28), groups=groups)
    num = rep.drop(columns="kind").to_numpy(dtype=float)
    assert np.isfinite(num).all()
    if method in CONNECTION_METHODS:                                          # torch's count, layer by layer
        assert all(int((l.weight_mask == 0).sum()) == round(0.5*l.weight.numel()) for _, l in conv_linear(pruned))
    assert 0.45 < rep.loc["total", "pruned"] < 0.8 and rep.loc["total", "compression"] > 1.9
    if method in NODE_METHODS:
        assert rep.loc["layer4.0.conv1", "nodes_kept"] == 256 and rep.loc["layer4.0.bn1", "nodes_kept"] == 256
    dense = sparsity_report(net, input_shape=(1, 28, 28), groups=groups)
    assert dense.loc["conv1", "flops"] == 64*7*7*14*14 and dense.loc["fc", "flops"] == 512*10
    assert dense.loc["total", "speedup"] == 1.0 and dense.loc["total", "nodes_kept"] == dense.loc["total", "nodes"]

# --- bad input -------------------------------------------------------------------------------------------------------

def test_bad_input_is_named(nets):
    net, groups, x = nets("small_resnet")
    bare = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2*4*4, 3))
    cases = [
        (lambda: prune(net, "clustered", 0.5, data=x, merge=True), "merge: the correlation merge folds a node"),
        (lambda: prune(net, "random_node", 0.5, layers=["b9.conv1"]), "layers: expected names among ['stem', 'b1.conv1', 'b2.conv1', 'b2.conv2']"),
        (lambda: prune(net, "random_node", 0.5, groups="stem"), "groups: expected the list from `channel_groups"),
        (lambda: prune(bare, "random_node", 0.5), "groups: the model has no `input_shape`"),
        (lambda: prune(net, "clustered", 0.5), "data: clustered pruning needs the pruning images"),
        (lambda: prune(net, "random_node", 0.99, groups=groups), "amount: 0.99 would prune all 8 unpruned channels of group 'stem'"),
        (lambda: compute_masks(net, "clustered", 0.5, groups=groups, activations={"stem": torch.zeros(3, 8)}),
         "activations: expected the activations of group 'b1.conv1'"),
    ]
    for fn, msg in cases:
        with pytest.raises((ValueError, TypeError), match=None) as e: fn()
        assert msg in str(e.value), (msg, str(e.value))
    assert prune(bare, "random_node", 0.5, data=torch.randn(4, 1, 6, 6))(torch.randn(2, 1, 6, 6)).shape == (2, 3)
