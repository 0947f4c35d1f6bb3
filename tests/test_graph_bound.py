"""The rigorous output-deviation bound of `netdeviation.deviation.deviation` on arbitrary fx-traceable networks,
against an independent brute-force reference written here from the propagation rules alone.

The reference walks the networks built in this file (their own container classes, not torch.fx), in float64:
b(input) = 0; a weighted op or eval-mode BatchNorm adds ||op_new(a) - op_old(a)||_F to g(op_new)*b_in, with g the
spectral norm of the dense bias-free matrix of the pruned op on one sample (built by applying it to the identity
basis); a pointwise nonlinearity multiplies by its Lipschitz constant; MaxPool by sqrt(the most pooling windows
that contain one input position, counted by enumeration); AvgPool / AdaptiveAvgPool by the spectral norm of their
dense matrix; flatten / view / reshape / Dropout / Identity pass b on; a residual add sums the two b's and a
channel concatenation adds them in quadrature. Every network and pruning is random (hypothesis, derandomized) or a
closed form, so nothing here depends on hardware, data files or trained weights."""
import copy, math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings, strategies as st
from torch import nn
from torch.nn.utils import prune

D = torch.float64

# ---------------------------------------------------------------- Lipschitz constants, computed here
def _sigmoid(x): return 1/(1 + math.exp(-x))
def _silu_slope(x): s = _sigmoid(x); return s*(1 + x*(1 - s))            # d/dx x*sigmoid(x)
def _silu_curve(x):                                                       # d^2/dx^2 x*sigmoid(x)
    s = _sigmoid(x); ds = s*(1 - s)
    return ds*(1 + x*(1 - s)) + s*((1 - s) - x*ds)

def _bisect(f, lo, hi, n=200):
    for _ in range(n):
        mid = (lo + hi)/2
        if (f(lo) > 0) == (f(mid) > 0): lo = mid
        else: hi = mid
    return (lo + hi)/2

# GELU: d/dx x*Phi(x) = Phi(x) + x*phi(x), stationary where phi(x)*(2 - x^2) = 0, a maximum at x = sqrt(2);
# its minimum, at -sqrt(2), is Phi(-sqrt 2) - sqrt(2)*phi(sqrt 2) = -0.068 (smaller in size).
LIP_GELU = 0.5*(1 + math.erf(1.0)) + math.exp(-1.0)/math.sqrt(math.pi)
# SiLU: slope s(x) with s(x) + s(-x) = 1, so the largest |s| is its maximum, where s' changes sign in (1, 4).
LIP_SILU = _silu_slope(_bisect(_silu_curve, 1.0, 4.0))

def test_lipschitz_constants():
    assert abs(LIP_GELU - 1.1290) < 1e-4 and abs(LIP_SILU - 1.0998) < 1e-4   # 1.128904, 1.099839
    for fn, lip in [(F.gelu, LIP_GELU), (F.silu, LIP_SILU)]:
        grid = torch.linspace(-12, 12, 480001, dtype=D, requires_grad=True)
        fn(grid).sum().backward(); slope = grid.grad                    # pointwise, so the gradient is the slope
        assert slope.abs().max().item() <= lip + 1e-15 and slope.abs().max().item() > lip - 1e-9

def lipschitz(m:nn.Module)->float:
    "Lipschitz constant of a pointwise nonlinearity."
    if isinstance(m, nn.ReLU): return 1.0
    if isinstance(m, nn.LeakyReLU): return max(1.0, abs(m.negative_slope))
    if isinstance(m, nn.Tanh): return 1.0
    if isinstance(m, nn.Sigmoid): return 0.25
    if isinstance(m, nn.GELU): assert m.approximate == "none"; return LIP_GELU
    if isinstance(m, nn.SiLU): return LIP_SILU
    raise TypeError(type(m))

ACTS = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU)

# ---------------------------------------------------------------- networks: containers whose forward fx can trace
class Chain(nn.Module):
    "Modules applied in order."
    def __init__(self, *layers): super().__init__(); self.layers = nn.ModuleList(layers)
    def forward(self, x):
        for m in self.layers: x = m(x)
        return x

class AddIdentity(nn.Module):
    "x + branch(x)."
    def __init__(self, branch): super().__init__(); self.branch = branch
    def forward(self, x): return x + self.branch(x)

class Add(nn.Module):
    "branch(x) + shortcut(x)."
    def __init__(self, branch, shortcut): super().__init__(); self.branch, self.shortcut = branch, shortcut
    def forward(self, x): return self.branch(x) + self.shortcut(x)

class Cat(nn.Module):
    "torch.cat of two branches along dim 1 (channels)."
    def __init__(self, left, right): super().__init__(); self.left, self.right = left, right
    def forward(self, x): return torch.cat([self.left(x), self.right(x)], 1)

class CatInput(nn.Module):
    "torch.cat of the input and a branch along dim 1 (dense-block style)."
    def __init__(self, branch): super().__init__(); self.branch = branch
    def forward(self, x): return torch.cat([x, self.branch(x)], dim=1)

class Flat(nn.Module):
    "Flatten all but the batch dimension, by one of torch's spellings."
    def __init__(self, how): super().__init__(); self.how = how
    def forward(self, x):
        if self.how == "flatten": return torch.flatten(x, 1)
        if self.how == "view": return x.view(x.size(0), -1)
        if self.how == "reshape": return x.reshape(x.shape[0], -1)
        return x.flatten(start_dim=1)
    def extra_repr(self): return self.how

# ---------------------------------------------------------------- the reference
def fro(t): return torch.linalg.vector_norm(t).item()

def dense_norm(fn, shape)->float:
    "Spectral norm of the linear map `fn` on one sample of `shape`, from its dense matrix (float64)."
    n = math.prod(shape)
    cols = fn(torch.eye(n, dtype=D).reshape(n, *shape)).reshape(n, -1)
    return torch.linalg.matrix_norm(cols.T, 2).item()

def max_windows(m:nn.Module, shape)->int:
    "Most pooling windows of `m` that contain one input position, by enumerating the windows."
    k, s, p = m.kernel_size, m.stride, m.padding
    sizes = shape[1:]
    tup = lambda v: (v,)*len(sizes) if isinstance(v, int) else tuple(v)
    k, s, p = tup(k), tup(s), tup(p)
    assert getattr(m, "dilation", 1) in (1, (1,)*len(sizes)) and not m.ceil_mode
    out = m(torch.zeros(1, *shape, dtype=D)).shape[2:]
    count = torch.zeros(sizes, dtype=torch.long)
    for o in torch.cartesian_prod(*[torch.arange(n) for n in out]).reshape(-1, len(sizes)).tolist():
        win = tuple(slice(max(0, oi*si - pi), max(0, oi*si - pi + ki)) for oi, si, pi, ki in zip(o, s, p, k))
        count[win] += 1
    return int(count.max())

def _params(m, names):
    return [None if getattr(m, n, None) is None else getattr(m, n).detach().to(D) for n in names]

def _conv_fn(m, w, b):
    conv = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d}[type(m)]
    return lambda u: conv(u, w, b, m.stride, m.padding, m.dilation, m.groups)

def _bn_fn(m, w, b):
    rm, rv = m.running_mean.to(D), m.running_var.to(D)
    return lambda u: F.batch_norm(u, rm, rv, w, b, False, 0.0, m.eps)

def reference(old:nn.Module, new:nn.Module, a, an, b:float, trace:list):
    """Propagate through `old` (original) / `new` (pruned): the original's activation `a`, the pruned network's `an`
    and the bound `b` on ||an - a||_F; returns them at the output. `trace` collects (module, b, ||an - a||_F)."""
    if isinstance(old, (Chain, nn.Sequential)):
        seq = (lambda m: m.layers) if isinstance(old, Chain) else (lambda m: m)
        for mo, mn in zip(seq(old), seq(new)): a, an, b = reference(mo, mn, a, an, b, trace)
        return a, an, b
    if isinstance(old, (AddIdentity, Add, Cat, CatInput)):
        names = {AddIdentity: (None, "branch"), Add: ("shortcut", "branch"), Cat: ("left", "right"),
                 CatInput: (None, "branch")}[type(old)]
        l, r = [(a, an, b) if k is None else reference(getattr(old, k), getattr(new, k), a, an, b, trace)
                for k in names]
        if isinstance(old, (AddIdentity, Add)): a, an, b = l[0] + r[0], l[1] + r[1], l[2] + r[2]
        else: a, an, b = torch.cat([l[0], r[0]], 1), torch.cat([l[1], r[1]], 1), math.hypot(l[2], r[2])
    elif isinstance(old, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)):
        (wo, bo), (wn, bn) = _params(old, ["weight", "bias"]), _params(new, ["weight", "bias"])
        if isinstance(old, nn.Linear):
            fo, fn, g = (lambda u: F.linear(u, wo, bo)), (lambda u: F.linear(u, wn, bn)), \
                dense_norm(lambda u: F.linear(u, wn), a.shape[1:])
            assert abs(g - torch.linalg.matrix_norm(wn, 2).item()) <= 1e-12*(1 + g)
        elif isinstance(old, (nn.Conv1d, nn.Conv2d)):
            fo, fn, g = _conv_fn(old, wo, bo), _conv_fn(new, wn, bn), dense_norm(_conv_fn(new, wn, None), a.shape[1:])
        else:
            assert not old.training and old.track_running_stats
            fo, fn = _bn_fn(old, wo, bo), _bn_fn(new, wn, bn)
            gamma = torch.ones_like(new.running_var, dtype=D) if wn is None else wn
            g = (gamma.abs()/torch.sqrt(new.running_var.to(D) + new.eps)).max().item()
        a, an, b = fo(a), fn(an), fro(fn(a) - fo(a)) + g*b
    elif isinstance(old, ACTS): a, an, b = old(a), new(an), lipschitz(new)*b
    elif isinstance(old, (nn.MaxPool1d, nn.MaxPool2d)):
        a, an, b = old(a), new(an), math.sqrt(max_windows(new, a.shape[1:]))*b
    elif isinstance(old, (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
        g = dense_norm(new, a.shape[1:])
        a, an, b = old(a), new(an), g*b
    elif isinstance(old, (Flat, nn.Flatten, nn.Dropout, nn.Identity)):
        assert not old.training
        a, an = old(a), new(an)
    else: raise TypeError(f"reference: no rule for {type(old).__name__}")
    trace.append((type(old).__name__, b, fro(an - a)))
    return a, an, b

def ref_bound(model, pruned, x)->tuple:
    "(reference bound, its per-node trace, float64 actual deviation, ||Y||_F of the original output)."
    trace = []
    x = x.to(D)
    a, an, b = reference(model, pruned, x, x, 0.0, trace)
    return b, trace, fro(an - a), fro(a)

def actual(model, pruned, x)->float:
    with torch.no_grad(): return fro(pruned(x) - model(x))

# ---------------------------------------------------------------- random networks
@st.composite
def builds(draw, dim=None):
    "A random network, a random pruning of it, and a batch: (model, pruned, x)."
    dim = draw(st.sampled_from([1, 2])) if dim is None else dim
    n, c = draw(st.integers(4, 8)), draw(st.integers(1, 3))
    size = draw(st.integers(5, 8)) if dim == 2 else draw(st.integers(5, 12))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    Conv = nn.Conv2d if dim == 2 else nn.Conv1d
    BN = nn.BatchNorm2d if dim == 2 else nn.BatchNorm1d
    MaxPool = nn.MaxPool2d if dim == 2 else nn.MaxPool1d
    AvgPool = nn.AvgPool2d if dim == 2 else nn.AvgPool1d
    Adaptive = nn.AdaptiveAvgPool2d if dim == 2 else nn.AdaptiveAvgPool1d

    def act():
        kind = draw(st.sampled_from(["relu", "leaky", "tanh", "sigmoid", "gelu", "silu"]))
        if kind == "leaky": return nn.LeakyReLU(draw(st.sampled_from([0.01, 0.2, -0.5, 1.5, -2.0])))
        return {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "silu": nn.SiLU}[kind]()

    def conv(cin, cout, size, k=None, s=None, p=None):
        k = draw(st.integers(1, min(3, size))) if k is None else k
        p = draw(st.integers(0, 1)) if p is None else p
        s = draw(st.integers(1, 2)) if s is None else s
        return Conv(cin, cout, k, s, p, bias=draw(st.booleans())), (size + 2*p - k)//s + 1

    def bn(ch): return BN(ch, affine=draw(st.integers(0, 4)) > 0)

    def block(ch, size, first=False):
        kinds = ["conv"] if first else ["conv", "residual", "maxpool", "cat", "bn", "act", "conv", "avgpool",
                                         "residual", "catin", "dropout"]
        if size < 2: kinds = ["conv1", "bn", "act", "dropout"]
        kind = draw(st.sampled_from(kinds))
        if kind in ("conv", "conv1"):
            cout = draw(WIDTHS)
            m, size = conv(ch, cout, size, k=1 if kind == "conv1" else None, p=0 if kind == "conv1" else None)
            layers = [m] + ([bn(cout)] if draw(st.booleans()) else []) + ([act()] if draw(st.booleans()) else [])
            return Chain(*layers), cout, size
        if kind == "bn": return bn(ch), ch, size
        if kind == "act": return act(), ch, size
        if kind == "dropout": return nn.Dropout(0.5), ch, size
        if kind in ("maxpool", "avgpool"):
            k = draw(st.integers(1, min(3, size)))
            s, p = draw(st.integers(1, 3)), draw(st.integers(0, k//2))
            m = MaxPool(k, s, p) if kind == "maxpool" else AvgPool(k, s, p, count_include_pad=draw(st.booleans()))
            return m, ch, (size + 2*p - k)//s + 1
        if kind == "residual":
            same = draw(st.booleans())                                  # identity shortcut
            cout, s = (ch, 1) if same else (draw(WIDTHS), draw(st.integers(1, 2)))
            k = draw(st.sampled_from([1, 3])) if size >= 3 else 1
            c1, size1 = conv(ch, cout, size, k=k, s=s, p=k//2)
            c2, _ = conv(cout, cout, size1, k=k, s=1, p=k//2)
            branch = Chain(c1, bn(cout), act(), c2, bn(cout))
            if same: return AddIdentity(branch), ch, size1
            proj, _ = conv(ch, cout, size, k=1, s=s, p=0)
            return Add(branch, Chain(proj, bn(cout))), cout, size1
        if kind == "cat":
            k = draw(st.sampled_from([1, 3])) if size >= 3 else 1
            cl, cr = draw(st.integers(1, 2)), draw(st.integers(1, 2))
            left, _ = conv(ch, cl, size, k=k, s=1, p=k//2)
            right, _ = conv(ch, cr, size, k=1, s=1, p=0)
            lefts = [left] + ([bn(cl), act()] if draw(st.booleans()) else [])
            return Cat(Chain(*lefts), Chain(right, bn(cr))), cl + cr, size
        if ch > 3: return nn.Identity(), ch, size                           # catin: keep widths small
        cb = draw(st.integers(1, 2))
        m, _ = conv(ch, cb, size, k=1, s=1, p=0)
        return CatInput(Chain(m, act())), ch + cb, size

    layers, ch, size0 = [], c, size
    for i in range(draw(st.sampled_from([3, 2, 4, 1]))):
        m, ch, size = block(ch, size, first=i == 0 and draw(st.integers(0, 3)) > 0)   # mostly a conv first
        layers.append(m)
    if draw(st.integers(0, 3)) == 0:
        out = draw(st.integers(1, min(3, size)))
        layers.append(Adaptive(out)); size = out
    layers.append(draw(st.sampled_from([nn.Flatten(), Flat("flatten"), Flat("view"), Flat("reshape"), Flat("method")])))
    if draw(st.booleans()): layers.append(nn.Dropout(0.3))
    feat, hidden, classes = ch*size**dim, draw(WIDTHS), draw(st.integers(1, 3))
    if draw(st.integers(0, 3)) > 0:
        head = [nn.Linear(feat, hidden, bias=draw(st.booleans()))]
        if draw(st.booleans()): head.append(nn.BatchNorm1d(hidden, affine=draw(st.integers(0, 4)) > 0))
        head += [act(), nn.Linear(hidden, classes)]
    else: head = [nn.Linear(feat, classes)]
    model = Chain(*layers, *head)
    init_(model, g)
    pruned = copy.deepcopy(model)
    prune_(pruned, g, draw)
    x = torch.randn((n, c) + (size0,)*dim, generator=g)
    return model.eval(), pruned.eval(), x

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)
BNS = (nn.BatchNorm1d, nn.BatchNorm2d)

@torch.no_grad()
def init_(model:nn.Module, g:torch.Generator):
    "Random weights, biases and BatchNorm statistics from `g`."
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            fan_in = m.weight[0].numel()
            scale = (0.5 + torch.rand(1, generator=g))/math.sqrt(fan_in)
            m.weight.copy_(torch.randn(m.weight.shape, generator=g)*scale)
            if m.bias is not None: m.bias.copy_(0.3*torch.randn(m.bias.shape, generator=g))
        elif isinstance(m, BNS):
            m.running_mean.copy_(0.3*torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.2 + 2*torch.rand(m.num_features, generator=g))
            if m.affine:
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.3*torch.randn(m.num_features, generator=g))

WIDTHS = st.sampled_from([2, 3, 1, 4])   # channels / hidden units; hypothesis starts at the first
DENSITIES = [0.5, 0.1, 0.3, 0.0, 0.7, 0.8, 0.9, 0.95, 1.0]   # kept fraction; hypothesis starts at the first

def prune_(pruned:nn.Module, g:torch.Generator, draw):
    """Random 0/1 masks through `torch.nn.utils.prune.custom_from_mask`: per layer none, all ones, random entries at
    a random density, or whole output channels (with the same channels of a BatchNorm right after it)."""
    mods = [m for m in pruned.modules() if isinstance(m, PRUNABLE) and getattr(m, "weight", None) is not None]
    forced = {}
    for i, m in enumerate(mods):
        if id(m) in forced: mode, keep = "channels", forced[id(m)]
        else:
            mode = draw(st.sampled_from(["random", "channels", "none", "random", "ones", "channels", "random"]))
            keep = torch.rand(m.weight.shape[0], generator=g) < draw(st.sampled_from(DENSITIES))
        if mode == "none": continue
        if mode == "ones":
            prune.custom_from_mask(m, "weight", torch.ones_like(m.weight))
            continue
        if mode == "random":
            wm = (torch.rand(m.weight.shape, generator=g) < draw(st.sampled_from(DENSITIES))).float()
            bm = (torch.rand(m.bias.shape, generator=g) < draw(st.sampled_from(DENSITIES))).float() \
                if m.bias is not None and draw(st.booleans()) else None
        else:
            wm = keep.reshape(-1, *[1]*(m.weight.dim() - 1)).expand_as(m.weight).float()
            bm = keep.float() if m.bias is not None else None
            if not isinstance(m, BNS) and i + 1 < len(mods) and isinstance(mods[i + 1], BNS) \
                    and mods[i + 1].num_features == len(keep):
                forced[id(mods[i + 1])] = keep
        prune.custom_from_mask(m, "weight", wm)
        if bm is not None: prune.custom_from_mask(m, "bias", bm)
    if mods and not prune.is_pruned(pruned):   # every layer drew "none": a pruned copy still carries masks (of ones)
        prune.custom_from_mask(mods[0], "weight", torch.ones_like(mods[0].weight))

# ---------------------------------------------------------------- properties
SETTINGS = dict(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))

def _allow(bound, y): return 1e-6*(bound + y)

def check_reference(case):
    model, pruned, x = case
    b, trace, act64, y = ref_bound(model, pruned, x)
    for name, bn, dn in trace: assert bn >= dn*(1 - 1e-9) - 1e-12*(1 + y), (name, bn, dn)   # at every node
    act32 = actual(model, pruned, x)
    assert b >= act32 - _allow(b, y), (b, act32)
    assert abs(act64 - act32) <= _allow(act64, y)
    return b, act32, y

def check_package(case):
    from netdeviation.deviation import deviation
    model, pruned, x = case
    b, act32, y = check_reference(case)
    d = deviation(model, pruned, x)
    assert d.bound_rigorous == pytest.approx(b, rel=1e-6, abs=1e-9), (d.bound_rigorous, b)
    assert d.lhs == pytest.approx(act32, rel=1e-6, abs=1e-6*y), (d.lhs, act32)
    assert d.bound_rigorous >= d.lhs - _allow(b, y)

# default run: 150 + 500 examples (the package against the reference on 500 random nets); --runslow adds 5000 more of each
@settings(max_examples=150, **SETTINGS)
@given(builds())
def test_reference_never_below_actual(case): check_reference(case)

@settings(max_examples=500, **SETTINGS)
@given(builds())
def test_package_matches_reference(case): check_package(case)

@pytest.mark.slow
@settings(max_examples=5000, **SETTINGS)
@given(builds())
def test_reference_never_below_actual_many(case): check_reference(case)

@pytest.mark.slow
@settings(max_examples=5000, **SETTINGS)
@given(builds())
def test_package_matches_reference_many(case): check_package(case)

# ---------------------------------------------------------------- closed forms
def _mask(w, g, density=0.5): return (torch.rand(w.shape, generator=g) < density).float()

def _pruned_copy(model, masks:dict):
    "deepcopy of `model` with `masks` {module name: weight mask} applied by torch's prune."
    pruned = copy.deepcopy(model)
    for name, mask in masks.items(): prune.custom_from_mask(pruned.get_submodule(name), "weight", mask)
    return model.eval(), pruned.eval()

def _dz(old, new, x)->torch.Tensor:
    "Change of one weighted layer's output on its (original) input `x`, in float64."
    dw = (new.weight - old.weight).detach().double()                    # the closed forms prune weights only
    if isinstance(old, nn.Linear): return F.linear(x.double(), dw)
    return F.conv2d(x.double(), dw, None, old.stride, old.padding)

def _fro_t(t): return torch.linalg.vector_norm(t.double()).item()

def _linear():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3)); init_(model, g)
    x = torch.randn(8, 6, generator=g)
    model, pruned = _pruned_copy(model, {"0": _mask(model[0].weight, g)})
    dw = (pruned[0].weight - model[0].weight).detach()
    return model, pruned, x, _fro_t(x.double() @ dw.double().T)                                     # ||dW X||_F exactly

def _linear_relu_linear():
    g = torch.Generator().manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)); init_(model, g)
    x = torch.randn(8, 6, generator=g)
    model, pruned = _pruned_copy(model, {"0": _mask(model[0].weight, g)})
    return model, pruned, x, _fro_t(_dz(model[0], pruned[0], x))*torch.linalg.matrix_norm(
        model[2].weight.detach().double(), 2).item()                              # ||dZ||·||W2||_2

def _two_branches(cls, combine):
    def make():
        g = torch.Generator().manual_seed(2)
        model = cls(Chain(nn.Linear(5, 3)), Chain(nn.Linear(5, 3))); init_(model, g)
        names = ["shortcut", "branch"] if cls is Add else ["left", "right"]
        x = torch.randn(7, 5, generator=g)
        masks = {f"{k}.layers.0": _mask(getattr(model, k).layers[0].weight, g) for k in names}
        model, pruned = _pruned_copy(model, masks)
        d = [_fro_t(_dz(getattr(model, k).layers[0], getattr(pruned, k).layers[0], x)) for k in names]
        return model, pruned, x, combine(*d)
    return make

def _after_conv(post, factor, size=8, seed=3):
    "A pruned 3x3 conv (padding 1) followed by the parameter-free `post`: bound = factor·||dZ||."
    def make():
        g = torch.Generator().manual_seed(seed)
        model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), post); init_(model, g)
        x = torch.randn(5, 2, size, size, generator=g)
        model, pruned = _pruned_copy(model, {"0": _mask(model[0].weight, g)})
        return model, pruned, x, factor*_fro_t(_dz(model[0], pruned[0], x))
    return make

def _linear_bn():
    g = torch.Generator().manual_seed(4)
    model = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4)); init_(model, g)
    x = torch.randn(8, 6, generator=g)
    model, pruned = _pruned_copy(model, {"0": _mask(model[0].weight, g)})
    bn = model[1]
    gain = (bn.weight.detach().double().abs()/torch.sqrt(bn.running_var.double() + bn.eps)).max().item()
    return model, pruned, x, gain*_fro_t(_dz(model[0], pruned[0], x))          # max|γ|/sqrt(var+eps)·||dZ||

def _unpruned():
    g = torch.Generator().manual_seed(5)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(27, 2))
    init_(model, g)
    x = torch.randn(4, 2, 5, 5, generator=g)
    model, pruned = _pruned_copy(model, {"0": torch.ones(3, 2, 3, 3), "1": torch.ones(3), "4": torch.ones(2, 27)})
    return model, pruned, x, 0.0

def _light(wrap):
    "One weight 1e-3 of a Linear with O(1) outputs pruned: ||dW X||_F is 1e-3 of them (float32 cancellation test)."
    def make():
        lin = nn.Linear(4, 2, bias=False)
        with torch.no_grad(): lin.weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1e-3], [1.0, 1.0, 1.0, 1.0]]))
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(6)).abs() + 1
        model, pruned = _pruned_copy(wrap(lin), {"0" if wrap is nn.Sequential else "layers.0": torch.tensor(
            [[1.0, 1, 1, 0], [1.0, 1, 1, 1]])})
        return model, pruned, x, abs(lin.weight[0, 3].item())*_fro_t(x[:, 3])
    return make

CLOSED = {"light_sequential": _light(nn.Sequential), "light_fx": _light(Chain),
          "linear": _linear, "linear_relu_linear": _linear_relu_linear,
          "residual_add": _two_branches(Add, lambda a, b: a + b), "cat": _two_branches(Cat, math.hypot),
          "maxpool_2x2": _after_conv(nn.MaxPool2d(2), 1.0),
          "maxpool_3x3_s2": _after_conv(nn.MaxPool2d(3, 2, 1), 2.0, 7),       # positions in up to 2x2 windows
          "avgpool_2": _after_conv(nn.AvgPool2d(2), 0.5), "leaky_relu": _after_conv(nn.LeakyReLU(-2.0), 2.0),
          "sigmoid": _after_conv(nn.Sigmoid(), 0.25), "linear_bn": _linear_bn, "unpruned": _unpruned}

@pytest.mark.parametrize("name", CLOSED)
def test_closed_form_reference(name):
    model, pruned, x, want = CLOSED[name]()
    b, _, act64, y = ref_bound(model, pruned, x)
    assert b == pytest.approx(want, rel=1e-9, abs=1e-12) and b >= act64*(1 - 1e-9)
    if name != "unpruned": assert want > 0

@pytest.mark.parametrize("name", CLOSED)
def test_closed_form_package(name):
    from netdeviation.deviation import deviation
    model, pruned, x, want = CLOSED[name]()
    d = deviation(model, pruned, x)
    assert d.bound_rigorous == pytest.approx(want, rel=1e-6, abs=1e-9), (d.bound_rigorous, want)
    with torch.no_grad(): scale = fro(model(x))  # float32 rounding of the outputs, not of their (small) difference, sets the error
    assert d.lhs == pytest.approx(actual(model, pruned, x), rel=1e-6, abs=1e-6*scale + 1e-9)


# ---------------------------------------------------------------- an input used twice, alpha, repeated indices
class _Reuse(nn.Module):
    "h = fc(x), then h used twice (h + h, cat[h, h], h + α·h) or with repeated indices, then a linear head."
    def __init__(self, how:str):
        super().__init__(); self.how = how
        self.fc = nn.Linear(6, 6)
        self.out = nn.Linear(12 if how == "cat" else 8 if how == "index" else 6, 3)
    def forward(self, x):
        h = self.fc(x)
        if self.how == "add": y = h + h
        elif self.how == "cat": y = torch.cat([h, h], 1)
        elif self.how == "alpha": y = torch.add(h, h, alpha=-3.0)
        else: y = h[:, [0, 0, 0, 0, 1, 2, 3, 4]]
        return self.out(y)

@pytest.mark.parametrize("how, factor", [("add", 2.0), ("cat", math.sqrt(2)), ("alpha", 4.0), ("index", 2.0)])
def test_reused_inputs_count_in_the_rigorous_bound(how, factor):
    "Pruning only fc: by hand, the bound is ‖δfc‖ × the map's factor (2, √2, 1 + |α|, √(4 repeats)) × ‖out‖₂, and it holds."
    from netdeviation.deviation import deviation
    from netdeviation.graph import copy_model
    torch.manual_seed(0)
    m = _Reuse(how).to(D).eval(); p = copy_model(m)
    prune.random_unstructured(p.fc, "weight", amount=0.5)
    x = torch.randn(32, 6, dtype=D)
    d = deviation(m, p, x)
    with torch.no_grad():
        change = (p.fc(x) - m.fc(x)).norm().item()
        want = change*factor*torch.linalg.matrix_norm(m.out.weight, 2).item()
    assert d.bound_rigorous == pytest.approx(want, rel=1e-6)
    assert d.lhs <= d.bound_rigorous*(1 + 1e-9)
