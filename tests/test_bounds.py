"""Bounds' statuses on closed-form inputs, and bad inputs to `netdeviation.bounds` and `netdeviation.retraining`.
Everything here is built in the test (a few random images, untrained LeNets): no MNIST, no trained baseline,
and no value another CPU or thread count could move across a threshold."""
import copy, math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from netdeviation.bounds import (BOUNDS, GAMMA_FREE, STATUS_KINDS, check_pruned, status_kind, gamma_free_bounds, hessian_norm,
                                 loss_and_grad, mu_pl, retraining_bounds)
from netdeviation.data import MNISTData
from netdeviation.models import get_model
from netdeviation.pruning import prune
from netdeviation.retraining import as_paper_table, retrain, retraining_table
from netdeviation.training import Baseline, History, get_config

# ---------------------------------------------------------------- statuses on closed-form inputs
# Δ_s = 1, ε = 0.01, μ = 0.5, β = 2, ‖W_s − W*‖² = 3; η sets ηβ.
# `certified=True`: the constants are stated exact, as on a problem whose μ and β are known (then the statuses say proven)
def _bounds(eta, delta_s=1.0, **kw): return gamma_free_bounds(delta_s, 0.01, eta, 0.5, 2.0, 3.0, certified=True, **kw)

def _no_bare_nan(b):
    for k, v in b.iterations.items():
        kind = b.status[k].split(":")[0]
        assert kind in STATUS_KINDS, (k, b.status[k])
        if math.isnan(v): assert b.status[k].startswith(("inapplicable: ", "undefined: ")), (k, b.status[k])

def test_every_condition_holds():
    b = _bounds(0.1, delta_i=2.3, t_initial=10)   # ηβ = 0.2
    assert b.status == {**dict.fromkeys(GAMMA_FREE, "proven"), "smooth_lower_approx": "estimate"}
    assert not any(math.isnan(v) for v in b.iterations.values())
    assert math.isclose(b.iterations["smooth_lower"], math.log(100)/math.log(1/(1 - 0.4)), rel_tol=1e-12)
    assert list(b.to_dataframe().status) == [b.status[k] for k in GAMMA_FREE]
    _no_bare_nan(b)

def test_two_eta_beta_at_least_one():
    b = _bounds(0.3, delta_i=2.3, t_initial=10)   # ηβ = 0.6: 2ηβ = 1.2
    for k in ("smooth_lower", "smooth_lower_approx", "relative_lower"):
        assert b.status[k] == "inapplicable: needs 2ηβ < 1, got 2ηβ = 1.2"
    assert math.isnan(b.iterations["smooth_lower"])
    assert math.isclose(b.iterations["smooth_lower_approx"], math.log(100)/1.2, rel_tol=1e-12)  # value kept, marked
    assert (b.status["convex_upper"], b.status["pl_upper"], b.status["strong_convexity_lower"]) == ("proven", "proven", "proven")
    _no_bare_nan(b)

def test_eta_beta_at_least_one():
    b = _bounds(0.6, delta_i=2.3, t_initial=10)   # ηβ = 1.2
    assert b.status["convex_upper"] == b.status["pl_upper"] == "inapplicable: needs ηβ ≤ 1, got ηβ = 1.2"
    assert b.status["strong_convexity_lower"] == "inapplicable: needs ηβ < 1, got ηβ = 1.2"
    assert math.isnan(b.iterations["strong_convexity_lower"]) and math.isnan(b.iterations["smooth_lower"])
    assert b.iterations["convex_upper"] == math.ceil(3/(2*0.6*0.01))
    assert not any(s == "proven" for s in b.status.values())
    _no_bare_nan(b)

def test_eta_beta_exactly_one():
    "ηβ = 1: the upper bounds (ηβ ≤ 1) apply, the strong-convexity lower bound (ηβ < 1, a logarithm's domain) does not."
    b = _bounds(0.5)
    assert b.status["convex_upper"] == b.status["pl_upper"] == "proven"
    assert b.status["strong_convexity_lower"] == "inapplicable: needs ηβ < 1, got ηβ = 1"

def test_boundary_is_printed_on_its_side():
    assert _bounds(0.25 - 1e-9).status["smooth_lower"] == "proven"
    s = _bounds(0.25 + 1e-9).status["smooth_lower"]
    assert s.startswith("inapplicable: needs 2ηβ < 1, got 2ηβ = 1.0000000") and float(s.split("= ")[-1]) > 1

def test_nothing_to_recover():
    b = _bounds(0.6, delta_s=0.005)              # Δ_s ≤ ε, even with a step too large: 0 iterations is right
    assert set(b.iterations.values()) == {0.0}
    assert set(b.status.values()) == {"proven: Δ_s = 0.005 ≤ ε = 0.01, nothing to recover"}
    assert gamma_free_bounds(0.01, 0.01, 0.1, math.nan, math.nan, 3.0).status["pl_upper"].startswith("proven: Δ_s = 0.01 ≤ ε")

def test_relative_bound_undefined_says_why():
    assert _bounds(0.1).status["relative_lower"] == "undefined: needs delta_i (Δ_i) and t_initial"
    assert _bounds(0.1, delta_i=2.3).status["relative_lower"] == "undefined: needs delta_i (Δ_i) and t_initial"
    b = _bounds(0.1, delta_i=0.005, t_initial=4)
    assert b.status["relative_lower"] == "undefined: needs Δ_i > ε, got Δ_i = 0.005 ≤ ε = 0.01"
    assert math.isnan(b.iterations["relative_lower"])

def test_step_ok_agrees_with_status():
    for eta in (0.1, 0.2, 0.25, 0.3, 0.5, 0.6):
        df = _bounds(eta).to_dataframe()
        for k, row in df.iterrows():
            if k != "relative_lower": assert row.step_ok == (status_kind(row.status) in ("proven", "estimate")), (eta, k)

def test_paper_table_says_why():
    "A row whose bound applies in no run gives the reason; one where it applies in some averages those and says so."
    import pandas as pd
    row = dict(model="m", kind="connection", amount=0.6, recovered=True, measured=0.5, max_epochs=2.0,
               **{k: 1.0 for k in (*BOUNDS, "theorem1_paper_gamma")})
    why = "inapplicable: needs 2ηβ < 1, got 2ηβ = 1.31"
    t = pd.DataFrame([{**row, "seed": 0, "smooth_lower_status": "ok"},
                      {**row, "seed": 1, "smooth_lower": math.nan, "smooth_lower_status": why}])
    assert as_paper_table(t)["smooth lower"].iloc[0] == "1 (applies in 1/2 runs)"
    assert as_paper_table(t[1:])["smooth lower"].iloc[0] == why
    assert as_paper_table(t)["PL upper"].iloc[0] == "1"   # no status column: a value is taken as it is
    old = t.drop(columns="smooth_lower_status")            # rows stored before statuses existed, mixed with new ones
    assert as_paper_table(pd.concat([old, t[1:]], ignore_index=True))["smooth lower"].iloc[0] == "1 (applies in 1/3 runs)"
    assert as_paper_table(old[1:])["smooth lower"].iloc[0] == "undefined"

# ---------------------------------------------------------------- bad inputs
def _data(n=32, seed=0)->MNISTData:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
    return MNISTData(x, y, x[:16], y[:16], x[:16], y[:16], Path("."))

@pytest.fixture(scope="module")
def setup():
    "An untrained LeNet-300-100 fitted for a few steps to 16 random images (W*), its initialisation (W_initial), pruned."
    torch.manual_seed(0)
    net, d = get_model("lenet_300_100"), _data()
    w_initial = copy.deepcopy(net.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(30): opt.zero_grad(); F.cross_entropy(net(d.x_val), d.y_val).backward(); opt.step()
    base = Baseline(net, w_initial, 4.0, get_config("paper"), History(), 0)
    return base, prune(net, "random", 0.5), d

def _raises(exc, name, f):
    "`f()` raises `exc` whose message starts with the parameter's name."
    with pytest.raises(exc) as e: f()
    assert str(e.value).startswith(f"{name}:") or str(e.value).startswith(f"{name},"), str(e.value)
    return str(e.value)

def test_beta_samples_zero_names_beta_samples(setup):
    base, p, d = setup
    msg = _raises(ValueError, "beta_samples", lambda: retraining_bounds(p, base, d, method="random", beta_samples=0))
    assert "beta:" not in msg and "0" in msg

@pytest.mark.parametrize("kw,name,exc", [(dict(beta_iters=0), "beta_iters", ValueError), (dict(beta_tol=0.0), "beta_tol", ValueError),
                                         (dict(batch_size=0), "batch_size", ValueError), (dict(seed=-1), "seed", ValueError),
                                         (dict(masked="yes"), "masked", ValueError), (dict(beta_samples=2.5), "beta_samples", TypeError),
                                         (dict(eps=math.nan), "eps", ValueError), (dict(mu="hessian"), "mu", ValueError)])
def test_retraining_bounds_parameters(setup, kw, name, exc):
    base, p, d = setup
    _raises(exc, name, lambda: retraining_bounds(p, base, d, **{"method": "random", **kw}))

def test_architecture_mismatch_lists_both(setup):
    base, _, d = setup
    other = prune(get_model("lenet5"), "random", 0.5)
    msg = _raises(ValueError, "pruned, baseline", lambda: retraining_bounds(other, base, d, method="random"))
    assert "differ in architecture" in msg and "lenet5 [conv1" in msg and "lenet_300_100 [fc1" in msg and "get_baseline('lenet5'" in msg
    msg = _raises(ValueError, "pruned_model, original", lambda: retrain(other, d, base, progress=False))
    assert "lenet5 [conv1" in msg and "lenet_300_100 [fc1" in msg

@pytest.mark.parametrize("device", ["tpu", "cuda:99", "cpu:x"])
def test_device_is_checked(setup, device):
    base, p, d = setup
    if device == "cuda:99" and torch.cuda.device_count() > 99: pytest.skip("a machine with 100 GPUs")
    _raises(ValueError, "device", lambda: retraining_bounds(p, base, d, method="random", device=device))
    _raises(ValueError, "device", lambda: retrain(p, d, base, device=device, progress=False))
    _raises(ValueError, "device", lambda: retraining_table(base, d, {"random": (0.5,)}, device=device, progress=False))
    _raises(ValueError, "device", lambda: hessian_norm(p, d.x_val, d.y_val, device=device))

def test_data_must_be_mnistdata(setup):
    base, p, d = setup
    _raises(TypeError, "data", lambda: retraining_bounds(p, base, (d.x_val, d.y_val), method="random"))
    _raises(TypeError, "data", lambda: retrain(p, d.x_train, base, progress=False))

def test_hessian_and_gradient_parameters(setup):
    _, p, d = setup
    _raises(ValueError, "iters", lambda: hessian_norm(p, d.x_val, d.y_val, iters=0))
    _raises(ValueError, "y", lambda: hessian_norm(p, d.x_val, d.y_val[:3]))
    _raises(ValueError, "x", lambda: loss_and_grad(p, d.x_val.long(), d.y_val))
    _raises(ValueError, "batch_size", lambda: loss_and_grad(p, d.x_val, d.y_val, batch_size=0))
    _raises(ValueError, "grad_sq", lambda: mu_pl(-1.0, 1.0, 0.5))

def test_gamma_free_parameters():
    _raises(ValueError, "delta_s", lambda: gamma_free_bounds(math.nan, 0.01, 0.1, 0.5, 2.0, 3.0))
    _raises(ValueError, "dist_sq", lambda: gamma_free_bounds(1.0, 0.01, 0.1, 0.5, 2.0, -3.0))
    _raises(ValueError, "beta", lambda: gamma_free_bounds(1.0, 0.01, 0.1, 0.5, 0.0, 3.0))
    _raises(ValueError, "t_initial", lambda: gamma_free_bounds(1.0, 0.01, 0.1, 0.5, 2.0, 3.0, delta_i=2.0, t_initial=-1))

def test_check_pruned_refuses_unpruned(setup):
    base, p, _ = setup
    _raises(ValueError, "pruned", lambda: check_pruned(base.model))
    _raises(TypeError, "pruned", lambda: check_pruned("lenet_300_100"))
    assert check_pruned(p, reference=base.model) is p

@pytest.mark.parametrize("kw,name,exc", [(dict(amounts={"prune_all": (0.5,)}), "amounts", ValueError),
                                         (dict(amounts={"random": (1.0,)}), "amounts['random']", ValueError),
                                         (dict(amounts=[0.5]), "amounts", TypeError), (dict(seeds=0), "seeds", TypeError),
                                         (dict(seeds=(0, -1)), "seeds", ValueError), (dict(check_every=0), "check_every", ValueError),
                                         (dict(eps=None), "eps, delta", ValueError), (dict(delta=2.0), "delta", ValueError)])
def test_retraining_table_parameters(setup, kw, name, exc):
    base, _, d = setup
    _raises(exc, name, lambda: retraining_table(base, d, **{"progress": False, **kw}))

def test_retrain_parameters(setup):
    base, p, d = setup
    _raises(ValueError, "seed", lambda: retrain(p, d, base, seed=-2, progress=False))
    _raises(ValueError, "max_epochs", lambda: retrain(p, d, base, max_epochs=math.inf, progress=False))
    _raises(ValueError, "progress", lambda: retrain(p, d, base, progress="no"))

# ---------------------------------------------------------------- end to end on a tiny network: statuses as properties
def test_retraining_bounds_statuses_are_consistent(setup):
    base, p, d = setup
    b = retraining_bounds(p, base, d, method="random", batch_size=16, beta_iters=3)
    q = b.quantities
    assert b.status["theorem1_paper"] == b.status["theorem1_consistent"] == "estimate"
    _no_bare_nan(b)
    if q["delta_s"] <= q["eps"]: assert all(b.status[k].startswith("proven: Δ_s") for k in GAMMA_FREE)
    else:
        eb = q["eta"]*q["beta"]
        # on a network nothing is certified: a bound is an estimate, or inapplicable (step size, negative curvature)
        assert not any(status_kind(b.status[k]) == "proven" for k in GAMMA_FREE)
        if 2*eb >= 1: assert b.status["smooth_lower"].startswith("inapplicable: ")
        if eb >= 1: assert b.status["strong_convexity_lower"].startswith("inapplicable: ")


def test_gamma_free_false_keeps_theorem1_and_says_what_it_skipped(setup):
    "gamma_free=False skips β and λ_min: Theorem 1 is unchanged, every γ-free row is NaN with an 'undefined' status."
    base, p, d = setup
    full = retraining_bounds(p, base, d, method="random", eps=1e-6)
    cheap = retraining_bounds(p, base, d, method="random", eps=1e-6, gamma_free=False)
    for k in ("theorem1_paper", "theorem1_consistent"):
        assert cheap.iterations[k] == full.iterations[k] and cheap.status[k] == full.status[k]
    for k in BOUNDS:
        if k.startswith("theorem1"): continue
        assert math.isnan(cheap.iterations[k]) and cheap.status[k].startswith("undefined: not computed"), (k, cheap.status[k])
    _raises(ValueError, "gamma_free", lambda: retraining_bounds(p, base, d, method="random", gamma_free="no"))


def test_theorem1_overflow_is_not_blamed_on_mu():
    "Finite inputs whose product overflows: the status says so, instead of asking for finite μ it already has."
    import math
    from netdeviation.bounds import _theorem1_status, theorem1
    v = theorem1(1, 1e300, 1e-10, 1, 1, 4)
    assert math.isinf(v) and _theorem1_status(v, 1e300, 1e-10).startswith("undefined: the product overflows")
    assert _theorem1_status(math.inf, math.inf, 0.5).startswith("undefined: needs finite μ1 and μ2")
