"""The retraining advisor (nbs/06b_advisor.ipynb) on a SYNTHETIC corpus whose truth is known: iterations are a
known function of acc_gap/δ and the recipe's lr times log-normal noise, censored above the cap, 'none' when the start
already meets the rule. Coverage, accuracy and AUC are measured on a large fresh draw of the same law; `_conformal_q`
against brute force; `advise` end to end on a tiny MNIST original (independent of the shipped corpus file)."""
import copy, math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

import netdeviation.advisor as advisor_mod
from netdeviation.advisor import (LEVELS, RULES, Advice, Advisor, advise, fit_advisor, predict, training_rows, validate)
from netdeviation.corpus import FEATURES, TOLERANCES, recovery_columns

torch.set_num_threads(1)

CAP, BATCH, IPE = 3000.0, 100, 80.0   # synthetic corpus: cap in iterations, its batch size, iterations per epoch
SIGMA = 0.15                          # log-normal noise of the iterations

def truth(gap_over_tol, log_lr_ratio, loss_ratio_recal):
    "The synthetic law's median iterations: 20·(gap/δ)^0.7 · 10^(−0.5·log lr ratio), ×1000 (never within the cap) when loss_ratio_recal > 0.5."
    gap_over_tol, log_lr_ratio, loss_ratio_recal = map(np.asarray, (gap_over_tol, log_lr_ratio, loss_ratio_recal))
    return 20*gap_over_tol**0.7*10**(-0.5*log_lr_ratio)*np.where(loss_ratio_recal > 0.5, 1000.0, 1.0)

def synth(n:int, seed:int, sigma:float=SIGMA, archs=("a", "b", "c"))->pd.DataFrame:
    "`n` synthetic corpus runs with every column `training_rows`, `fit_advisor`, `predict` and `validate` read."
    g = np.random.default_rng(seed)
    d = pd.DataFrame({f: g.normal(size=n) for f in FEATURES})
    d["acc_gap"] = g.uniform(0, 0.5, n); d["acc_gap_recal"] = d.acc_gap*g.uniform(0.5, 1, n)
    d["ref_acc"] = g.uniform(0.9, 0.99, n); d["start_acc"] = d.ref_acc - d.acc_gap
    d["node"] = g.integers(0, 2, n); d["log_lr_ratio"] = g.choice([0.0, -1.0], n)
    d["cap_iters"], d["batch_size"], d["t_initial"], d["iters_per_epoch"] = CAP, BATCH, 4.0, IPE
    d["arch"], d["dataset"] = g.choice(archs, n), g.choice(["m", "f"], n)
    for t in TOLERANCES:
        it = truth(d.acc_gap/t, d.log_lr_ratio, d.loss_ratio_recal)*np.exp(sigma*g.normal(size=n))
        none = (d.start_acc >= d.ref_acc - t).to_numpy(); cens = ~none & (it > CAP)
        d[f"status_{t:g}"] = np.where(none, "none", np.where(cens, "censored", "recovered"))
        d[f"iters_{t:g}"] = np.where(none, 0.0, np.where(cens, np.nan, np.ceil(it)))
        d[f"lower_{t:g}"] = np.where(none, 0.0, np.where(cens, CAP, np.floor(np.ceil(it)/1.1)))
    return d


@pytest.fixture(scope="module")
def corpus()->pd.DataFrame: return synth(200, seed=0)

@pytest.fixture(scope="module")
def fitted(corpus)->Advisor: return fit_advisor(corpus)

@pytest.fixture(scope="module")
def fresh(fitted)->tuple[pd.DataFrame, pd.DataFrame]:
    "A large fresh draw of the same law, expanded per tolerance, and the advisor's predictions for it."
    rows = training_rows(synth(2500, seed=1))
    return rows, predict(fitted, rows)


# ---------------------------------------------------------------- the conformal quantile

def _brute_q(scores, level)->float:
    "The smallest s with at least ⌈(n+1)·level⌉ scores <= s (exact rational ceiling), by trying every candidate."
    k = math.ceil((len(scores) + 1)*Fraction(str(level)))
    return min(s for s in scores if sum(1 for v in scores if v <= s) >= k)

def test_conformal_q_brute_force():
    g = np.random.default_rng(0)
    for level in (0.5, 0.8, 0.9, 0.95):
        for n in range(1, 80):
            if math.ceil((n + 1)*Fraction(str(level))) > n: continue   # no score qualifies: +∞ (below)
            for draw in (g.normal(size=n), g.integers(-3, 4, n).astype(float)):  # continuous, and with ties
                assert advisor_mod._conformal_q(draw, level) == _brute_q(list(draw), level), (level, n)
    assert advisor_mod._conformal_q(np.array([]), 0.8) == math.inf
    # too few scores for the level (n = 5 at 95%: ⌈6·0.95⌉ = 6 > 5): no finite score qualifies, the interval is unbounded
    assert advisor_mod._conformal_q(np.array([3.0, -1.0, 2.0, 0.5, 1.0]), 0.95) == math.inf


# ---------------------------------------------------------------- training_rows

def test_training_rows_one_row_per_tolerance():
    runs = synth(7, seed=3)
    rows = training_rows(runs)
    assert len(rows) == 7*len(TOLERANCES)
    for i in range(7):
        for t in TOLERANCES:
            r = rows[(rows.group == i) & (rows.tol == t)]
            assert len(r) == 1; r, src = r.iloc[0], runs.iloc[i]
            assert r.gap_over_tol == pytest.approx(src.acc_gap/t, rel=1e-12)
            assert r.recal_gap_over_tol == pytest.approx(src.acc_gap_recal/t, rel=1e-12)
            assert r.status == src[f"status_{t:g}"] and r.lower == src[f"lower_{t:g}"]
            assert (math.isnan(r.iters) and math.isnan(src[f"iters_{t:g}"])) or r.iters == src[f"iters_{t:g}"]
            assert all(r[f] == src[f] for f in FEATURES)
    sub = training_rows(runs, tolerances=(0.02,))
    assert len(sub) == 7 and set(sub.tol) == {0.02} and list(sub.status) == list(runs["status_0.02"])

def test_training_rows_names_missing_columns():
    with pytest.raises(ValueError, match=r"runs:.*log_lr_ratio"): training_rows(synth(5, 0).drop(columns=["log_lr_ratio"]))
    with pytest.raises(ValueError, match="runs"): training_rows([1, 2])


# ---------------------------------------------------------------- the fitted advisor on the synthetic law

def test_interval_coverage_near_nominal(fresh):
    rows, pred = fresh
    rec = (rows.status == "recovered").to_numpy()
    assert rec.sum() > 3000
    y = rows.iters.to_numpy()[rec]
    for l in LEVELS:
        lo, hi = pred[f"lo{l:g}"].to_numpy()[rec], pred[f"hi{l:g}"].to_numpy()[rec]
        cover = ((lo <= y) & (y <= hi)).mean()
        assert abs(cover - l) <= 0.08, (l, cover)

def test_intervals_are_nested(fresh):
    rows, pred = fresh
    assert (pred["lo0.95"] <= pred["lo0.8"]).all() and (pred["hi0.8"] <= pred["hi0.95"]).all()
    assert (pred["lo0.8"] <= pred["hi0.8"]).all()
    assert ((pred.iters >= pred["lo0.95"]) & (pred.iters <= pred["hi0.95"])).all()

def test_median_within_2x_of_truth(fresh):
    rows, pred = fresh
    rec = (rows.status == "recovered").to_numpy()
    t = truth(rows.gap_over_tol, rows.log_lr_ratio, rows.loss_ratio_recal)[rec]
    ratio = pred.iters.to_numpy()[rec]/t
    assert ((ratio >= 0.5) & (ratio <= 2)).mean() >= 0.9

def test_none_exactly_when_start_meets_the_rule(fresh):
    rows, pred = fresh
    none = (rows.acc_gap <= rows.tol).to_numpy()
    assert 0 < none.sum() < len(rows)
    assert ((pred.status == "none").to_numpy() == none).all()
    assert (pred.iters[none] == 0).all() and (pred.p_recover[none] == 1).all()
    assert (pred[~none].iters >= 1).all()

def test_none_on_the_boundary_agrees_with_recovery_columns(fitted):
    "acc(W_s) = acc* − δ in decimals (0.929 = 0.934 − 0.005): the curve reads 'none', and so must the advisor."
    from netdeviation.retraining import RetrainResult
    from netdeviation.training import TrainConfig
    checks = pd.DataFrame({"step": [0], "epochs": [0.0], "loss": [0.3], "acc": [0.929]})
    r = RetrainResult(True, 0, 0.0, 0, 4.0, 0.0, {"loss": 0.2, "acc": 0.934}, {"loss": None, "acc": 0.934 - 0.005},
                      checks.iloc[0].to_dict(), checks.iloc[0].to_dict(), checks, TrainConfig("adam", 0.01, 4, 128, "constant"),
                      torch.nn.Linear(2, 2), "geometric", "target", 0.1)
    assert recovery_columns(r, (0.005,))["status_0.005"] == "none"
    row = synth(1, 0).assign(ref_acc=0.934, start_acc=0.929, acc_gap=0.934 - 0.929, acc_gap_recal=0.934 - 0.929)
    assert predict(fitted, training_rows(row, (0.005,))).status.iloc[0] == "none"

def test_p_recover_ranks_deterministic_censoring(fresh):
    rows, pred = fresh
    todo = (rows.status != "none").to_numpy()
    lab = (rows.status == "recovered").to_numpy()[todo]
    assert 0.1 < lab.mean() < 0.9
    assert roc_auc_score(lab, pred.p_recover.to_numpy()[todo]) > 0.8
    assert ((pred.p_recover >= 0) & (pred.p_recover <= 1)).all()

def test_fit_advisor_records_the_corpus(fitted, corpus):
    assert fitted.n_runs == len(corpus) and fitted.cap_iters == CAP and fitted.batch_size == BATCH
    assert set(fitted.corrections) == set(LEVELS) and all(math.isfinite(c) for c in fitted.corrections.values())
    assert "200 runs" in repr(fitted)


# ---------------------------------------------------------------- validate

def test_validate_scores_every_rule_and_group():
    runs = synth(120, seed=5, archs=("a", "b"))
    v = validate(runs, by="arch")
    assert set(zip(v.held_out, v.rule)) == {(g, r) for g in ("a", "b", "all") for r in RULES} and len(v) == 3*len(RULES)
    assert v.within_2x.between(0, 1).all()
    for c in ("coverage0.8", "coverage0.95", "auc"): assert (v[c].isna() | v[c].between(0, 1)).all(), c
    n = training_rows(runs).groupby("arch").size()
    assert (v[v.held_out == "a"].rows == n["a"]).all() and (v[v.held_out == "all"].rows == n.sum()).all()
    a = v[v.held_out == "all"].set_index("rule")
    assert a.within_2x["advisor"] > max(a.within_2x["original length"], a.within_2x["10% of original"])
    with pytest.raises(ValueError, match="by"): validate(runs, by="method")


# ---------------------------------------------------------------- Advice

def test_advice_repr_and_table_recovers():
    a = Advice("recovers", 200.0, 2.0, (150.0, 300.0), (100.0, 400.0), 0.9, 4.0, 4.0, 0.01, "paper", 100.0, {}, "fitted")
    s = repr(a)
    for want in ("recovers", "P = 0.90 within 4 epochs", "predicted 2 epochs (200 iterations)", "δ = 0.01",
                 "80% interval 1.5–3 epochs", "95% interval 1–4", "recommended cap 4 epochs", "delta=0.01", "max_epochs=4",
                 "config='paper'", "advisor fitted"):
        assert want in s, want
    df = a.to_dataframe()
    want = {"predicted": (200, 2), "80% interval low": (150, 1.5), "80% interval high": (300, 3), "95% interval low": (100, 1),
            "95% interval high": (400, 4), "recommended cap": (400, 4), "cap asked about": (400, 4), "P(recover within cap)": (0.9, 0.9)}
    assert list(df.index) == list(want) and list(df.columns) == ["iterations", "epochs"]
    for k, (it, ep) in want.items(): assert df.loc[k, "iterations"] == pytest.approx(it) and df.loc[k, "epochs"] == pytest.approx(ep)

def test_advice_repr_and_table_none():
    a = Advice("none", 0.0, 0.0, (0.0, 0.0), (0.0, 0.0), 1.0, 4.0, 0.0, 0.02, "han", 50.0)
    assert "no retraining needed" in repr(a) and "0.02" in repr(a) and "no retraining needed" in a.stop_rule
    df = a.to_dataframe()
    assert (df.drop(index=["cap asked about", "P(recover within cap)"]) == 0).all().all()
    assert df.loc["cap asked about", "iterations"] == 200 and df.loc["P(recover within cap)", "epochs"] == 1


# ---------------------------------------------------------------- advise

@pytest.fixture(scope="module")
def tiny():
    "A lenet_300_100 trained for one epoch (8 steps) on the first 1000 MNIST images, and its data."
    import os
    from pathlib import Path
    root = os.environ.get("NETDEVIATION_DATA")
    if not root or not (Path(root)/"MNIST"/"raw"/"train-images-idx3-ubyte").exists(): pytest.skip("MNIST not in NETDEVIATION_DATA")
    from netdeviation.corpus import corpus_data
    from netdeviation.models import lenet_300_100
    from netdeviation.training import Baseline, fit
    data = corpus_data("mnist", 1000, 200, 200)
    torch.manual_seed(0); net = lenet_300_100(); w0 = copy.deepcopy(net.state_dict())
    fit(net, data, "paper", epochs=1, progress=False, eval_test=False)
    return Baseline.from_model(net.eval(), data, w_initial=w0, t_initial=1.0, config="paper"), data

def _features(**kw)->dict:
    "Hand-set features: every one 0 (the synthetic corpus's centre) but those given."
    f = {k: 0.0 for k in FEATURES} | {"node": 0, "ref_acc": 0.95} | kw
    f["start_acc"] = f["ref_acc"] - f["acc_gap"]; f.setdefault("acc_gap_recal", f["acc_gap"])
    return f

def test_advise_end_to_end(tiny, fitted):
    from netdeviation.pruning import prune
    base, data = tiny
    pruned = prune(base.model, "magnitude", 0.95, data=data.x_val)
    a = advise(pruned, base, data, tolerance=0.01, advisor=fitted, method="magnitude")
    ipe = 1000/BATCH  # the advisor counts iterations at its own batch size
    assert a.iters_per_epoch == ipe and a.status in ("none", "recovers", "unlikely")
    assert a.epochs == pytest.approx(a.iterations/ipe, rel=1e-12)
    assert a.interval95[0] <= a.interval80[0] <= a.interval80[1] <= a.interval95[1]
    assert a.interval95[0] <= a.iterations <= a.interval95[1] and 0 <= a.p_recover <= 1
    assert set(FEATURES) <= set(a.features) and a.cap == 1.0 and a.advisor == "fitted"
    if a.status == "none": assert a.iterations == 0 and a.p_recover == 1
    if a.status == "recovers": assert a.recommended_cap == pytest.approx(a.interval95[1]/ipe)

def test_advise_against_the_synthetic_truth(tiny, fitted):
    base, data = tiny
    ipe = 1000/BATCH
    for recipe, lr in (("paper", 0.0), ("han", -1.0)):
        a = advise(None, base, data, tolerance=0.01, recipe=recipe, advisor=fitted, features=_features(acc_gap=0.1, loss_ratio_recal=-1.0))
        t = float(truth(10.0, lr, -1.0))
        assert a.status == "recovers" and 0.5 <= a.iterations/t <= 2, (recipe, a.iterations, t)
        assert a.epochs == pytest.approx(a.iterations/ipe, rel=1e-12)
        assert a.recommended_cap == pytest.approx(a.interval95[1]/ipe)
        assert a.interval95[0] <= a.iterations <= a.interval95[1] and a.interval80[0] <= a.interval80[1]
    u = advise(None, base, data, tolerance=0.01, advisor=fitted, features=_features(acc_gap=0.3, loss_ratio_recal=2.0))
    assert u.status == "unlikely" and u.p_recover < 0.5 and u.recommended_cap == pytest.approx(max(CAP/ipe, base.t_initial))
    n = advise(None, base, data, tolerance=0.05, advisor=fitted, features=_features(acc_gap=0.05))  # exactly δ: within
    assert n.status == "none" and n.iterations == 0 and n.epochs == 0 and n.p_recover == 1

def test_advise_intervals_are_nested(tiny, fitted):
    base, data = tiny
    for recipe in ("paper", "han"):
        a = advise(None, base, data, tolerance=0.01, recipe=recipe, advisor=fitted, features=_features(acc_gap=0.1, loss_ratio_recal=-1.0))
        assert a.interval95[0] <= a.interval80[0] <= a.interval80[1] <= a.interval95[1], (recipe, a.interval80, a.interval95)

def test_advise_input_errors_name_the_parameter(tiny, fitted):
    base, data = tiny
    f = _features(acc_gap=0.1)
    for tol in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match="tolerance"): advise(None, base, data, tolerance=tol, advisor=fitted, features=f)
    with pytest.warns(UserWarning, match="tolerance"): advise(None, base, data, tolerance=0.2, advisor=fitted, features=f)
    with pytest.raises(ValueError, match="recipe"): advise(None, base, data, recipe="sgd", advisor=fitted, features=f)
    with pytest.raises(TypeError, match="^advisor"): advise(None, base, data, advisor="corpus-v1", features=f)
    with pytest.raises(ValueError, match="cap"): advise(None, base, data, cap=-1.0, advisor=fitted, features=f)

def test_advise_rejects_a_dataframe_as_advisor(tiny, corpus):
    base, data = tiny
    with pytest.raises(TypeError, match="^advisor"): advise(None, base, data, advisor=corpus, features=_features(acc_gap=0.1))
