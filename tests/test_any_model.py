"""Any model and any data: the zoo beyond the LeNets (ResNet, BatchNorm CNN), models without a `.name`, eval mode in
every evaluation (Dropout and BatchNorm give repeatable bounds and keep their mode), and baselines of models trained
elsewhere (`Baseline.from_model`). Everything is built here on tiny random data: no MNIST, no trained baseline."""
import copy, math
from pathlib import Path

import pytest
import torch
import torch.fx
from torch import nn
from torch.nn.utils import prune as torch_prune

from netdeviation.bounds import STATUS_KINDS, hessian_norm, loss_and_grad, retraining_bounds, weights
from netdeviation.data import Data
from netdeviation.graph import prunable_layers
from netdeviation.models import MODELS, PAPER_MODELS, bn_cnn, get_model, model_name, n_params, resnet
from netdeviation.retraining import retrain, retraining_table
from netdeviation.training import Baseline, History, TrainConfig, eval_mode, evaluate, fit, get_config

SHAPE = (1, 8, 8)   # tiny images keep every test fast; the zoo takes any size (bn_cnn: divisible by 4)
CFG = TrainConfig("sgd", 0.05, 1, 16, "constant")


def _data(n:int=64, seed:int=0, shape=SHAPE, n_classes:int=10)->Data:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, *shape, generator=g), torch.randint(0, n_classes, (n,), generator=g)
    return Data(x, y, x[:32], y[:32], x[32:], y[32:], Path("."))


def _mlp(dropout:float=0.5)->nn.Module:
    "A network without `.name`, with Dropout."
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 10))


class _BNNet(nn.Module):
    "Conv-BN(affine=False)-ReLU-pool, Linear: no `.name`, a BatchNorm without weight or bias."
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4, affine=False), nn.Linear(4*4*4, 10)
    def forward(self, x): return self.fc(torch.flatten(nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2), 1))


MAKERS = {"resnet8": lambda: resnet(8, input_shape=SHAPE), "bn_cnn": lambda: bn_cnn(input_shape=SHAPE),
          "mlp": _mlp, "bn_affine_false": _BNNet}


def _trained(make, seed:int=0)->nn.Module:
    "A model one short epoch into training (BatchNorm running statistics moved off their initial values)."
    torch.manual_seed(seed); m = make()
    fit(m, _data(), CFG, progress=False, eval_test=False)
    return m


def _pruned(model:nn.Module, amount:float=0.5, seed:int=0)->nn.Module:
    "A copy with `amount` of each prunable layer's weights removed at random (torch.nn.utils.prune directly)."
    m = copy.deepcopy(model); torch.manual_seed(seed)
    for _, layer in prunable_layers(m): torch_prune.random_unstructured(layer, "weight", amount)
    return m


def _same(a:dict, b:dict)->bool:
    "Equal dicts, NaN equal to NaN."
    return a.keys() == b.keys() and all(
        (isinstance(a[k], float) and isinstance(b[k], float) and math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k]
        for k in a)

# ---------------------------------------------------------------- the zoo

@pytest.mark.parametrize("name", sorted(MODELS))
def test_zoo_models_run_and_keep_shapes(name):
    torch.manual_seed(0); m = get_model(name)
    assert model_name(m) == name and m.name == name and m.input_shape == (1, 28, 28)
    assert m(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert n_params(m) > 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_zoo_models_trace_with_fx(name):
    torch.manual_seed(0); m = get_model(name).eval()
    g = torch.fx.symbolic_trace(m)
    x = torch.randn(4, 1, 28, 28)
    assert torch.allclose(g(x), m(x), atol=1e-6)


def test_zoo_other_inputs():
    assert resnet(20, in_channels=3, num_classes=100, input_shape=(3, 32, 32))(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    assert bn_cnn(input_shape=SHAPE)(torch.zeros(2, *SHAPE)).shape == (2, 10)
    assert set(PAPER_MODELS) <= set(MODELS) and {"resnet8", "resnet20", "bn_cnn"} <= set(MODELS)
    with pytest.raises(ValueError, match="depth: must be 6n\\+2"): resnet(9)


def test_model_name_without_name():
    assert model_name(_mlp()) == "Sequential" and model_name(_BNNet()) == "_BNNet"
    m = _mlp(); m.name = None
    assert model_name(m) == "Sequential"

# ---------------------------------------------------------------- training any model on any data

@pytest.mark.parametrize("which", ["resnet8", "bn_cnn", "mlp"])
def test_fit_any_model(which):
    torch.manual_seed(0); m = MAKERS[which]()
    before = copy.deepcopy(m.state_dict())
    hist = fit(m, _data(), CFG, progress=False)
    assert len(hist) == 1 and 0 <= hist[-1]["val_acc"] <= 1 and 0 <= hist[-1]["test_acc"] <= 1
    assert m.training  # fit leaves the model in train mode (documented)
    assert any(not torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_eval_mode_restores_every_submodule():
    m = bn_cnn(input_shape=SHAPE).train(); m.bn1.eval()       # a user's frozen BatchNorm stays frozen
    with eval_mode(m) as inside:
        assert inside is m and not any(x.training for x in m.modules())
    assert m.training and not m.bn1.training and m.drop.training
    with pytest.raises(RuntimeError):
        with eval_mode(m): raise RuntimeError("inside")
    assert m.training and not m.bn1.training


def test_evaluate_is_repeatable_and_keeps_mode():
    torch.manual_seed(0); m = _trained(lambda: bn_cnn(input_shape=SHAPE)).train()
    d = _data(seed=1)
    stats = copy.deepcopy(m.bn1.running_mean)
    a, b = evaluate(m, d.x_val, d.y_val), evaluate(m, d.x_val, d.y_val)
    assert a == b and m.training and torch.equal(m.bn1.running_mean, stats)

# ---------------------------------------------------------------- bounds on Dropout / BatchNorm / residual models

@pytest.mark.parametrize("which", ["mlp", "bn_cnn", "resnet8", "bn_affine_false"])
def test_repeated_bounds_are_identical_and_mode_is_kept(which):
    torch.manual_seed(0); init = MAKERS[which]()
    base = copy.deepcopy(init); fit(base, _data(), CFG, progress=False, eval_test=False)
    pruned = _pruned(base)
    baseline = Baseline.from_model(base, w_initial=init, t_initial=1.0, config=CFG)
    d = _data(seed=2)
    for mode in (True, False):
        base.train(mode); pruned.train(mode)
        stats = copy.deepcopy({k: v for k, v in base.state_dict().items() if "running" in k})
        runs = [retraining_bounds(pruned, baseline, d, method="random", beta_samples=16, beta_iters=3) for _ in range(2)]
        assert _same(runs[0].iterations, runs[1].iterations) and _same(runs[0].quantities, runs[1].quantities)
        assert runs[0].status == runs[1].status
        assert base.training == mode and pruned.training == mode
        assert all(x.training == mode for x in base.modules()) and all(x.training == mode for x in pruned.modules())
        assert all(torch.equal(v, base.state_dict()[k]) for k, v in stats.items())  # running statistics untouched


def test_loss_and_grad_in_eval_mode_matches_an_eval_forward():
    "L(W) of a Dropout/BN model is the eval-mode loss, whatever mode the model is in."
    base = _trained(lambda: bn_cnn(input_shape=SHAPE)).train()
    d = _data(seed=3)
    L, g = loss_and_grad(base, d.x_val, d.y_val)
    ref = evaluate(base, d.x_val, d.y_val)["loss"]
    assert math.isclose(L, ref, rel_tol=1e-5) and base.training
    assert set(g) == {f"{n}.weight" for n, _ in prunable_layers(base)}


def test_batchnorm_affine_false_works_with_torch_func():
    m = _trained(_BNNet)
    d = _data(seed=4)
    L, g = loss_and_grad(_pruned(m), d.x_val, d.y_val, include_bias=True)
    assert math.isfinite(L) and set(g) == {"conv.weight", "conv.bias", "fc.weight", "fc.bias"}
    assert hessian_norm(_pruned(m), d.x_val, d.y_val, iters=3) > 0


def test_batchnorm_masks_are_held_fixed_not_counted_in_w():
    "BN channels masked with the filters they follow: W (and ‖W_s − W*‖²) covers the prunable layers' weights only."
    base = _trained(lambda: bn_cnn(input_shape=SHAPE))
    pruned = copy.deepcopy(base)
    keep = torch.ones(32); keep[:8] = 0                                   # remove the first 8 filters of conv1
    torch_prune.custom_from_mask(pruned.conv1, "weight", keep[:, None, None, None].expand_as(pruned.conv1.weight))
    for p in ("weight", "bias"): torch_prune.custom_from_mask(pruned.bn1, p, keep.clone())
    assert set(weights(pruned)) == {f"{n}.weight" for n, _ in prunable_layers(pruned)}
    b = retraining_bounds(pruned, Baseline.from_model(base, t_initial=1.0, config=CFG), _data(seed=5), method="random",
                          beta_samples=16, beta_iters=3)
    removed = base.conv1.weight.detach().double()[:8].pow(2).sum().item()   # independent: the removed filters' energy
    assert math.isclose(b.quantities["dist_sq"], removed, rel_tol=1e-9)

# ---------------------------------------------------------------- baselines of any model

def test_baseline_repr_without_name():
    m = _mlp()
    b = Baseline(m, copy.deepcopy(m.state_dict()), 1.0, CFG, History(), 0)
    assert repr(b).startswith("Baseline(Sequential, test_acc=None, t_initial=1.0, seed=0")
    assert repr(Baseline.from_model(m, _data(), config=CFG)).startswith("Baseline(Sequential, test_acc=0.")


def test_from_model_measures_test_acc_only_with_data():
    torch.manual_seed(0); m = _mlp()
    d = _data()
    b = Baseline.from_model(m, d)
    assert b.test_acc == evaluate(m, d.x_test, d.y_test)["acc"]
    assert b.config == get_config("default") and b.seed is None and b.w_initial is None and b.t_initial is None
    assert Baseline.from_model(m).test_acc is None
    with pytest.raises(ValueError, match="W_initial are unknown"): Baseline.from_model(m).initial_model()


def test_from_model_checks_its_arguments():
    m = _mlp()
    with pytest.raises(ValueError, match="w_initial: does not match the model's state dict"):
        Baseline.from_model(m, w_initial=bn_cnn(input_shape=SHAPE))
    with pytest.raises(TypeError, match="w_initial: expected a state dict"): Baseline.from_model(m, w_initial=[1])
    with pytest.raises(ValueError, match="t_initial: must be > 0"): Baseline.from_model(m, t_initial=0)
    with pytest.raises(TypeError, match="model: expected a torch nn.Module"): Baseline.from_model("mlp")
    with pytest.raises(TypeError, match="data:"): Baseline.from_model(m, data="mnist")
    init = _mlp()
    b = Baseline.from_model(m, w_initial=init, t_initial=2)
    assert all(torch.equal(b.w_initial[k], v) for k, v in init.state_dict().items()) and b.t_initial == 2.0


@pytest.mark.parametrize("known", [(), ("w_initial",), ("t_initial",), ("w_initial", "t_initial")])
def test_from_model_bounds_say_what_they_need(known):
    torch.manual_seed(0); init = _mlp(); m = copy.deepcopy(init)
    fit(m, _data(), CFG, progress=False, eval_test=False)
    kw = {"w_initial": init, "t_initial": 1.0}
    b = retraining_bounds(_pruned(m, 0.9), Baseline.from_model(m, config=CFG, **{k: kw[k] for k in known}), _data(seed=6),
                          method="random", beta_samples=16, beta_iters=3)
    missing = [k for k in ("W_initial", "t_initial") if k.lower() not in known]
    for k, v in b.iterations.items():
        assert b.status[k].split(":")[0] in STATUS_KINDS
        if math.isnan(v): assert b.status[k].startswith(("inapplicable: ", "undefined: ")), (k, b.status[k])
    needs = [k for k in b.status if b.status[k].startswith("inapplicable: needs W_initial") or
             b.status[k].startswith("inapplicable: needs t_initial")]
    if missing:
        assert needs == ["theorem1_paper", "theorem1_consistent", "relative_lower"]
        assert b.status["theorem1_paper"].startswith(f"inapplicable: needs {' and '.join(missing)}, which the baseline lacks")
        assert all(math.isnan(b.iterations[k]) for k in needs)
    else:
        assert needs == [] and (b.status["theorem1_paper"] == "estimate" or b.status["theorem1_paper"].startswith("undefined: "))
    for k in ("convex_upper", "pl_upper", "smooth_lower", "strong_convexity_lower"):   # these need neither
        assert not b.status[k].startswith("inapplicable: needs W_initial") and not b.status[k].startswith("inapplicable: needs t_initial")
    assert (b.quantities["mu1"] is None) == ("w_initial" not in known)


def test_retraining_table_and_retrain_for_a_model_without_name():
    torch.manual_seed(0); m = _mlp(0.0)
    fit(m, _data(), CFG, progress=False, eval_test=False)
    base = Baseline.from_model(m.eval(), _data(), config=CFG)
    t = retraining_table(base, _data(seed=7), {"random": (0.5,)}, config=CFG, max_epochs=1.0, check_every=2, progress=False)
    assert list(t.model) == ["Sequential"] and t.theorem1_paper_status.iloc[0].startswith("inapplicable: needs W_initial and t_initial")
    r = retrain(_pruned(m), _data(seed=8), base, CFG, max_epochs=1.0, check_every=2, progress=False)
    assert r.steps >= 0 and not m.training
