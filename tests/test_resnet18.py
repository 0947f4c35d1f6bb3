"""A model from outside the zoo on real data: torchvision's `resnet18(num_classes=10)` with a 1-channel stem, trained
briefly on a subset of Fashion-MNIST. Every pruning method prunes it; deviation, Net Deviation, the retraining bounds,
retraining and the sparsity report give finite results; BatchNorm and Dropout models give identical bounds on repeated
calls and keep their mode. Needs the Fashion-MNIST files under `$NETDEVIATION_DATA/FashionMNIST/raw` (skipped otherwise)."""
import copy, math, os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

torchvision = pytest.importorskip("torchvision")

from netdeviation.bounds import STATUS_KINDS, retraining_bounds
from netdeviation.channels import channel_groups
from netdeviation.data import Data, load_fashion_mnist
from netdeviation.deviation import deviation, net_deviation, original_activations
from netdeviation.models import get_model
from netdeviation.pruning import CONNECTION_METHODS, METHODS, get_masks, prune, sparsity_report
from netdeviation.retraining import retrain
from netdeviation.training import Baseline, TrainConfig, evaluate, fit, state_equal

SHAPE = (1, 28, 28)
N_TRAIN, N_VAL, N_TEST = 2000, 256, 512      # subsets: one short epoch, every later computation fast
CFG = TrainConfig("adam", 1e-3, 1, 64, "constant")   # 32 steps over the 2,000 training images
AMOUNT = 0.3
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _raw_dir()->Path|None:
    "The Fashion-MNIST folder, or None when it (or any of its four files, unpacked or gzipped) is absent."
    root = os.environ.get("NETDEVIATION_DATA")
    if not root: return None
    raw = Path(root)/"FashionMNIST"/"raw"
    ok = all((raw/f).exists() or (raw/f"{f}.gz").exists() for f in FILES)
    return raw if ok else None


@pytest.fixture(scope="module")
def data()->Data:
    "Subsets of Fashion-MNIST's seeded splits: 2,000 training, 256 validation (pruning) and 512 test images."
    if _raw_dir() is None:
        pytest.skip("Fashion-MNIST not found: set NETDEVIATION_DATA to a folder holding FashionMNIST/raw "
                    "(train/t10k images and labels); this test never downloads")
    full = load_fashion_mnist()
    return Data(full.x_train[:N_TRAIN], full.y_train[:N_TRAIN], full.x_val[:N_VAL], full.y_val[:N_VAL],
                full.x_test[:N_TEST], full.y_test[:N_TEST], full.root, full.name, full.mean, full.std)


def _resnet18()->nn.Module:
    "torchvision's ResNet-18 for 10 classes with a 1-channel stem (28×28 inputs reach layer4 as 1×1)."
    m = torchvision.models.resnet18(num_classes=10)
    m.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    return m


@pytest.fixture(scope="module")
def trained(data):
    "The ResNet-18 one short epoch into training (eval mode), its initial weights and its `Baseline`."
    torch.manual_seed(0); model = _resnet18()
    init = copy.deepcopy(model.state_dict())
    hist = fit(model, data, CFG, seed=0, progress=False)
    model.eval()
    base = Baseline.from_model(model, data, w_initial=init, t_initial=1.0, config=CFG, seed=0)
    return {"model": model, "init": init, "history": hist, "baseline": base}


@pytest.fixture(scope="module")
def pruned(trained, data):
    "One pruned copy per method at `AMOUNT` (the pruning images trace the network and feed 'clustered')."
    model = trained["model"]
    before = copy.deepcopy(model.state_dict())
    out = {m: prune(model, m, AMOUNT, data=data.x_val, seed=0) for m in METHODS}
    return {"nets": out, "before": before}


@pytest.fixture(scope="module")
def activations(trained, data):
    "The original's activations on the pruning images, shared by every deviation."
    return original_activations(trained["model"], data.x_val)


def _with_state(state:dict)->nn.Module:
    m = _resnet18(); m.load_state_dict(state); return m


def _prunable(model:nn.Module)->dict:
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}

# ---------------------------------------------------------------- training and pruning

def test_resnet18_trains_on_fashion_mnist(trained, data):
    h = trained["history"][-1]
    assert h["step"] == math.ceil(N_TRAIN/CFG.batch_size) and math.isfinite(h["train_loss"])
    assert h["val_acc"] > 0.3 and h["test_acc"] > 0.3          # chance is 0.1; one epoch reaches ~0.65
    assert not state_equal(trained["model"], _with_state(trained["init"]))   # the weights moved
    assert trained["baseline"].test_acc == evaluate(trained["model"], data.x_test, data.y_test)["acc"]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_prunes_resnet18(method, pruned, trained, data):
    model, p = trained["model"], pruned["nets"][method]
    assert p is not model
    with torch.no_grad(): out = p.eval()(data.x_val[:16])
    assert out.shape == (16, 10) and torch.isfinite(out).all()
    masks = get_masks(p)
    assert set(masks) >= set(_prunable(model))               # every Conv2d and the Linear head carry a mask
    zeros = sum(int((m.weight == 0).sum()) for m in _prunable(p).values())
    assert zeros > 0
    assert all(torch.equal(m.weight, m.weight_orig*m.weight_mask) for m in _prunable(p).values())


def test_pruning_leaves_the_original_untouched(pruned, trained):
    model = trained["model"]
    assert model.state_dict().keys() == pruned["before"].keys()
    assert all(torch.equal(v, pruned["before"][k]) for k, v in model.state_dict().items())
    assert not any(hasattr(m, "weight_mask") for m in model.modules()) and not model.training


def test_node_methods_trace_resnet18_from_data_or_groups(trained, pruned, data):
    "A network without `input_shape`: node methods trace it from the pruning images or take precomputed groups."
    model = trained["model"]
    groups = channel_groups(model, torch.zeros(1, *SHAPE))
    via_groups = get_masks(prune(model, "magnitude_node", AMOUNT, groups=groups))
    via_data = get_masks(pruned["nets"]["magnitude_node"])
    assert via_groups.keys() == via_data.keys()
    assert all(torch.equal(via_groups[n][k], via_data[n][k]) for n in via_data for k in via_data[n])
    with pytest.raises(ValueError, match="input_shape"): prune(model, "random_node", AMOUNT)


@pytest.mark.parametrize("method", METHODS)
def test_sparsity_report_is_finite(method, pruned):
    r = sparsity_report(pruned["nets"][method], SHAPE)
    num = r.drop(columns="kind").astype(float)
    assert np.isfinite(num.to_numpy()).all(), num[~np.isfinite(num).all(axis=1)]
    total = r.loc["total"]
    assert 0 < total.pruned < 1 and total.nonzero < total.params
    assert r.loc["fc", "nodes_kept"] == 10                    # the outputs are never pruned
    if method in CONNECTION_METHODS:                          # AMOUNT of each layer's weights (scope 'layer')
        layers = r[r.kind.isin(["Conv2d", "Linear"])]
        assert np.allclose(layers.pruned, AMOUNT, atol=2e-3), layers.pruned
        assert math.isclose(total.pruned, AMOUNT, abs_tol=2e-3)
        assert (r.nodes_kept == r.nodes).all()                # no channel loses every weight at 30%
    else:                                                     # AMOUNT of each channel group's channels
        assert math.isclose(r.loc["conv1", "nodes_kept"], round((1 - AMOUNT)*64), abs_tol=1)
        assert total.nodes_kept < total.nodes

# ---------------------------------------------------------------- deviation and Net Deviation

@pytest.mark.parametrize("method", METHODS)
def test_deviation_is_finite_and_rigorous_bound_holds(method, pruned, trained, data, activations):
    d = deviation(trained["model"], pruned["nets"][method], activations=activations)
    vals = {"lhs": d.lhs, "bound_paper": d.bound_paper, "bound_rigorous": d.bound_rigorous, "y_norm": d.y_norm}
    assert all(math.isfinite(v) for v in vals.values()), vals
    assert d.lhs > 0 and d.n_samples == N_VAL
    assert d.bound_rigorous >= d.lhs*(1 - 1e-6), vals        # an upper bound on the actual deviation
    assert 0 < d.sparsity < 1


@pytest.mark.slow
def test_deviation_without_shared_activations_agrees(pruned, trained, data, activations):
    a = deviation(trained["model"], pruned["nets"]["magnitude"], data.x_val)
    b = deviation(trained["model"], pruned["nets"]["magnitude"], activations=activations)
    assert math.isclose(a.lhs, b.lhs, rel_tol=1e-9) and math.isclose(a.bound_rigorous, b.bound_rigorous, rel_tol=1e-9)


def test_net_deviation_over_amounts(trained, data, activations, pruned):
    model, amounts = trained["model"], (0.1, AMOUNT, 0.5)
    nets = [pruned["nets"]["magnitude"] if a == AMOUNT else prune(model, "magnitude", a) for a in amounts]
    devs = [deviation(model, p, activations=activations) for p in nets]
    for which in ("dev", "dev_rigorous"):
        dev = [getattr(d, which) for d in devs]
        assert np.isfinite(dev).all(), dev
        D = net_deviation(dev)
        assert D.shape == (3,) and np.isfinite(D).all() and (D >= 0).all() and (D <= 1).all()
        assert math.isclose(D.max(), 1.0)                     # divided by the largest magnitude
        raw = net_deviation(dev, sign="raw")
        assert np.allclose(np.abs(raw), D) and (np.abs(raw) <= 1).all()
    assert devs[0].lhs < devs[-1].lhs                         # pruning more of the smallest weights moves the output more

# ---------------------------------------------------------------- retraining bounds: finite or explained, repeatable

def _explained(b)->None:
    "Every bound finite or NaN with its own status saying why; a NaN quantity only beside a status that gives a reason."
    assert set(b.iterations) == set(b.status)
    for k, v in b.iterations.items():
        assert b.status[k].split(":")[0] in STATUS_KINDS, (k, b.status[k])
        assert isinstance(v, float) and not math.isinf(v), (k, v)
        if math.isnan(v): assert b.status[k].startswith(("inapplicable: ", "undefined: ")), (k, b.status[k])
    assert math.isfinite(b.iters_per_epoch) and b.iters_per_epoch > 0
    nums = {k: v for k, v in b.quantities.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert not any(math.isinf(v) for v in nums.values()), nums
    nan = sorted(k for k, v in nums.items() if math.isnan(v))
    texts = [*b.status.values(), *(v for v in b.quantities.values() if isinstance(v, str))]
    reasons = [t for t in texts if ": " in t and not t.startswith("estimate")]   # 'kind: why', e.g. '...: nothing to recover'
    assert not nan or reasons, (nan, b.status)                # no silent NaN


def _same(a:dict, b:dict)->bool:
    "Equal dicts, NaN equal to NaN."
    return a.keys() == b.keys() and all(
        (isinstance(a[k], float) and isinstance(b[k], float) and math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k]
        for k in a)


def _repeated(pruned_net, baseline, data, modes=(True, False), **kw)->list:
    "Two `retraining_bounds` calls in each mode: identical, mode and BatchNorm statistics kept, nothing silent."
    base, out = baseline.model, []
    was = base.training, pruned_net.training
    try:
        for mode in modes:
            base.train(mode); pruned_net.train(mode)
            stats = {k: v.clone() for m in (base, pruned_net) for k, v in m.state_dict().items() if "running" in k}
            runs = [retraining_bounds(pruned_net, baseline, data, **kw) for _ in range(2)]
            pd.testing.assert_frame_equal(runs[0].to_dataframe(), runs[1].to_dataframe())
            assert _same(runs[0].iterations, runs[1].iterations) and _same(runs[0].quantities, runs[1].quantities)
            assert runs[0].status == runs[1].status
            for m in (base, pruned_net): assert all(x.training == mode for x in m.modules())
            after = {k: v for m in (base, pruned_net) for k, v in m.state_dict().items() if "running" in k}
            assert all(torch.equal(after[k], v) for k, v in stats.items())   # running statistics untouched
            _explained(runs[0]); out.append(runs[0])
    finally:
        base.train(was[0]); pruned_net.train(was[1])
    return out


BOUND_KW = dict(method="random", batch_size=256, beta_samples=32, beta_iters=3,   # small: every Hessian product is cheap
                curvature_samples=16, curvature_steps=4)

def test_resnet18_retraining_bounds_repeatable(trained, data):
    "In train mode, where a forward pass would move BatchNorm's statistics if the bounds ran one outside eval mode."
    model = trained["model"]
    p = prune(model, "random", 0.5, seed=1)                   # enough damage that Δ_s > ε: μ and β are computed
    (b,) = _repeated(p, trained["baseline"], data, modes=(True,), **BOUND_KW)
    q = b.quantities
    assert q["delta_s"] > q["eps"] and math.isfinite(q["beta"]) and q["beta"] > 0 and math.isfinite(q["mu"])
    assert math.isfinite(b.iterations["convex_upper"]) and b.iterations["convex_upper"] > 0
    assert not model.training


@pytest.mark.slow
def test_resnet18_retraining_bounds_repeatable_in_eval_mode(trained, data):
    _repeated(prune(trained["model"], "random", 0.5, seed=1), trained["baseline"], data, modes=(False,), **BOUND_KW)


def test_resnet18_retraining_bounds_nothing_to_recover(trained, data, pruned):
    "Magnitude pruning at 30% barely moves the loss: either way every NaN is explained."
    b = retraining_bounds(pruned["nets"]["magnitude"], trained["baseline"], data, **{**BOUND_KW, "method": "magnitude"})
    _explained(b)


def test_dropout_batchnorm_cnn_bounds_repeatable(data):
    torch.manual_seed(0); init = get_model("bn_cnn")
    assert any(isinstance(m, nn.Dropout) for m in init.modules()) and any(isinstance(m, nn.BatchNorm2d) for m in init.modules())
    model = copy.deepcopy(init); fit(model, data, CFG, seed=0, progress=False, eval_test=False)
    baseline = Baseline.from_model(model, w_initial=init, t_initial=1.0, config=CFG, seed=0)
    p = prune(model, "random", 0.5, seed=1)
    _repeated(p, baseline, data, **BOUND_KW)

# ---------------------------------------------------------------- retraining

def test_resnet18_retrain_keeps_masks(trained, data):
    model = trained["model"]
    before = copy.deepcopy(model.state_dict())
    p = prune(model, "random", 0.7, seed=2)
    masks = {n: m.weight_mask.clone() for n, m in _prunable(p).items()}
    orig = {n: m.weight_orig.detach().clone() for n, m in _prunable(p).items()}
    r = retrain(p, data, trained["baseline"], CFG, eps=1e-3, max_epochs=0.1, check_every=1, progress=False)
    max_steps = math.floor(0.1*N_TRAIN/CFG.batch_size)
    assert r.model is p and 0 <= r.steps <= max_steps and r.max_epochs == 0.1
    for res in (r.reference, r.start, r.final):
        assert math.isfinite(res["loss"]) and 0 <= res["acc"] <= 1
    assert np.isfinite(r.checks[["step", "epochs", "loss", "acc"]].to_numpy(dtype=float)).all()
    assert isinstance(r.status, str) and (r.recovered == (r.iterations is not None))
    if r.start["loss"] > r.target["loss"]: assert r.steps > 0  # it trained
    for n, m in _prunable(p).items():
        assert torch.equal(m.weight_mask, masks[n])            # masks intact
        assert (m.weight[masks[n] == 0] == 0).all()            # pruned weights still zero
    if r.steps > 0: assert any(not torch.equal(m.weight_orig, orig[n]) for n, m in _prunable(p).items())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()) and not model.training
