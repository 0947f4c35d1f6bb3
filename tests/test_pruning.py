"Pruning: re-pruning against torch's own iterative pruning, thread-count determinism, and bad input named by parameter."
import copy, json, os, subprocess, sys
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from netdeviation.models import get_model
from netdeviation.graph import prunable_layers
from netdeviation.pruning import (METHODS, NODE_METHODS, apply_masks, cluster_nodes, compute_masks, get_masks,
                                  gram_embedding, keep_highest, magnitude_mask, n_pruned, node_gram, prune,
                                  random_mask, sparsity_report, stage_outputs)

def lenet300(seed=0):
    torch.manual_seed(seed)
    return get_model("lenet_300_100")

def images(n=64, seed=1, shape=(1, 28, 28)):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))

def n_zero(t): return int((t == 0).sum())

def same_up_to_ties(masks, refs, ws)->bool:
    "Masks equal, or pruning the same multiset of |w|: equal |w| at the threshold may be broken either way."
    cat = lambda ts: torch.cat([t.detach().flatten() for t in ts])
    m, r, a = cat(masks), cat(refs), cat(ws).abs()
    return torch.equal(m, r) or (int((m == 0).sum()) == int((r == 0).sum()) and torch.equal(a[m == 0].sort().values, a[r == 0].sort().values))

def left_after(n, *amounts):
    "Units left after pruning `amounts` in turn, each a fraction of what is left (torch's rule)."
    for a in amounts: n -= round(a*n)
    return n

# --- re-pruning: one semantics, torch's (the amount is a fraction of what is not pruned yet) -----------------------

@pytest.mark.parametrize("a1,a2", [(0.5, 0.5), (0.3, 0.6), (0.9, 0.2)])
def test_magnitude_twice_is_l1_unstructured_twice(a1, a2):
    net = lenet300()
    ours = prune(prune(net, "magnitude", a1), "magnitude", a2)
    ref = copy.deepcopy(net)
    for a in (a1, a2):
        for _, l in prunable_layers(ref): torch_prune.l1_unstructured(l, "weight", amount=a)
    for (n, l), (_, r) in zip(prunable_layers(ours), prunable_layers(ref)):
        assert same_up_to_ties([l.weight_mask], [r.weight_mask], [r.weight_orig]), n

def test_global_magnitude_twice_is_global_unstructured_twice():
    net = lenet300()
    ours = prune(prune(net, "magnitude", 0.4, scope="global"), "magnitude", 0.5, scope="global")
    ref = copy.deepcopy(net)
    for a in (0.4, 0.5):
        torch_prune.global_unstructured([(l, "weight") for _, l in prunable_layers(ref)], torch_prune.L1Unstructured, amount=a)
    pairs = list(zip(prunable_layers(ours), prunable_layers(ref)))
    assert same_up_to_ties([l.weight_mask for (_, l), _ in pairs], [r.weight_mask for _, (_, r) in pairs], [r.weight_orig for _, (_, r) in pairs])

def test_random_twice_compounds_like_random_unstructured_twice():
    net = lenet300()
    once = prune(net, "random", 0.5, seed=3)
    twice = prune(once, "random", 0.5, seed=4)
    ref = copy.deepcopy(net)
    for a in (0.5, 0.5):
        for _, l in prunable_layers(ref): torch_prune.random_unstructured(l, "weight", amount=a)
    for (n, l), (_, r), (_, o) in zip(prunable_layers(twice), prunable_layers(ref), prunable_layers(once)):
        kept = int(l.weight_mask.sum())
        assert kept == int(r.weight_mask.sum()) == left_after(l.weight.numel(), 0.5, 0.5), n
        assert bool((l.weight_mask <= o.weight_mask).all()), n          # nested: pruned weights stay pruned
    total = sum(l.weight.numel() for _, l in prunable_layers(net))
    assert abs(1 - sum(int(l.weight_mask.sum()) for _, l in prunable_layers(twice))/total - 0.75) < 1e-4

def test_magnitude_node_twice_is_ln_structured_twice():
    "With equal outgoing L1 norms, eq. 4.12 ranks nodes as torch's L1 structured pruning of the incoming weights does."
    torch.manual_seed(2)
    net = nn.Sequential(OrderedDict(fc1=nn.Linear(20, 30), act=nn.ReLU(), fc2=nn.Linear(30, 5)))
    with torch.no_grad():      # incoming L1 norms 20*(1..30)/30 in random order (no near ties); outgoing norms all 0.5
        net.fc1.weight.copy_(torch.sign(torch.randn(30, 20)) * (torch.randperm(30) + 1)[:, None] / 30)
        net.fc2.weight.copy_(0.1*torch.sign(torch.randn(5, 30)))
    ours = prune(prune(net, "magnitude_node", 0.3), "magnitude_node", 0.5)
    ref = copy.deepcopy(net)
    for a in (0.3, 0.5): torch_prune.ln_structured(ref.fc1, "weight", amount=a, n=1, dim=0)
    assert torch.equal(ours.fc1.weight_mask, ref.fc1.weight_mask)
    assert int(ours.fc1.bias_mask.sum()) == left_after(30, 0.3, 0.5)

@pytest.mark.parametrize("method", NODE_METHODS)
def test_node_methods_take_a_fraction_of_the_remaining_nodes(method):
    net, x = lenet300(), images()
    once = prune(net, method, 0.5, data=x)
    twice = prune(once, method, 0.5, data=x, seed=1)
    for n, size in (("fc1", 300), ("fc2", 100)):
        b1, b2 = get_masks(once)[n]["bias"], get_masks(twice)[n]["bias"]
        assert int(b2.sum()) == left_after(size, 0.5, 0.5), (method, n)
        assert bool((b2 <= b1).all()), (method, n)
        assert n_zero(getattr(twice, n).weight_mask.view(size, -1).any(1).float()) == size - left_after(size, 0.5, 0.5)

def test_clustered_reprune_with_merge_keeps_old_masks():
    net, x = lenet300(), images()
    once = prune(net, "clustered", 0.4, data=x, merge=True)
    twice = prune(once, "clustered", 0.5, data=x, merge=True)
    m1, m2 = get_masks(once), get_masks(twice)
    for n in m1:
        for p in m1[n]: assert bool((m2[n][p] <= m1[n][p]).all()), (n, p)
    assert int(m2["fc1"]["bias"].sum()) == left_after(300, 0.4, 0.5)

def test_connection_then_node_and_amount_zero():
    net = lenet300()
    p = prune(net, "magnitude", 0.5)
    assert all(torch.equal(a["weight"], b["weight"]) for a, b in zip(get_masks(p).values(), compute_masks(p, "random", 0).values()))
    q = prune(p, "random_node", 0.5)                     # no node was pruned by the connection method: half of all
    assert int(q.fc1.bias_mask.sum()) == 150 and bool((q.fc1.weight_mask <= p.fc1.weight_mask).all())

def test_masks_on_remaining_entries():
    w = torch.tensor([0.5, -0.1, 2.0, 0.05, -0.7, 1.0])
    old = torch.tensor([1., 0, 1, 0, 1, 1])
    m = magnitude_mask(w, 0.5, old)                      # 4 left, 2 pruned: the two smallest left, 0.5 and -0.7
    assert m.tolist() == [0, 0, 1, 0, 0, 1]
    r = random_mask(w, 0.5, torch.Generator().manual_seed(0), old)
    assert int(r.sum()) == 2 and bool((r <= old).all())
    assert keep_highest(torch.tensor([3., 1., 2., 5.]), 0.3, torch.tensor([True, True, False, True])).tolist() == [True, False, False, True]

# --- determinism: the same masks under 1 and 2 threads (and without vector kernels) --------------------------------

_SCRIPT = r'''
import hashlib, json, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from netdeviation.models import get_model
from netdeviation.pruning import METHODS, compute_masks, stage_outputs
d = torch.load(sys.argv[2]); net = get_model("lenet5"); net.load_state_dict(d["state"])
acts = stage_outputs(net, d["x"])
out = {}
for method in METHODS:
    for opts in ([dict(clustering=c, keep=k) for c in ("kmeans", "ward") for k in ("random", "centre")] if method == "clustered" else [{}]):
        for amount in ((0.1, 0.3) if method == "clustered" else (0.3,)):
            m = compute_masks(net, method, amount, activations=acts, **opts)
            out[f"{method} {amount} {opts}"] = hashlib.sha256(b"".join(t.numpy().tobytes() for d in m.values() for t in d.values())).hexdigest()
print(json.dumps(out))
'''

def _masks_under(tmp_path, runs:dict)->dict:
    "Hashes of the masks of every method, computed in one subprocess per run {name: (threads, extra environment)}."
    torch.manual_seed(0)
    net = get_model("lenet5")
    with torch.no_grad(): net.conv2.weight[:7] = 0; net.conv2.bias[:7] = -1      # dead: exactly 0 after the ReLU
    torch.save({"state": net.state_dict(), "x": images(500)}, tmp_path/"in.pt")
    (tmp_path/"run.py").write_text(_SCRIPT)
    procs = {k: subprocess.Popen([sys.executable, str(tmp_path/"run.py"), t, str(tmp_path/"in.pt")], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t, **env})
             for k, (t, env) in runs.items()}
    out = {}
    for k, p in procs.items():
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-2000:]
        out[k] = json.loads(stdout)
    return out

def _all_equal(out:dict):
    ref = next(iter(out.values()))
    assert len(ref) == 4 + 8
    for k, v in out.items(): assert v == ref, (k, [m for m in ref if v[m] != ref[m]])

def test_masks_do_not_depend_on_thread_count(tmp_path):
    """A LeNet-5 whose conv2 has 7 dead filters (as the trained one has). Before the fix all 8 clustered masks of the 12 changed
    between 1 and 2 threads: the Gram matrix summed in a thread-dependent order, and the rounding noise of the dead
    filters' (equal) points decided how k-means split them."""
    _all_equal(_masks_under(tmp_path, {"1 thread": ("1", {}), "2 threads": ("2", {})}))

@pytest.mark.slow
def test_masks_do_not_depend_on_cpu_capability(tmp_path):
    _all_equal(_masks_under(tmp_path, {"machine default": ("1", {}), "ATEN default": ("2", {"ATEN_CPU_CAPABILITY": "default"}),
                                       "ATEN avx2": ("1", {"ATEN_CPU_CAPABILITY": "avx2"})}))

def test_duplicate_nodes_get_identical_points():
    torch.manual_seed(0)
    X = torch.rand(12, 500); X[[2, 5, 9]] = 0; X[7] = X[3]
    Z = gram_embedding(node_gram(X.T[:, :, None], 12)[0])
    from netdeviation.pruning import node_points
    Zd, _ = node_points(X.T[:, :, None], 12)
    assert (Zd[2] == Zd[5]).all() and (Zd[5] == Zd[9]).all() and (Zd[3] == Zd[7]).all()
    from scipy.spatial.distance import pdist
    assert np.abs(pdist(Zd) - pdist(X.double().numpy())).max() < 1e-8

# --- bad input: one clear error naming the parameter -----------------------------------------------------------------

NET, X = lenet300(), images(16)
NAN = X.clone(); NAN[0, 0, 0, 0] = float("nan")
BAD = {
    "data NaN":            (lambda: compute_masks(NET, "clustered", 0.5, data=NAN), ValueError, "data:"),
    "data inf":            (lambda: prune(NET, "clustered", 0.5, data=X.masked_fill(X > 0.9, float("inf"))), ValueError, "data:"),
    "data uint8":          (lambda: compute_masks(NET, "clustered", 0.5, data=(X*255).to(torch.uint8)), ValueError, "data:"),
    "data list":           (lambda: compute_masks(NET, "clustered", 0.5, data=[[0.5]]), TypeError, "data:"),
    "data shape":          (lambda: compute_masks(NET, "clustered", 0.5, data=X.view(-1, 784)), ValueError, "data:"),
    "data empty":          (lambda: compute_masks(NET, "clustered", 0.5, data=X[:0]), ValueError, "data:"),
    "activations NaN":     (lambda: compute_masks(NET, "clustered", 0.5, activations={"fc1": torch.full((4, 300), float("nan")), "fc2": torch.zeros(4, 100)}), ValueError, "activations['fc1']:"),
    "layers empty":        (lambda: compute_masks(NET, "magnitude", 0.5, layers=[]), ValueError, "layers:"),
    "layers unknown":      (lambda: prune(NET, "random_node", 0.5, layers=["fc9"]), ValueError, "layers:"),
    "layers int":          (lambda: compute_masks(NET, "magnitude", 0.5, layers=3), TypeError, "layers:"),
    "device unknown":      (lambda: compute_masks(NET, "magnitude", 0.5, device="gpu"), ValueError, "device:"),
    "device type":         (lambda: prune(NET, "magnitude", 0.5, device=0.5), TypeError, "device:"),
    "amount 1":            (lambda: prune(NET, "magnitude", 1.0), ValueError, "amount:"),
    "amount NaN":          (lambda: prune(NET, "random", float("nan")), ValueError, "amount:"),
    "amount negative":     (lambda: compute_masks(NET, "random_node", -0.1), ValueError, "amount:"),
    "amount str":          (lambda: compute_masks(NET, "magnitude", "0.5"), TypeError, "amount:"),
    "method":              (lambda: prune(NET, "l1", 0.5), ValueError, "method:"),
    "scope":               (lambda: prune(NET, "magnitude", 0.5, scope="net"), ValueError, "scope:"),
    "seed":                (lambda: prune(NET, "random", 0.5, seed=-2), ValueError, "seed:"),
    "progress":            (lambda: compute_masks(NET, "magnitude", 0.5, progress="no"), TypeError, "progress:"),
    "keep option":         (lambda: prune(NET, "clustered", 0.5, data=X, keep="median"), ValueError, "keep:"),
    "model":               (lambda: prune("lenet_300_100", "magnitude", 0.5), TypeError, "model:"),
    "model NaN weights":   (lambda: prune(nn.Sequential(nn.Linear(2, 2)).requires_grad_(False).apply(lambda m: m.weight.fill_(float("nan")) if isinstance(m, nn.Linear) else None), "magnitude", 0.5), ValueError, "model:"),
    "stage_outputs x":     (lambda: stage_outputs(NET, NAN), ValueError, "x:"),
    "stage_outputs batch": (lambda: stage_outputs(NET, X, batch_size=0), ValueError, "batch_size:"),
    "apply_masks type":    (lambda: apply_masks(copy.deepcopy(NET), {"fc1": {"weight": np.ones((300, 784))}}), TypeError, "masks:"),
    "sparsity input_shape": (lambda: sparsity_report(NET, input_shape=(3, 5)), ValueError, "input_shape:"),
    "cluster k":           (lambda: cluster_nodes(np.zeros((3, 2)), 4), ValueError, "k:"),
    "n_pruned n":          (lambda: n_pruned(-1, 0.5), ValueError, "n:"),
    "random_mask generator": (lambda: random_mask(torch.ones(4), 0.5, 0), TypeError, "generator:"),
}

@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_named(case):
    fn, err, name = BAD[case]
    with pytest.raises(err) as e: fn()
    assert str(e.value).startswith(name), str(e.value)
    assert "Traceback" not in str(e.value)

def test_float64_data_is_accepted_as_float32():
    x = images(32)
    assert all(torch.equal(a["bias"], b["bias"]) for a, b in zip(compute_masks(NET, "clustered", 0.5, data=x).values(),
                                                                 compute_masks(NET, "clustered", 0.5, data=x.double()).values()))


# ---------------------------------------------------------------- a layer used twice, Conv1d chains, data that does not fit
def test_a_sequential_reusing_a_layer_is_traced_not_walked():
    "nn.Sequential(..., l2, relu, l2, ...): not a chain of stages (the walk saw l2 once); the traced graph applies it twice."
    from netdeviation.deviation import deviation
    from netdeviation.graph import is_chain, trace
    torch.manual_seed(0)
    l2 = nn.Linear(8, 8)
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), l2, nn.ReLU(), l2, nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(40, 4)
    assert not is_chain(m) and sum(o.kind == "weighted" for o in trace(m).ops) == 4
    for method in ("magnitude", "clustered"):
        p = prune(m, method, 0.5, data=x)
        d = deviation(m, p, x)
        with torch.no_grad(): assert d.lhs == pytest.approx((p(x) - m(x)).norm().item(), rel=1e-4)
        assert d.lhs <= d.bound_rigorous

def test_a_conv1d_chain_reports_the_flops_of_its_traced_twin():
    from netdeviation.pruning import sparsity_report
    c1 = nn.Sequential(nn.Conv1d(2, 6, 3), nn.ReLU(), nn.Conv1d(6, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(30, 3)); c1.input_shape = (2, 10)
    class Wrap(nn.Module):
        def __init__(self): super().__init__(); self.seq, self.input_shape = c1, (2, 10)
        def forward(self, x): return self.seq(x)
    a, b = sparsity_report(c1), sparsity_report(Wrap())
    assert a.flops.tolist() == b.flops.tolist() == [6*8*2*3, 5*6*6*3, 30*3, 918]   # out channels × positions × fan-in

def test_data_that_does_not_fit_a_model_without_input_shape_is_named():
    m = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    with pytest.raises(ValueError, match=r"^x: images of shape \(5,\) do not fit the model"):
        prune(m, "clustered", 0.1, data=torch.randn(3, 5))
