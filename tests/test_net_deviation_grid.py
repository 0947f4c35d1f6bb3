"Net Deviation on the common grid (`D_grid`, issue #13): the same pruning gets the same value in any sweep."
import numpy as np
import pandas as pd
import pytest
import torch

from netdeviation.deviation import D_GRID, deviation_sweep, grid_net_deviation, grid_scales, net_deviation
from netdeviation.models import get_model
from netdeviation.report import validity_table, verdict, with_grid_deviation

GROUP = ["model", "method", "seed"]


@pytest.fixture(scope="module")
def sweeps():
    "A small untrained LeNet-300-100 on 64 random images, swept over the grid and over 10%, 60%, 90%."
    torch.manual_seed(0)
    net, x = get_model("lenet_300_100").eval(), torch.rand(64, 1, 28, 28)
    kw = dict(methods=("magnitude", "random"), seeds=(0, 1), progress=False)
    return deviation_sweep(net, x, amounts=D_GRID, **kw), deviation_sweep(net, x, amounts=(0.1, 0.6, 0.9), **kw)


def test_same_pruning_same_d_grid_across_sweeps(sweeps):
    grid, other = sweeps
    both = other.merge(grid, on=[*GROUP, "amount"], suffixes=("", "_g"))
    assert len(both) == 8                                          # 0.1 and 0.6 of 2 methods x 2 seeds
    assert both.lhs.tolist() == both.lhs_g.tolist()             # the same prunings
    assert both.D_grid.tolist() == both.D_grid_g.tolist()       # exactly the same D_grid
    assert (both.D - both.D_g).abs().max() > 0.01                    # ... but not the same D
    assert grid.D_grid.tolist() == grid.D.tolist()                 # on the grid itself D_grid is D
    assert (other.loc[other.amount == 0.9, "D"] == 1).all()        # D: the sweep's largest amount is 1 by construction
    assert len(other) == 12 and sorted(set(other.amount)) == [0.1, 0.6, 0.9]  # the extra grid passes are not rows


def test_d_grid_by_hand(sweeps):
    grid, other = sweeps
    top = grid.assign(a=grid.dev.abs()).groupby(GROUP).a.max()     # max |dev| over the grid, from the grid sweep's own rows
    hand = other.dev.abs().to_numpy()/other.set_index(GROUP).index.map(top).to_numpy()
    np.testing.assert_allclose(other.D_grid, hand, rtol=1e-12)
    own = other.groupby(["method", "seed"]).dev.transform(lambda d: d.abs()/d.abs().max())  # D from the sweep's own dev column
    np.testing.assert_allclose(other.D, own, rtol=1e-12)
    for (_, method, seed), g in other.groupby(GROUP):             # net_deviation with the grid's scale
        np.testing.assert_allclose(g.D_grid, net_deviation(g.dev, scale=float(top[(g.model.iloc[0], method, seed)])), rtol=1e-12)


def test_report_join_on_a_synthetic_table():
    row = lambda s, a: dict(model="lenet5", method="random", seed=s, amount=a, dev=-(1 + s)*10*a, D=np.nan)
    grid = pd.DataFrame([row(s, a) for s in (0, 1) for a in D_GRID])
    ret = pd.DataFrame([row(s, a) for s in (0, 1, 2) for a in (0.1, 0.6, 0.9)])
    joined = with_grid_deviation(ret, grid)
    have = joined.seed < 2
    np.testing.assert_allclose(joined.D_grid[have], joined.amount[have]/0.8, rtol=1e-12)  # |dev|/max over the grid
    assert joined.D_grid[~have].isna().all()                     # no grid for seed 2: NaN, not a guess
    np.testing.assert_allclose(joined.D_grid[have], grid_net_deviation(ret[have], grid), rtol=1e-12)
    assert grid_scales(grid).tolist() == [8.0, 16.0]
    assert grid_scales(grid[grid.amount != 0.4]).isna().all()   # an incomplete grid gives no scale


def test_validity_table_and_verdict_use_d_grid():
    rng = np.random.default_rng(0)
    n = 30
    ret = pd.DataFrame({"model": "m", "method": "random", "seed": 0, "amount": np.linspace(0.1, 0.9, n),
                        "measured": np.arange(n, dtype=float) + rng.random(n), "recovered": True,
                        "D": rng.random(n), "lhs": np.arange(n) + rng.random(n), "rel_dev": rng.random(n),
                        "tightness": rng.random(n), "D_grid": np.arange(n, dtype=float)})
    vt = validity_table(None, ret, n_boot=200)
    assert "D_grid" in set(vt.score) and vt.set_index("score").loc["D_grid", "rho"] == pytest.approx(1.0)
    words = verdict(vt)
    assert "Net Deviation on the common grid 10–80%" in words and "not comparable across sweeps" in words
    assert "D_grid" not in set(validity_table(None, ret.assign(D_grid=np.nan), n_boot=50).score)  # all NaN: left out


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, float("nan"), float("inf"), "2", True])
def test_bad_scale_names_the_parameter(bad):
    with pytest.raises(ValueError, match="scale: expected a positive finite number"):
        net_deviation([1.0, 2.0], scale=bad)
