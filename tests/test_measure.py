"""Measure once (nbs/05b_measure.ipynb): counters around the functions that measure — `evaluate`, `deviation`,
`loss_and_grad`, `original_activations` — show that one pruned network is evaluated once, its deviation computed once
and its loss and gradients taken once, and that the original's L*, gradients and activations are computed once for a
sweep of six amounts (through `measure_features`, `advise` and `corpus_run`); a network changed in place, or other
data, is measured again; and `measure_features` gives exactly what the separate functions give."""
import copy, math, os
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import netdeviation.bounds as B
import netdeviation.measure as M
from netdeviation.bounds import loss_and_grad, retraining_bounds
from netdeviation.corpus import measure_features
from netdeviation.data import from_tensors
from netdeviation.deviation import deviation
from netdeviation.pruning import prune
from netdeviation.training import Baseline, TrainConfig, evaluate

torch.set_num_threads(1)
AMOUNTS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)
CONFIG = TrainConfig("adam", 1e-3, 1, 32, "constant")


def _tiny()->tuple[Baseline, object]:
    "A small chain (two hidden layers) with random weights, its W_initial, and random data: no MNIST needed."
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(400, 1, 8, 8, generator=g), torch.randint(0, 4, (400,), generator=g)
    data = from_tensors(x, y, n_val=120, seed=0, name="random")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    w0 = copy.deepcopy(net.state_dict())
    with torch.no_grad():
        for p in net.parameters(): p.add_(0.05*torch.randn(p.shape, generator=g))   # W* ≠ W_initial
    return Baseline.from_model(net.eval(), w_initial=w0, t_initial=1.0, config=CONFIG), data


class Calls:
    "Counts calls of the measuring functions, per function and per network (the first argument), where `measure` and `bounds` look them up."
    def __init__(self, monkeypatch):
        self.n, self.nets = Counter(), {}
        for mod, name in ((M, "evaluate"), (M, "deviation"), (M, "loss_and_grad"), (M, "original_activations"), (B, "loss_and_grad")):
            real = getattr(mod, name)
            def counted(model, *a, _real=real, _name=name, **k):
                self.n[_name] += 1; self.nets.setdefault(_name, Counter())[id(model)] += 1
                if _name == "loss_and_grad" and not torch_prune.is_pruned(model): self.n["unpruned"] += 1  # counted at the call: ids are reused
                return _real(model, *a, **k)
            monkeypatch.setattr(mod, name, counted)
    def on(self, name:str, model:nn.Module)->int: return self.nets.get(name, Counter())[id(model)]
    def unpruned_grads(self)->int:
        "loss_and_grad calls on networks without masks: W* and W_initial."
        return self.n["unpruned"]


def test_one_pruning_is_measured_once(monkeypatch):
    base, data = _tiny()
    n = Calls(monkeypatch)
    pruned = prune(base.model, "magnitude", 0.7)
    f = measure_features(pruned, base, data, method="magnitude")
    assert n.on("evaluate", pruned) == 1 and n.on("evaluate", base.model) == 1         # one evaluation of each network
    assert n.n["deviation"] == 1 and n.n["original_activations"] == 1                  # one deviation pass, on activations computed once
    assert n.on("loss_and_grad", pruned) == 1 and n.on("loss_and_grad", base.model) == 1  # one L(W_s), one L*
    assert n.unpruned_grads() == 2 and n.n["loss_and_grad"] == 3                       # W*, W_initial, W_s: once each
    assert math.isfinite(f["log_theorem1"])


def test_a_sweep_of_six_amounts_measures_the_original_once(monkeypatch):
    base, data = _tiny()
    n = Calls(monkeypatch)
    nets = [prune(base.model, m, a) for a in AMOUNTS for m in ("magnitude", "magnitude_node") if not (m == "magnitude_node" and a > 0.8)]
    for p in nets: measure_features(p, base, data)
    assert n.on("evaluate", base.model) == 1 and n.on("loss_and_grad", base.model) == 1 and n.unpruned_grads() == 2
    assert n.n["original_activations"] == 1
    assert all(n.on("evaluate", p) == 1 and n.on("loss_and_grad", p) == 1 for p in nets) and n.n["deviation"] == len(nets)


def test_advise_measures_once(monkeypatch):
    from netdeviation.advisor import advise
    base, data = _tiny()
    n = Calls(monkeypatch)
    for a in AMOUNTS[:3]: advise(prune(base.model, "magnitude", a), base, data, tolerance=0.05, method="magnitude")
    assert n.on("evaluate", base.model) == 1 and n.unpruned_grads() == 2 and n.n["deviation"] == 3
    assert n.n["loss_and_grad"] == 2 + 3 and n.n["evaluate"] == 1 + 3


def test_a_changed_original_or_other_data_is_measured_again(monkeypatch):
    base, data = _tiny()
    n = Calls(monkeypatch)
    p = prune(base.model, "magnitude", 0.5)
    first = measure_features(p, base, data, method="magnitude")
    with torch.no_grad(): base.model[1].weight.mul_(1.5)           # trained further, in place: the same object, other values
    p2 = prune(base.model, "magnitude", 0.5)
    second = measure_features(p2, base, data, method="magnitude")
    assert n.on("loss_and_grad", base.model) == 2 and n.on("evaluate", base.model) == 2 and n.n["original_activations"] == 2
    assert second["ref_loss"] != first["ref_loss"]
    assert second["ref_loss"] == evaluate(base.model, data.x_val, data.y_val)["loss"]   # not the stale L*
    base.model[1].weight.data.copy_(base.model[1].weight.data*2)    # through .data: no version bump, the values still differ
    measure_features(prune(base.model, "magnitude", 0.5), base, data, method="magnitude")
    assert n.on("loss_and_grad", base.model) == 3
    other = from_tensors(data.x_val.clone()*0.5, data.y_val.clone(), n_val=40, seed=1, name="other")
    measure_features(prune(base.model, "magnitude", 0.5), base, other, method="magnitude")
    assert n.on("loss_and_grad", base.model) == 4 and n.on("evaluate", base.model) == 4
    bare = Baseline.from_model(base.model, config=CONFIG)            # the same network without W_initial: no ∇L(W_initial)
    measure_features(prune(base.model, "magnitude", 0.5), bare, data, method="magnitude")
    assert n.on("loss_and_grad", base.model) == 5 and n.unpruned_grads() == 2*4 + 1  # its own W* (another key), no W_initial


def test_features_equal_the_separate_functions():
    "Reading from one Measurement changes no number: the features equal those of the functions called one by one."
    base, data = _tiny()
    x, y = data.pruning_data
    for method, amount in (("magnitude", 0.8), ("random", 0.5), ("magnitude_node", 0.5)):
        p = prune(base.model, method, amount)
        f = measure_features(p, base, data, method=method)
        ref, start, d = evaluate(base.model, x, y), evaluate(p, x, y), deviation(base.model, p, x)
        b = retraining_bounds(p, base, data, mu="secant" if method in ("random", "magnitude") else "pl", gamma_free=False)
        assert (f["ref_loss"], f["ref_acc"], f["start_loss"], f["start_acc"]) == (ref["loss"], ref["acc"], start["loss"], start["acc"])
        assert (f["lhs"], f["bound_paper"], f["bound_rigorous"], f["rel_dev"]) == (d.lhs, d.bound_paper, d.bound_rigorous, d.rel_dev)
        assert (f["grad_sparse_sq"], f["mu1"], f["mu2"], f["theorem1_epochs"]) == (b.quantities["grad_sparse_sq"], b.quantities["mu1"],
                                                                                 b.quantities["mu2"], b.epochs["theorem1_paper"])
        m = M.measure(p, base, data, method=method)
        full = m.retraining_bounds(method=method, beta_iters=3, curvature_steps=3)
        fresh = retraining_bounds(p, base, data, method=method, beta_iters=3, curvature_steps=3)
        assert full.iterations.keys() == fresh.iterations.keys()
        assert all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(full.iterations.values(), fresh.iterations.values()))


def test_points_are_checked():
    base, data = _tiny()
    p = prune(base.model, "magnitude", 0.5)
    with pytest.raises(ValueError, match="points"): retraining_bounds(p, base, data, method="magnitude", points={"elsewhere": 1})
    with pytest.raises(ValueError, match="points"): retraining_bounds(p, base, data, method="magnitude", points={"star": (1.0, {})})
    m = M.measure(p, base, data, method="magnitude")  # points of weights only, asked for with biases: refused, not mixed
    with pytest.raises(ValueError, match=r"points: \[.*'sparse'.*\] hold the tensors .* count .*'1\.bias'.*same include_bias"):
        retraining_bounds(p, base, data, method="magnitude", include_bias=True, points=m.points)
    b = m.retraining_bounds(method="magnitude", include_bias=True, gamma_free=False)  # through the Measurement: measured afresh
    assert b.quantities["grad_sparse_sq"] >= m.bounds.quantities["grad_sparse_sq"]      # ‖∇L‖² over more tensors


def _mnist_root()->Path|None:
    root = os.environ.get("NETDEVIATION_DATA")
    return Path(root) if root and (Path(root)/"MNIST"/"raw"/"train-images-idx3-ubyte").exists() else None

@pytest.mark.skipif(_mnist_root() is None, reason="MNIST not in NETDEVIATION_DATA")
def test_corpus_run_of_six_amounts_measures_the_original_once(tmp_path, monkeypatch):
    from netdeviation.corpus import corpus_run
    import netdeviation.deviation as Dv
    n, recorded, real = Calls(monkeypatch), Counter(), Dv.original_activations
    monkeypatch.setattr(Dv, "original_activations", lambda *a, **k: (recorded.update(["sweep"]), real(*a, **k))[1])
    rows = corpus_run("mnist", "lenet_300_100", "magnitude", list(AMOUNTS), recipes=["paper"], cap=1.0, n_train=500, n_val=200,
                      cache=tmp_path, progress=False)
    assert recorded["sweep"] == 0                         # the grid sweep (D_grid's scale) reuses the Original's activations
    assert len(rows) == 6
    assert n.unpruned_grads() == 2                        # ∇L(W*) and ∇L(W_initial): once for the six amounts
    assert n.n["loss_and_grad"] == 2 + 6 and n.n["deviation"] == 6 and n.n["original_activations"] == 1
    assert n.n["evaluate"] == 1 + 6                        # acc*, L* once; each pruned network once (no BatchNorm)
    # D_grid as the deviation module defines it: the same amounts swept there, scaled by the grid 10-80%
    from netdeviation.corpus import corpus_baseline, corpus_data
    from netdeviation.deviation import deviation_sweep
    data = corpus_data("mnist", 500, 200)
    sweep = deviation_sweep(corpus_baseline("lenet_300_100", data, cache=tmp_path).model, data.x_val, methods=("magnitude",),
                            amounts=AMOUNTS, progress=False)
    with pytest.raises(ValueError, match="activations: expected"):   # activations of other images are refused
        deviation_sweep(sweep_model := corpus_baseline("lenet_300_100", data, cache=tmp_path).model, data.x_val, methods=("magnitude",),
                        amounts=AMOUNTS, progress=False, activations=real(sweep_model, data.x_val[:50]))
    assert rows.D_grid.tolist() == pytest.approx(sweep.D_grid.tolist(), rel=1e-12) and rows.D_grid.iloc[-1] > 1  # 95% lies beyond the grid


# ---------------------------------------------------------------- the structure, held once

def test_a_sweep_traces_and_builds_the_dependency_graph_once(monkeypatch):
    "A network that is not a chain (BatchNorm), pruned by channels at six amounts and measured: one fx trace, one DependencyGraph."
    import torch_pruning as tp
    import netdeviation.graph as G
    from netdeviation.models import bn_cnn
    n = Counter()
    for owner, name in ((G._Tracer, "trace"), (tp.DependencyGraph, "build_dependency")):
        real = getattr(owner, name)
        def counted(self, *a, _real=real, _name=name, **k):
            n[_name] += 1; return _real(self, *a, **k)
        monkeypatch.setattr(owner, name, counted)
    g = torch.Generator().manual_seed(0)
    data = from_tensors(torch.rand(300, 1, 28, 28, generator=g), torch.randint(0, 10, (300,), generator=g), n_val=100, seed=0)
    torch.manual_seed(0)
    net = bn_cnn(channels=(4, 8), hidden=16); w0 = copy.deepcopy(net.state_dict())
    base = Baseline.from_model(net.eval(), w_initial=w0, t_initial=1.0, config=CONFIG)
    for a in (0.1, 0.2, 0.3, 0.5, 0.7, 0.8):
        measure_features(prune(base.model, "magnitude_node", a, data=data.x_val), base, data, method="magnitude_node")
    assert n == {"trace": 1, "build_dependency": 1}


def test_fingerprint_tells_reordered_values_apart():
    from netdeviation.measure import fingerprint
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]]); b = a.flip(1)       # the same values, so the same sum, in another order
    (*_, sa, wa), (*_, sb, wb) = fingerprint([("w", a)])[0], fingerprint([("w", b)])[0]
    assert sa == sb and wa != wb
    c = torch.arange(6).reshape(2, 3)                                # integer buffers (e.g. num_batches_tracked) too
    assert fingerprint([("n", c)])[0][-1] != fingerprint([("n", c.flip(1))])[0][-1]


# ---------------------------------------------------------------- the feature pass stays in plain autograd

_FRESH = """
import sys, torch
from netdeviation.corpus import CORPUS_ARCHS, measure_features
from netdeviation.data import from_tensors
from netdeviation.pruning import prune
from netdeviation.training import Baseline
g = torch.Generator().manual_seed(0)
data = from_tensors(torch.rand(120, 1, 28, 28, generator=g), torch.randint(0, 10, (120,), generator=g), n_val=30, seed=0, name="random")
torch.manual_seed(0); net = CORPUS_ARCHS["resnet8_w4"]().eval()
base = Baseline.from_model(net, w_initial={k: v.clone() for k, v in net.state_dict().items()}, t_initial=1.0)
for m in ("magnitude", "random_node"): measure_features(prune(net, m, 0.5, data=data.x_val), base, data, method=m)
print("torch._dynamo" in sys.modules)
"""

def test_feature_pass_does_not_import_torch_compiler():
    "A fresh process measuring a residual BatchNorm network never loads torch._dynamo (torch.func's transforms would: seconds per process)."
    import subprocess, sys
    r = subprocess.run([sys.executable, "-c", _FRESH], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "False", r.stdout


# ---------------------------------------------------------------- stale or foreign inputs are not reused
def test_measure_refuses_activations_of_other_images():
    from netdeviation.deviation import original_activations
    base, data = _tiny()
    p = prune(base.model, "magnitude", 0.5)
    with pytest.raises(ValueError, match="activations: expected `original_activations"):
        M.measure(p, base, data, method="magnitude", activations=original_activations(base.model, data.x_val[:50]))


def test_a_swapped_activation_is_a_new_original():
    "Replacing a parameter-free module changes the original: its cached Original is not reused (its accuracy is evaluate's)."
    base, data = _tiny()
    o = M.original(base, data); o.reference
    base.model[2] = nn.Sigmoid()
    o2 = M.original(base, data)
    assert o2 is not o and o2.reference == evaluate(base.model, *data.pruning_data)


def test_measurement_bounds_follow_the_networks_as_they_are():
    "After the pruned network is changed in place, the Measurement's bounds are those of a fresh call, not a mix with the old points."
    base, data = _tiny()
    p = prune(base.model, "magnitude", 0.5)
    m = M.measure(p, base, data, method="magnitude")
    assert m.retraining_bounds(gamma_free=False).quantities == m.bounds.quantities   # no options: μ by the measured kind
    with torch.no_grad(): p[5].weight_orig.mul_(3.0)
    got = m.retraining_bounds(method="magnitude", gamma_free=False)
    fresh = retraining_bounds(p, base, data, method="magnitude", gamma_free=False)
    assert got.quantities["L_sparse"] == fresh.quantities["L_sparse"] != m.bounds.quantities["L_sparse"]
