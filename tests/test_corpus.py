"""The recoverability corpus (nbs/06a_corpus.ipynb): `mask_kind` on hand-built masks, `recovery_columns` against a
direct scan of hand-built curves, `corpus_data` sizes, `corpus_table` / `save_corpus` on a synthetic rows frame, and
a smoke run of `corpus_run` (and, slow, of the `corpus` sweep template). Every comparison is with a hand count or an
independent scan, never with the code's own output."""
import math, os, re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from netdeviation.corpus import (FEATURES, STATUSES, TOLERANCES, corpus_data, corpus_run, corpus_table, mask_kind,
                                 recovery_columns, save_corpus)
from netdeviation.retraining import RetrainResult
from netdeviation.training import TrainConfig

torch.set_num_threads(1)
NBS = Path(__file__).resolve().parents[1]/"nbs"


# ---------------------------------------------------------------- mask_kind

def _net()->nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4*4*4, 6), nn.ReLU(), nn.Linear(6, 3))

def _masked(masks:dict)->nn.Sequential:
    "The net with `torch.nn.utils.prune.custom_from_mask` masks on the layers named by index."
    net = _net()
    for i, m in masks.items(): torch_prune.custom_from_mask(net[i], "weight", m)
    return net

def _rows_zero(shape, rows)->torch.Tensor:
    m = torch.ones(shape); m[list(rows)] = 0; return m

def test_mask_kind_whole_rows_and_filters_is_node():
    conv, fc = (4, 1, 3, 3), (6, 64)
    assert mask_kind(_masked({0: _rows_zero(conv, [1, 3])})) == "node"                  # whole filters of a conv
    assert mask_kind(_masked({3: _rows_zero(fc, [0, 2, 5])})) == "node"                 # whole rows of a Linear
    assert mask_kind(_masked({0: _rows_zero(conv, [2]), 3: _rows_zero(fc, [4]),         # several layers, one untouched
                              5: torch.ones(3, 6)})) == "node"

def test_mask_kind_scattered_is_connection():
    g = torch.Generator().manual_seed(0)
    scattered = (torch.rand(6, 64, generator=g) > 0.5).float()
    assert not ((scattered == 0).all(1) | (scattered == 1).all(1)).all()  # the hand-built mask really is scattered
    assert mask_kind(_masked({3: scattered})) == "connection"
    one = torch.ones(6, 64); one[2, 7] = 0                                  # a single weight
    assert mask_kind(_masked({3: one})) == "connection"
    cols = torch.ones(6, 64); cols[:, :10] = 0                              # whole input columns: the fan-out of removed units
    assert mask_kind(_masked({3: cols})) == "node"
    both = torch.ones(6, 64); both[1] = 0; both[:, 5] = 0; both[3, 9] = 0   # rows and columns, plus one stray weight
    assert mask_kind(_masked({3: both})) == "connection"
    conv = torch.ones(4, 1, 3, 3); conv[0, 0, 1, 1] = 0                     # one kernel entry of a filter
    assert mask_kind(_masked({0: conv})) == "connection"
    # one layer pruned by nodes, another scattered: not a node pruning
    assert mask_kind(_masked({0: _rows_zero((4, 1, 3, 3), [1]), 3: one})) == "connection"

def test_mask_kind_without_masks_names_pruned():
    with pytest.raises(ValueError, match="pruned"): mask_kind(_net())


# ---------------------------------------------------------------- recovery_columns

def _result(steps, accs, ref_acc:float, target_acc:float|None, target_loss:float|None=None)->RetrainResult:
    "A real `RetrainResult` around a hand-built curve (losses made up; only the accuracies matter here)."
    checks = pd.DataFrame({"step": steps, "epochs": [s/10 for s in steps], "loss": [1.0/(1 + s) for s in steps], "acc": accs})
    hit = [i for i, a in enumerate(accs) if target_acc is not None and a >= target_acc]
    done = bool(hit)
    return RetrainResult(done, steps[hit[0]] if done else None, steps[hit[0]]/10 if done else None, steps[-1], 4.0, 0.1,
                         {"loss": 0.1, "acc": ref_acc}, {"loss": target_loss, "acc": target_acc},
                         checks.iloc[0].to_dict(), checks.iloc[-1].to_dict(), checks,
                         TrainConfig("adam", 0.01, 4, 128, "constant"), nn.Linear(2, 2), "geometric", "target", 0.1)

def _scan(steps, accs, ref_acc, tolerances)->dict:
    "The independent reference: walk the curve, first check with acc >= ref − δ, the check before it."
    out = {}
    for t in tolerances:
        i = next((i for i, a in enumerate(accs) if a >= ref_acc - t), None)
        if i == 0: it, lo, s = 0, 0, "none"
        elif i is None: it, lo, s = math.nan, steps[-1], "censored"
        else: it, lo, s = steps[i], steps[i - 1], "recovered"
        out |= {f"iters_{t:g}": it, f"lower_{t:g}": lo, f"status_{t:g}": s}
    return out

def _same(got:dict, want:dict):
    assert set(got) == set(want)
    for k, v in want.items():
        if isinstance(v, float) and math.isnan(v): assert isinstance(got[k], float) and math.isnan(got[k]), k
        else: assert got[k] == v, (k, got[k], v)

STEPS = [0, 1, 2, 3, 5, 8, 13]

def test_recovery_columns_hand_curve():
    # ref 0.96: thresholds 0.955 (δ=.005), 0.95 (.01), 0.94 (.02), 0.91 (.05); the curve dips after step 3
    accs = [0.90, 0.93, 0.935, 0.945, 0.938, 0.952, 0.954]
    got = recovery_columns(_result(STEPS, accs, 0.96, 0.96 - min(TOLERANCES)))
    want = {"iters_0.005": math.nan, "lower_0.005": 13, "status_0.005": "censored",   # never reaches 0.955
            "iters_0.01": 8, "lower_0.01": 5, "status_0.01": "recovered",             # 0.952 at step 8
            "iters_0.02": 3, "lower_0.02": 2, "status_0.02": "recovered",             # 0.945 at step 3 (dips later)
            "iters_0.05": 1, "lower_0.05": 0, "status_0.05": "recovered"}             # 0.93 at step 1
    _same(got, want)
    _same(got, _scan(STEPS, accs, 0.96, TOLERANCES))
    assert set(v for k, v in got.items() if k.startswith("status_")) <= set(STATUSES)

def test_recovery_columns_start_within_is_none():
    accs = [0.93, 0.951, 0.957]  # the start is within 0.05 already; 0.951 reaches 0.01; 0.957 reaches 0.005
    got = recovery_columns(_result([0, 1, 2], accs, 0.96, 0.955))
    _same(got, {"iters_0.005": 2, "lower_0.005": 1, "status_0.005": "recovered", "iters_0.01": 1, "lower_0.01": 0,
                "status_0.01": "recovered", "iters_0.02": 1, "lower_0.02": 0, "status_0.02": "recovered",
                "iters_0.05": 0, "lower_0.05": 0, "status_0.05": "none"})

def test_recovery_columns_threshold_is_inclusive():
    # dyadic numbers: ref − δ is exact, so acc == ref − δ exactly; the rule is acc >= ref − δ
    got = recovery_columns(_result([0, 4, 8], [0.5, 0.6875, 0.75], 0.75, 0.6875), tolerances=(0.0625, 0.125, 0.25))
    _same(got, {"iters_0.0625": 4, "lower_0.0625": 0, "status_0.0625": "recovered",
                "iters_0.125": 4, "lower_0.125": 0, "status_0.125": "recovered",
                "iters_0.25": 0, "lower_0.25": 0, "status_0.25": "none"})

def test_recovery_columns_random_curves_match_scan():
    g = np.random.default_rng(0)
    for _ in range(60):
        n = int(g.integers(1, 12)); steps = [0, *np.cumsum(g.integers(1, 9, n - 1)).tolist()]
        accs = (g.integers(150, 201, n)/200).tolist()          # accuracies on 200 images: ties with ref − δ happen
        ref = int(g.integers(180, 201))/200
        got = recovery_columns(_result(steps, accs, ref, ref - 0.005))
        _same(got, _scan(steps, accs, ref, TOLERANCES))

def test_recovery_columns_guards():
    accs = [0.9, 0.95]
    with pytest.raises(ValueError, match="tolerances"):   # a loss-only stop rule recorded no accuracy target
        recovery_columns(_result([0, 1], accs, 0.96, None, target_loss=0.2))
    with pytest.raises(TypeError, match="^r: "): recovery_columns({"checks": None})
    # recorded to ref − 0.01 and read at δ >= 0.01 only: fine
    _same(recovery_columns(_result([0, 1], accs, 0.96, 0.96 - 0.01), tolerances=(0.01, 0.05)),
          _scan([0, 1], accs, 0.96, (0.01, 0.05)))

def test_recovery_columns_guard_rejects_a_looser_target():
    # the run stopped at the first check within 0.01 (step 1: 0.951); it never tried to reach 0.955 (δ = 0.005),
    # so reading δ = 0.005 as 'censored' would be wrong: this must raise
    with pytest.raises(ValueError, match="tolerances"):
        recovery_columns(_result([0, 1], [0.9, 0.951], 0.96, 0.96 - 0.01))

def test_recovery_columns_guard_accepts_a_stricter_target():
    # recorded to within 0.001 (a stricter rule than any δ read): the curve holds every answer
    steps, accs = [0, 1, 2, 3], [0.9, 0.93, 0.952, 0.9595]
    _same(recovery_columns(_result(steps, accs, 0.96, 0.96 - 0.001)), _scan(steps, accs, 0.96, TOLERANCES))


# ---------------------------------------------------------------- corpus_data

def _mnist_root()->Path|None:
    root = os.environ.get("NETDEVIATION_DATA")
    return Path(root) if root and (Path(root)/"MNIST"/"raw"/"train-images-idx3-ubyte").exists() else None

needs_mnist = pytest.mark.skipif(_mnist_root() is None, reason="MNIST not in NETDEVIATION_DATA")

@needs_mnist
def test_corpus_data_sizes_are_prefixes():
    from netdeviation.data import load_dataset
    d, full = corpus_data("mnist", 300, 120, 50), load_dataset("mnist")
    for split, n in (("train", 300), ("val", 120), ("test", 50)):
        x, y = getattr(d, f"x_{split}"), getattr(d, f"y_{split}")
        assert x.shape == (n, 1, 28, 28) and y.shape == (n,)
        assert torch.equal(x, getattr(full, f"x_{split}")[:n]) and torch.equal(y, getattr(full, f"y_{split}")[:n])
    assert d.x_val.shape[0] == 120 and d.pruning_data[0].shape[0] == 120

@needs_mnist
@pytest.mark.parametrize("kw, name", [(dict(n_train=0), "n_train"), (dict(n_val=10**7), "n_val"), (dict(n_test=1.5), "n_test"),
                                      (dict(n_train=-3), "n_train"), (dict(dataset="cifar"), "dataset")])
def test_corpus_data_bad_sizes_name_the_parameter(kw, name):
    with pytest.raises((ValueError, TypeError), match=name): corpus_data(**kw)


# ---------------------------------------------------------------- corpus_table and save_corpus

def _rows()->pd.DataFrame:
    "Synthetic corpus rows, shuffled, with the sweep's bookkeeping columns; curves of known lengths."
    g, out = np.random.default_rng(1), []
    for i, (arch, amount, recipe) in enumerate([(a, m, r) for a in ("lenet5", "lenet_300_100") for m in (0.5, 0.9) for r in ("han", "paper")]):
        n = 2 + i % 3; ipe = 62.5 if recipe == "paper" else 31.25
        statuses = [STATUSES[(i + k) % 3] for k in range(len(TOLERANCES))]
        out.append({"sweep": "corpus", "run_id": f"id{i}", "status": "ok", "result_path": "/x", "amounts": "[0.5]", "recipes": "[]",
                    "dataset": "mnist", "arch": arch, "method": "magnitude", "amount": amount, "seed": 0, "recipe": recipe,
                    "iters_per_epoch": ipe, "acc_gap": 0.01*i, "tag": i,
                    **{f"status_{t:g}": s for t, s in zip(TOLERANCES, statuses)},
                    "curve": {"step": list(range(0, 3*n, 3)), "loss": g.uniform(0, 1, n).round(6).tolist(), "acc": [0.1*i]*n}})
    return pd.DataFrame(out).sample(frac=1, random_state=0).reset_index(drop=True)

def test_corpus_table_splits_runs_and_curves():
    rows = _rows()
    runs, curves = corpus_table(rows)
    assert len(runs) == len(rows) and list(runs.run) == list(range(len(rows)))
    assert not {"curve", "sweep", "run_id", "status", "result_path", "amounts", "recipes"} & set(runs.columns)
    keys = ["dataset", "arch", "method", "amount", "seed", "recipe"]
    assert list(map(tuple, runs[keys].to_numpy())) == sorted(map(tuple, rows[keys].to_numpy()))  # sorted by the grid keys
    assert len(curves) == sum(len(c["step"]) for c in rows.curve)
    assert {"run", "step", "epochs", "loss", "acc"} <= set(curves.columns)
    for _, r in runs.iterrows():  # each run's curve is its own row's curve, by the run's tag
        src = rows.curve[rows.tag == r.tag].iloc[0]; c = curves[curves.run == r.run]
        assert c.step.tolist() == src["step"] and c.loss.tolist() == src["loss"] and c.acc.tolist() == src["acc"]
        np.testing.assert_allclose(c.epochs.to_numpy(), np.array(src["step"])/r.iters_per_epoch, rtol=1e-12)

def test_corpus_table_rejects_rows_without_curves():
    with pytest.raises(ValueError, match="rows"): corpus_table(_rows().drop(columns=["curve"]))
    with pytest.raises(ValueError, match="rows"): corpus_table([{"curve": 1}])

def test_save_corpus_writes_three_files(tmp_path):
    pkg = Path(__import__("netdeviation").__file__).parent/"advisor_corpus.csv"
    before = pkg.stat().st_mtime_ns if pkg.exists() else None
    rows, out = _rows(), tmp_path/"corpus"
    out.mkdir(); (out/"corpus.csv").write_text("old\n")  # replaced, not appended to
    files = save_corpus(rows, out)
    assert set(files) == {"corpus", "curves", "readme"} and all(Path(p).parent == out for p in files.values())
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "corpus.csv", "curves.csv"]  # no temporary left over
    assert (pkg.stat().st_mtime_ns if pkg.exists() else None) == before                      # the package copy untouched
    runs, curves = pd.read_csv(out/"corpus.csv"), pd.read_csv(out/"curves.csv")
    assert len(runs) == len(rows) and len(curves) == sum(len(c["step"]) for c in rows.curve)
    readme = (out/"README.md").read_text()
    assert f"{len(rows)} retraining runs" in readme and f"{len(curves)} checks in all" in readme
    for t in TOLERANCES:  # the README's status table against a hand count of the synthetic rows
        n = {s: sum(1 for v in rows[f"status_{t:g}"] if v == s) for s in STATUSES}
        assert f"| {t:g} | " + " | ".join(str(n[s]) for s in STATUSES) + " |" in readme
    for k in ("arch", "recipe", "method"):  # the grid's sizes, however the README words them
        assert re.search(rf"{k}e?s?: {rows[k].nunique()}\b", readme), k

def test_save_corpus_is_atomic(tmp_path, monkeypatch):
    "A write that fails part-way leaves the file that was there whole."
    import netdeviation.checks as checks  # `atomic_write` lives there: every file the package writes goes through it
    out = tmp_path/"c"; out.mkdir(); (out/"corpus.csv").write_text("the previous corpus\n")
    def boom(src, dst): raise OSError("disk full")
    monkeypatch.setattr(checks.os, "replace", boom)
    with pytest.raises(OSError): save_corpus(_rows(), out)
    assert (out/"corpus.csv").read_text() == "the previous corpus\n"


# ---------------------------------------------------------------- smoke runs

def _check_rows(rows:pd.DataFrame, n_val:int):
    "Every feature and recovery column present; each status_δ agrees with a direct scan of the stored curve."
    want = {*FEATURES, *(f"{k}_{t:g}" for t in TOLERANCES for k in ("iters", "lower", "status")), "curve", "cap_iters"}
    assert want <= set(rows.columns), sorted(want - set(rows.columns))
    for _, r in rows.iterrows():
        c = r.curve
        assert c["step"][0] == 0 and all(a < b for a, b in zip(c["step"], c["step"][1:]))
        assert all(isinstance(v, (int, float)) for k in ("step", "loss", "acc") for v in c[k])
        assert all(abs(a*n_val - round(a*n_val)) < 1e-6 for a in c["acc"])  # accuracies on n_val images
        assert c["step"][-1] <= math.floor(r.cap*r.n_train/r.batch_size)
        _same({k: r[k] for k in r.index if k.split("_")[0] in ("iters", "lower", "status") and k[-1].isdigit()},
              _scan(c["step"], c["acc"], r.ref_acc, TOLERANCES))
        assert abs(r.acc_gap - (r.ref_acc - c["acc"][0])) < 1e-9          # the curve starts at the pruned network
        assert r.node == int(r.kind == "node")

@needs_mnist
def test_corpus_run_smoke(tmp_path):
    rows = corpus_run("mnist", "lenet_300_100", "magnitude", [0.9], recipes=["paper"], cap=1.0, n_train=500, n_val=200,
                      cache=tmp_path, progress=False)
    assert len(rows) == 1 and rows.amount.tolist() == [0.9] and rows.recipe.tolist() == ["paper"]
    r = rows.iloc[0]
    assert r.iters_per_epoch == 500/128 and r.cap_iters == math.floor(1.0*500/128) == 3
    assert abs(r.sparsity - 0.9) < 0.01 and r.node == 0
    _check_rows(rows, 200)
    assert len(list(tmp_path.glob("*.pt"))) == 1  # the original, cached in the folder given

@pytest.mark.slow
@needs_mnist
def test_corpus_template_through_run_sweep(tmp_path, monkeypatch):
    from netdeviation.sweeps import collect, run_sweep
    monkeypatch.setenv("NETDEVIATION_CACHE", str(tmp_path/"cache"))  # the template trains its own original here
    res = run_sweep(NBS/"sweeps"/"corpus.ipynb", {"seed": [0]}, name="corpus", runs_dir=tmp_path/"runs", workers=1, progress=False)
    assert res.count("done") == 1 and not res.errors
    rows = collect(tmp_path/"runs")
    assert len(rows) == 4 and sorted(rows.amount.unique()) == [0.5, 0.9] and sorted(rows.recipe.unique()) == ["han", "paper"]
    _check_rows(rows, 500)
    runs, curves = corpus_table(rows)
    assert len(runs) == 4 and len(curves) == sum(len(c["step"]) for c in rows.curve)

@pytest.mark.slow
@needs_mnist
def test_corpus_template_runs_rewind_once_for_a_constant_lr_original(tmp_path, monkeypatch):
    "A `partial` original is trained at a constant lr, so `rewind` is `paper` and is run once: the template accepts that."
    from netdeviation.sweeps import collect, run_sweep
    monkeypatch.setenv("NETDEVIATION_CACHE", str(tmp_path/"cache"))
    res = run_sweep(NBS/"sweeps"/"corpus.ipynb", {"seed": [0], "regime": ["partial"], "recipes": [["paper", "rewind"]]},
                    name="corpus", runs_dir=tmp_path/"runs", workers=1, progress=False)
    assert res.count("done") == 1 and not res.errors
    rows = collect(tmp_path/"runs")
    assert len(rows) == 2 and rows.recipe.tolist() == ["paper", "paper"] and (rows.regime == "partial").all()


# ---------------------------------------------------------------- corpus_baseline

@needs_mnist
def test_corpus_baseline_sets_a_corrupt_checkpoint_aside_and_says_so(tmp_path):
    "A damaged checkpoint is moved aside with a warning naming it, never silently replaced; the retrained original equals the first."
    from netdeviation.corpus import corpus_baseline
    from netdeviation.training import state_equal
    data, cfg = corpus_data("mnist", 256, 64, 64), TrainConfig(optimizer="sgd", lr=0.05, epochs=1, batch_size=64)
    first = corpus_baseline("lenet_300_100", data, config=cfg, cache=tmp_path)
    path = first.path
    path.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match=r"does not match its stored SHA-256.*moved it aside.*training the original again"):
        again = corpus_baseline("lenet_300_100", data, config=cfg, cache=tmp_path)
    assert path.exists() and len(list(tmp_path.glob(f"{path.name}.corrupt-*"))) == 1
    assert state_equal(first.model, again.model)
