"""Recovery curves (nbs/06_retraining.ipynb): the geometric check schedule, `retrain(schedule=, stop=)`, the curve a
run records and `RetrainResult.epochs_to`. Tiny random data and a tiny MLP on the CPU with one thread: no MNIST, no
trained baseline, and every comparison is with an independent scan or with a second run of the same seed."""
import copy, math
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn
from torch.nn.utils import prune as torch_prune

from netdeviation.data import Data
from netdeviation.graph import prunable_layers
from netdeviation.pruning import get_masks
from netdeviation.retraining import (RecoveryTime, RetrainResult, check_steps, recovery_curve, retrain,
                                     retraining_table)
from netdeviation.training import Baseline, TrainConfig, fit

torch.set_num_threads(1)   # one thread: the same seed gives a bit-identical trajectory
CFG = TrainConfig("sgd", 0.05, 2, 16, "constant")
N_TRAIN, BATCH, CAP = 256, 16, 4.0   # 16 steps an epoch, 64 steps to the cap
MAX_STEPS = math.floor(CAP*N_TRAIN/BATCH)


# ---------------------------------------------------------------- the schedule

def _count_bound(max_steps:int, rel:float)->float:
    "Checks below 2/rel are at most 2/rel + 1; above it each is >= (1 + rel/2) × the previous; and the cap."
    return 2/rel + 3 + max(0.0, math.log(max_steps*rel/2)/math.log(1 + rel/2)) if max_steps else 0

@settings(max_examples=300, deadline=None)
@given(max_steps=st.integers(0, 10**6), rel=st.floats(0.01, 2.0), first=st.integers(1, 50), h=st.floats(0, 1))
def test_check_steps_properties(max_steps, rel, first, h):
    s = check_steps(max_steps, rel, first)
    if max_steps == 0: assert s == (); return
    assert all(isinstance(v, int) for v in s)
    assert all(a < b for a, b in zip(s, s[1:]))                         # strictly increasing, hence unique
    assert s[0] == min(first, max_steps) and s[-1] == max_steps         # from `first`, ending exactly at the cap
    for a, b in zip(s, s[1:]):
        if a*rel >= 1: assert b <= a*(1 + rel)*(1 + 1e-12)                # geometric: ratio <= 1 + rel
        else: assert b == a + 1                                         # consecutive while a step is finer than rel
    # relative resolution: any hitting step in [first, cap] is caught by a check at most (1 + rel) × later
    step = s[0] + int(h*(max_steps - s[0]))
    caught = next(v for v in s if v >= step)
    assert caught <= max(step, step*(1 + rel)*(1 + 1e-12))
    assert len(s) <= min(max_steps, _count_bound(max_steps, rel))       # logarithmic in the cap

def test_check_steps_examples():
    assert check_steps(1) == (1,) and check_steps(12) == tuple(range(1, 13))
    assert check_steps(1000, 0.5, first=7) == (7, 10, 15, 22, 33, 49, 73, 109, 163, 244, 366, 549, 823, 1000)
    assert len(check_steps(21484)) < 100 < len(range(20, 21484, 20))     # 50 MNIST epochs: < 100 checks, not 1075
    with pytest.raises(ValueError, match="rel: must be > 0"): check_steps(10, rel=0)
    with pytest.raises(ValueError, match="first: must be an integer >= 1"): check_steps(10, first=0)
    with pytest.raises(TypeError, match="max_steps: must be an integer"): check_steps(10.0)


# ---------------------------------------------------------------- tiny networks and data

def _data(seed:int=0)->Data:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_TRAIN + 128, 1, 8, 8, generator=g)
    y = (x.flatten(1)[:, :10].argmax(1) + (torch.rand(len(x), generator=g) < 0.2)) % 10   # learnable, a little noisy
    return Data(x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:N_TRAIN + 64], y[N_TRAIN:N_TRAIN + 64],
                x[N_TRAIN + 64:], y[N_TRAIN + 64:], Path("."))

@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    data = _data()
    fit(m, data, CFG, progress=False, eval_test=False)
    base = Baseline.from_model(m.eval(), data, config=CFG)
    pruned = copy.deepcopy(m); torch.manual_seed(1)
    with torch.no_grad():   # `layer.weight` a plain tensor, so the pruned network deep-copies
        for _, layer in prunable_layers(pruned): torch_prune.random_unstructured(layer, "weight", 0.7)
    return data, base, pruned

def _run(setup, **kw)->RetrainResult:
    data, base, pruned = setup
    return retrain(copy.deepcopy(pruned), data, base, CFG, **{"max_epochs": CAP, "progress": False, **kw})

@pytest.fixture(scope="module")
def curve(setup)->RetrainResult:
    return _run(setup, schedule="geometric", stop="cap")

def _scan(c:pd.DataFrame, loss=None, acc=None, both=False):
    "(first step meeting the rule, the step before it) by a plain loop; (None, last step) when none does."
    rows = c.to_dict("records")
    for k, r in enumerate(rows):
        tests = [*([r["loss"] <= loss] if loss is not None else []), *([r["acc"] >= acc] if acc is not None else [])]
        if (all if both else any)(tests): return r["step"], rows[max(k - 1, 0)]["step"]
    return None, rows[-1]["step"]


# ---------------------------------------------------------------- the curve and epochs_to

def test_cap_records_the_whole_curve(curve):
    c = curve.curve
    assert c is curve.checks and list(c.columns) == ["step", "epochs", "loss", "acc"]
    assert c.step.tolist() == [0, *check_steps(MAX_STEPS, 0.1)] and curve.steps == MAX_STEPS
    assert c.epochs.tolist() == [s*BATCH/N_TRAIN for s in c.step]
    assert curve.final == c.iloc[-1].to_dict() and curve.start == c.iloc[0].to_dict()
    assert (curve.schedule, curve.stop, curve.rel) == ("geometric", "cap", 0.1)
    assert "spaced geometrically" in repr(curve) and "trained to the cap" in repr(curve)

def test_fixed_schedule_to_the_cap(setup):
    r = _run(setup, stop="cap", check_every=10)    # trains to the cap, checking every 10 steps and at the cap
    assert r.steps == MAX_STEPS and r.epochs_to() == _run(setup, check_every=10).epochs_to()
    assert r.checks.step.tolist() == [0, 10, 20, 30, 40, 50, 60, 64]
    assert math.isclose(r.resolution, 10*BATCH/N_TRAIN) and "checked every" in repr(r)

def test_epochs_to_is_a_scan_of_the_curve(curve):
    c, ref = curve.curve, curve.reference
    for q in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0):   # tolerances spread over the range the curve spans
        eps = max(0.0, c.loss.quantile(q) - ref["loss"])
        delta = min(1.0, max(0.0, ref["acc"] - c.acc.quantile(q)))
        for kw, want in ((dict(eps=eps), _scan(c, ref["loss"] + eps)), (dict(delta=delta), _scan(c, acc=ref["acc"] - delta)),
                         (dict(eps=eps, delta=delta), _scan(c, ref["loss"] + eps, ref["acc"] - delta)),
                         (dict(eps=eps, delta=delta, combine="and"), _scan(c, ref["loss"] + eps, ref["acc"] - delta, both=True))):
            got = curve.epochs_to(**kw)
            assert isinstance(got, RecoveryTime) and (got.iterations, got.lower_iterations) == want, (kw, got, want)
            assert got.epochs == (None if got.iterations is None else got.iterations*BATCH/N_TRAIN)
            assert got.lower_epochs == got.lower_iterations*BATCH/N_TRAIN
    assert tuple(curve.epochs_to())[:2] == (curve.iterations, curve.epochs)   # no tolerance: the run's own rule

@settings(max_examples=100, deadline=None)
@given(losses=st.lists(st.floats(0, 5), min_size=1, max_size=30), accs=st.data(), eps=st.floats(0, 3), delta=st.floats(0, 1))
def test_epochs_to_on_any_curve(curve, losses, accs, eps, delta):
    acc = accs.draw(st.lists(st.floats(0, 1), min_size=len(losses), max_size=len(losses)))
    steps = [0, *check_steps(10**4, 0.1)][:len(losses)]
    c = pd.DataFrame({"step": steps, "epochs": [s/7 for s in steps], "loss": losses, "acc": acc})
    r = replace(curve, checks=c, reference={"loss": 1.0, "acc": 0.5})
    for kw, want in ((dict(eps=eps), _scan(c, 1.0 + eps)), (dict(delta=delta), _scan(c, acc=0.5 - delta)),
                     (dict(eps=eps, delta=delta, combine="and"), _scan(c, 1.0 + eps, 0.5 - delta, both=True))):
        got = r.epochs_to(**kw)
        assert (got.iterations, got.lower_iterations) == want
        if got.iterations == 0: assert got.status.startswith("needs no retraining") and got.lower_iterations == 0
        elif got.recovered: assert got.lower_iterations < got.iterations and got.status.startswith("recovered within")
        else: assert got.epochs is None and got.status.startswith("not recovered by the last check")

def test_epochs_to_bad_input(curve):
    with pytest.raises(ValueError, match="eps: must be >= 0"): curve.epochs_to(eps=-1)
    with pytest.raises(ValueError, match="delta: must be >= 0 and <= 1"): curve.epochs_to(delta=1.5)
    with pytest.raises(ValueError, match=r"combine: expected one of \['or', 'and'\]"): curve.epochs_to(eps=0.1, combine="xor")


# ---------------------------------------------------------------- stop at the target = the full curve, read

def test_same_seed_same_curve(setup, curve):
    again = _run(setup, schedule="geometric", stop="cap")
    pd.testing.assert_frame_equal(again.curve, curve.curve, check_exact=True)
    assert all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(), curve.model.state_dict().values()))

@pytest.mark.parametrize("schedule", ["geometric", "fixed"])
@pytest.mark.parametrize("q", [0.2, 0.5, 0.8])
def test_stop_at_target_agrees_with_the_full_curve(setup, curve, schedule, q):
    full = curve if schedule == "geometric" else _run(setup, stop="cap", check_every=5)
    c = full.curve.iloc[1:]
    eps = max(c.loss.quantile(q) - full.reference["loss"], 1e-9)    # a tolerance first met mid-curve
    want = full.epochs_to(eps=eps)
    early = _run(setup, eps=eps, schedule=schedule, check_every=5)
    assert (early.recovered, early.iterations, early.steps) == (True, want.iterations, want.iterations)
    pd.testing.assert_frame_equal(early.checks, full.curve.iloc[:len(early.checks)], check_exact=True)
    assert early.epochs_to() == want and full.epochs_to(eps=eps) == early.epochs_to(eps=eps)
    if schedule == "geometric": assert math.isclose(early.resolution, want.epochs - want.lower_epochs)

def test_start_meeting_the_rule_needs_no_retraining(setup):
    at_once = _run(setup, eps=None, delta=1.0, schedule="geometric")   # acc >= acc* − 1 holds at the start
    assert (at_once.recovered, at_once.iterations, at_once.steps, len(at_once.checks), at_once.resolution) == (True, 0, 0, 1, 0.0)
    assert at_once.epochs_to() == RecoveryTime(0, 0.0, 0, 0.0) and at_once.epochs_to().status.startswith("needs no retraining")
    full = _run(setup, eps=None, delta=1.0, schedule="geometric", stop="cap")   # ... and with stop='cap' it trains on
    assert (full.iterations, full.steps, len(full.checks)) == (0, MAX_STEPS, 1 + len(check_steps(MAX_STEPS)))

def test_masks_stay_intact(setup, curve):
    _, _, pruned = setup
    before = get_masks(pruned)
    for n, layer in prunable_layers(curve.model):
        m = before[n]["weight"]
        assert torch.equal(get_masks(curve.model)[n]["weight"], m)
        assert torch.equal(layer.weight_orig[m == 0], dict(prunable_layers(pruned))[n].weight_orig[m == 0])
        assert (layer.weight_orig*layer.weight_mask)[m == 0].abs().max() == 0 and not torch.equal(layer.weight_orig, dict(prunable_layers(pruned))[n].weight_orig)


# ---------------------------------------------------------------- the API around it

def test_recovery_curve_is_retrain_geometric_to_the_cap(setup, curve):
    data, base, pruned = setup
    r = recovery_curve(copy.deepcopy(pruned), data, base, CFG, max_epochs=CAP, progress=False)
    pd.testing.assert_frame_equal(r.curve, curve.curve, check_exact=True)
    assert (r.schedule, r.stop, r.iterations) == ("geometric", "cap", curve.iterations)

def test_defaults_unchanged_and_positional_call(setup):
    data, base, pruned = setup   # retraining_table's positional call; the defaults: fixed every 20 steps, stop at target
    r = retrain(copy.deepcopy(pruned), data, base, CFG, 0.01, None, CAP, 20, 0, "cpu", False)
    assert (r.schedule, r.stop, r.rel) == ("fixed", "target", None)
    assert set(r.checks.step[1:]) <= {*range(20, MAX_STEPS + 1, 20), MAX_STEPS}
    assert math.isclose(r.resolution, 20*BATCH/N_TRAIN)

def test_bad_schedule_stop_rel(setup):
    for kw, msg in ((dict(schedule="log"), r"schedule: expected one of \['fixed', 'geometric'\]"),
                    (dict(stop="never"), r"stop: expected one of \['target', 'cap'\]"), (dict(rel=0), "rel: must be > 0")):
        with pytest.raises(ValueError, match=msg): _run(setup, **kw)

def test_retraining_table_geometric_to_the_cap(setup):
    data, base, _ = setup
    t = retraining_table(base, data, {"random": (0.5,)}, config=CFG, max_epochs=1.0, schedule="geometric", stop="cap", progress=False)
    row = t.iloc[0]
    assert row.n_checks == 1 + len(check_steps(16))
    if row.recovered and row.measured > 0: assert row.measured_lower < row.measured <= max(row.measured_lower*1.1, row.measured_lower + 1/16) + 1e-12
    f = retraining_table(base, data, {"random": (0.5,)}, config=CFG, max_epochs=1.0, check_every=4, progress=False)
    assert {"measured_lower", "n_checks"} <= set(f.columns) and f.n_checks.iloc[0] <= 1 + 4

def test_a_rule_never_met(setup):
    data, base, pruned = setup   # the original memorises the validation split: a 4-epoch retraining cannot match it
    torch.manual_seed(0); m = copy.deepcopy(base.model)
    fit(m, Data(data.x_val, data.y_val, data.x_val, data.y_val, data.x_test, data.y_test, Path(".")), TrainConfig("adam", 0.01, 300, 64, "constant"), progress=False, eval_test=False)
    r = retrain(copy.deepcopy(pruned), data, m.eval(), CFG, eps=1e-3, max_epochs=CAP, schedule="geometric", progress=False)
    if r.recovered: pytest.skip("the retrained network matched a memorised validation split")
    assert (r.iterations, r.epochs, r.steps) == (None, None, MAX_STEPS) and "not recovered within 4 epochs" in r.status
    t = r.epochs_to()
    assert (t.iterations, t.lower_iterations) == (None, MAX_STEPS) and t.status.startswith("not recovered by the last check")
    assert r.epochs_to(eps=10.0).iterations == 0   # a loose tolerance read off the same curve
