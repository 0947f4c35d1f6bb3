"""The graph computes what the model computes (issue 22): a skip connection that reads a tensor an in-place ReLU has
changed, torchvision's ResNet-18, and the two routes of `deviation` (a pruned copy, or its masks) on every
architecture — BatchNorm with and without `affine`, a BatchNorm before the first layer, a residual block — for all
five methods. Every reference is the model's own eager forward pass."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netdeviation.deviation import deviation
from netdeviation.graph import trace
from netdeviation.pruning import METHODS, apply_masks, compute_masks, copy_model, get_masks, prune, sparsity_report


def _stats(model:nn.Module, shape:tuple, seed:int=0)->nn.Module:
    "Give every BatchNorm running statistics of its own (train-mode passes on shifted data), then eval mode."
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for k in range(3): model(2*torch.randn(16, *shape, generator=g) + k)
    return model.eval()


class SkipInplace(nn.Module):
    """conv-BN, ReLU, conv-BN, then a skip connection that adds the activation back. `mode` says how the ReLU is
    written: 'module' (nn.ReLU(inplace=True)) and 'functional' (F.relu(inplace=True)) change the BN output `h` in
    place and the skip reads `h`; 'explicit' writes the same function without in-place operations."""
    def __init__(self, mode:str, c:int=4):
        super().__init__()
        self.mode = mode
        self.conv1, self.bn1 = nn.Conv2d(2, c, 3, padding=1), nn.BatchNorm2d(c)
        self.act = nn.ReLU(inplace=(mode == "module"))
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.fc = nn.Linear(c*6*6, 3)
    def forward(self, x):
        h = self.bn1(self.conv1(x))
        if self.mode == "functional": a = F.relu(h, inplace=True)
        else: a = self.act(h)
        skip = a if self.mode == "explicit" else h      # eager: h *is* relu(h) by now
        y = self.bn2(self.conv2(a)) + skip
        return self.fc(torch.flatten(F.relu(y), 1))

SHAPE = (2, 6, 6)

@pytest.fixture(scope="module")
def skip_models()->dict:
    torch.manual_seed(0)
    base = _stats(SkipInplace("explicit"), SHAPE)
    out = {}
    for mode in ("explicit", "module", "functional"):
        m = SkipInplace(mode); m.load_state_dict(base.state_dict()); out[mode] = m.eval()
    return out

X = torch.randn(20, *SHAPE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("mode", ["module", "functional"])
def test_graph_run_matches_eager_with_inplace_relu(skip_models, mode):
    m = skip_models[mode]
    with torch.no_grad(): eager, explicit = m(X.clone()), skip_models["explicit"](X.clone())
    assert torch.equal(eager, explicit)                    # the in-place model is the explicit function
    with torch.no_grad(): by_graph = trace(m).run(m, X)["output"]
    assert torch.equal(by_graph, eager)
    p = prune(m, "magnitude", 0.5)                          # a pruned copy runs the same way
    with torch.no_grad(): assert torch.equal(trace(m).run(p, X)["output"], p(X.clone()))


@pytest.mark.parametrize("method", METHODS)
def test_deviation_of_an_inplace_model_equals_the_explicit_one(skip_models, method):
    "One set of masks on the three ways of writing the model: the same LHS, bounds and sparsity; the LHS is eager's."
    masks = compute_masks(skip_models["explicit"], method, 0.5, data=X, groups=None)
    got = {mode: deviation(m, masks, X).summary() for mode, m in skip_models.items()}
    want = got["explicit"]
    for mode in ("module", "functional"):
        for k in ("lhs", "bound_paper", "bound_rigorous", "sparsity", "y_norm"): assert got[mode][k] == pytest.approx(want[k], rel=1e-9), (mode, k)
    m = skip_models["module"]
    p = apply_masks(copy_model(m), masks)
    with torch.no_grad(): eager = (p(X.clone()).double() - m(X.clone()).double()).norm().item()
    assert got["module"]["lhs"] == pytest.approx(eager, rel=1e-5, abs=1e-6)


def test_resnet18_graph_matches_eager():
    "torchvision's ResNet-18 (nn.ReLU(inplace=True), `out += identity`), untrained and with BatchNorm statistics."
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = _stats(torchvision.models.resnet18(weights=None, num_classes=10), (3, 32, 32))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    g = trace(net)
    with torch.no_grad():
        eager = net(x.clone())
        assert torch.equal(g.run(net, x)["output"], eager)
        p = prune(net, "magnitude", 0.3)
        assert torch.equal(g.run(p, x)["output"], p(x.clone()))
    assert torch.equal(x, torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)))  # the input is left as it was


# ---------------------------------------------------------------- the two routes of `deviation`

class Res(nn.Module):
    "conv-BN-ReLU, then a residual block (conv-BN + identity), ReLU, Linear."
    def __init__(self, affine:bool):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4, affine=affine)
        self.c2, self.b2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4, affine=affine)
        self.fc = nn.Linear(4*6*6, 3)
    def forward(self, x):
        h = F.relu(self.b1(self.c1(x)))
        return self.fc(F.relu(self.b2(self.c2(h)) + h).flatten(1))

def _conv_bn(affine:bool)->nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, affine=affine), nn.ReLU(), nn.Conv2d(4, 4, 3),
                         nn.BatchNorm2d(4, affine=affine), nn.ReLU(), nn.Flatten(), nn.Linear(4*2*2, 3))

ARCHS = {
    "bn2d_affine": lambda: _conv_bn(True),
    "bn2d_no_affine": lambda: _conv_bn(False),
    "bn_before_first_layer": lambda: nn.Sequential(nn.BatchNorm2d(1, affine=False), nn.Conv2d(1, 4, 3), nn.ReLU(),
                                                   nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3)),
    "bn1d_no_affine": lambda: nn.Sequential(nn.Flatten(), nn.Linear(36, 12), nn.BatchNorm1d(12, affine=False), nn.ReLU(),
                                            nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)),
    "residual_affine": lambda: Res(True),
    "residual_no_affine": lambda: Res(False),
}
XR = torch.randn(24, 1, 6, 6, generator=torch.Generator().manual_seed(3))

@pytest.mark.parametrize("train_mode", [False, True])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_masks_route_equals_pruned_route(arch, train_mode):
    """`deviation(model, pruned)` and `deviation(model, get_masks(pruned))` agree for all five methods, their LHS is the
    eager eval-mode difference, and the model's mode and BatchNorm statistics are left as they were (a model left in
    train mode included: deviation is measured in eval mode). A sparsity report on the pruned copy first changes
    nothing (it once ran a BatchNorm(affine=False) as a parameter-free module in train mode, moving its statistics)."""
    torch.manual_seed(0)
    model = _stats(ARCHS[arch](), (1, 6, 6)).train(train_mode)
    state = copy.deepcopy(model.state_dict())
    for method in METHODS:
        pruned = prune(model, method, 0.5, data=XR)
        before = copy.deepcopy(pruned.state_dict())
        sparsity_report(pruned, (1, 6, 6))
        assert all(torch.equal(v, pruned.state_dict()[k]) for k, v in before.items())
        a, b = deviation(model, pruned, XR).summary(), deviation(model, get_masks(pruned), XR).summary()
        for k in ("lhs", "bound_paper", "bound_rigorous", "sparsity", "y_norm"):
            assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12), (method, k, a[k], b[k])
        m, p = copy.deepcopy(model).eval(), copy.deepcopy(pruned).eval()
        with torch.no_grad(): eager = (p(XR).double() - m(XR).double()).norm().item()
        assert a["lhs"] == pytest.approx(eager, rel=1e-5, abs=1e-6), (method, a["lhs"], eager)
    assert model.training == train_mode
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
