"""The explorer's background computation, in process (no kernel): the widget exists before any result, a change made
while a computation runs is computed after it (the last one winning, the ones in between skipped), `wait` returns the
result or raises the error, and a pruning seen before costs no computation. Ordering is forced with events, never
with sleeps or timings."""
import threading

import pytest
import torch

import netdeviation.explorer as E
from netdeviation.explorer import Explorer, explore

KW = dict(amounts=(0.5, 0.8), amount=0.5, threads=1)  # two amounts; one torch thread: quick on a busy machine


@pytest.fixture
def gate(monkeypatch):
    "`explore` held at its start until `gate.set()`; the values of every call in `gate.calls`."
    ev, real = threading.Event(), E.explore
    ev.calls = []
    def held(**kw):
        ev.calls.append((kw["model"], kw["method"], kw["amount"], kw["tolerance"]))
        assert ev.wait(600), "the gate was never opened"
        return real(**kw)
    monkeypatch.setattr(E, "explore", held)
    return ev


def test_widget_exists_before_the_first_result(gate):
    ui = Explorer(**KW)
    assert ui.result is None and ui.busy and all(w.disabled for w in ui.controls.values())
    assert "computing magnitude at 50 %" in ui.message and ui.progress.layout.visibility == "visible"
    gate.set()
    ex = ui.wait()
    assert ex is ui.result and (ex.method, ex.amount) == ("magnitude", 0.5)
    assert not ui.busy and not any(w.disabled for w in ui.controls.values()) and "showing magnitude at 50 %" in ui.message
    assert ui.table.value == ex.to_html() and ui.figure.value


def test_last_request_wins(gate):
    ui = Explorer(**KW)
    shown = []
    ui.figure.observe(lambda c: shown.append(ui.result), names="value")
    ui.controls["amount"].value = 0.8       # both while the first computation is held: neither interleaves with it
    ui.controls["method"].value = "random"
    gate.set()
    ex = ui.wait()
    assert gate.calls == [("lenet_300_100", "magnitude", 0.5, 0.01), ("lenet_300_100", "random", 0.8, 0.01)]  # (magnitude, 80 %) skipped
    assert (ex.method, ex.amount) == ("random", 0.8) and len(shown) == 1  # the superseded first result was never drawn
    assert [w.value for w in ui.controls.values()] == ["lenet_300_100", "random", 0.8, 0.01]


def _counting(monkeypatch)->dict:
    "Count the library calls `explore` makes."
    n = {}
    for name in ("measure", "features", "deviation", "deviation_sweep", "retraining_bounds", "measure_features", "advise", "prune", "evaluate", "get_baseline"):
        real = getattr(E, name)
        def counted(*a, _real=real, _name=name, **k):
            n[_name] = n.get(_name, 0) + 1
            return _real(*a, **k)
        monkeypatch.setattr(E, name, counted)
    return n


def test_seen_pruning_costs_nothing_and_tolerance_only_the_advice(monkeypatch):
    a = explore("lenet_300_100", "magnitude", 0.8, threads=1)
    n = _counting(monkeypatch)
    b = explore("lenet_300_100", "magnitude", 0.8, threads=1)
    assert n == {} and b.summary() == a.summary()     # back to a pruning seen before: nothing computed
    c = explore("lenet_300_100", "magnitude", 0.8, tolerance=0.05, threads=1)
    assert n == {"advise": 1} and c.deviation is a.deviation and c.bounds is a.bounds  # a new δ: one advise call
    assert c.advice.tolerance == 0.05 and c.summary()["D"] == a.summary()["D"]


def test_failure_keeps_the_result_and_wait_raises():
    ui = Explorer(**KW)
    shown = ui.wait()
    ui.kwargs["config"] = "no_such_config"
    ui.controls["method"].value = "random"
    with pytest.raises(ValueError, match="config: expected one of"): ui.wait()
    assert ui.result is shown and ui.controls["method"].value == "magnitude" and not ui.busy
    assert "could not compute random at 50 %" in ui.message and "Still showing magnitude at 50 %" in ui.message
    ui.kwargs.pop("config")
    ui.controls["tolerance"].value = 0.05
    assert ui.wait().tolerance == 0.05 and ui.error is None


def test_foreground_and_threads_restored():
    n = torch.get_num_threads()
    ui = Explorer(background=False, **KW)
    assert ui.result is not None and not ui.busy  # computed in the constructor, as asked
    assert torch.get_num_threads() == n           # `threads` applies while computing only
    ui.controls["amount"].value = 0.8
    assert ui.result.amount == 0.8 and ui.wait() is ui.result


@pytest.mark.parametrize("kw, match", [(dict(foo=1), "kwargs: expected some of"), (dict(threads=0), "threads"),
                                       (dict(config="nope"), "config: expected one of"), (dict(background="yes"), "background"),
                                       (dict(gamma=-1.0), "gamma"), (dict(beta_iters=0), "beta_iters"), (dict(device="tpu"), "device")])
def test_bad_input_named(kw, match):
    with pytest.raises((TypeError, ValueError), match=match): Explorer(**kw)


def test_bad_explore_input_named():
    with pytest.raises(ValueError, match="amount"): explore(amount=1.0)
    with pytest.raises(TypeError, match="threads"): explore(threads=1.5)
    ui = Explorer(**KW)
    with pytest.raises(ValueError, match="timeout"): ui.wait(timeout=-1)
    ui.wait()
