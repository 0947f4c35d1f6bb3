"""Property test: on convex problems every γ-free bound whose status is 'proven' brackets the measured iteration count.

Random strongly convex (and some merely convex) quadratics and L2-regularised logistic regressions; "pruning" zeroes a
random fraction of the minimiser; full-batch gradient descent runs from there, unmasked (all weights move) or masked
(pruned weights stay 0, the problem masked retraining solves), until the gap to the *dense* optimum L* is at most ε.
The constants are the package's own certificates (`curvature` on Hessian-vector products restricted to the free
coordinates), never the known spectrum; the masked problem's minimiser (Newton in NumPy) gives `floor` = L*_masked − L*
and the distance. Measured counts: logistic by iterating GD in NumPy; quadratics by the exact GD trajectory in the
eigenbasis of the free block (NumPy `eigh`), cross-checked against iterated GD where the count is small."""
import math

import numpy as np
import pytest
import torch

from netdeviation.bounds import GAMMA_FREE, STATUS_KINDS, curvature, gamma_free_bounds, status_kind

LOWER, UPPER = ("smooth_lower", "strong_convexity_lower", "relative_lower"), ("convex_upper", "pl_upper")

def _op(M:np.ndarray):
    "v ↦ M v on float64 torch vectors: the Hessian-vector product of a quadratic with Hessian M."
    T = torch.tensor(M)
    return lambda v: T @ v

# ---------------------------------------------------------------- problems
def _quadratic(rng):
    d = int(rng.integers(4, 21))
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    lam = np.geomspace(1, 10**rng.uniform(0, 2.5), d)*10**rng.uniform(-1, 1)
    r = rng.random()
    if r < 0.15: lam[0] = 1e-6*lam[-1]          # the ill-conditioned case
    elif r < 0.25: lam[:int(rng.integers(1, d//2 + 1))] = 0.0   # convex, not strongly convex
    A = (Q*lam) @ Q.T; A = (A + A.T)/2
    w_opt = rng.normal(size=d)
    loss = lambda w: 0.5*(w - w_opt) @ A @ (w - w_opt)
    grad = lambda w: A @ (w - w_opt)
    return dict(kind="quadratic", d=d, A=A, loss=loss, grad=grad, hess=lambda w: A, w_opt=w_opt,
                h_lo=lambda keep: A[np.ix_(keep, keep)], h_hi=lambda keep: A[np.ix_(keep, keep)])

def _logistic(rng):
    d, n, lam = int(rng.integers(3, 11)), int(rng.integers(40, 121)), 10**rng.uniform(-1.5, -0.5)
    X = rng.normal(size=(n, d))*rng.uniform(0.5, 2, size=d)
    y = np.sign(X @ rng.normal(size=d) + rng.normal(size=n))
    sig = lambda z: 0.5*(1 + np.tanh(z/2))
    loss = lambda w: np.logaddexp(0, -y*(X @ w)).mean() + lam/2*w @ w
    grad = lambda w: -X.T @ (y*sig(-y*(X @ w)))/n + lam*w
    def hess(w): s = sig(X @ w); return X.T @ (X*(s*(1 - s))[:, None])/n + lam*np.eye(d)
    pb = dict(kind="logistic", d=d, loss=loss, grad=grad, hess=hess,
              h_lo=lambda keep: lam*np.eye(len(keep)),                                      # λI ≼ ∇²L
              h_hi=lambda keep: X[:, keep].T @ X[:, keep]/(4*n) + lam*np.eye(len(keep)))   # ∇²L ≼ XᵀX/(4n) + λI
    pb["w_opt"] = _newton(pb, np.arange(d))
    return pb

def _newton(pb, keep, iters=50):
    "The minimiser over the coordinates `keep` (the others 0), by Newton's method to machine precision."
    w = np.zeros(pb["d"])
    if pb["kind"] == "quadratic":
        w[keep] = np.linalg.lstsq(pb["A"][np.ix_(keep, keep)], (pb["A"] @ pb["w_opt"])[keep], rcond=None)[0]
        return w
    for _ in range(iters):
        g, H = pb["grad"](w)[keep], pb["hess"](w)[np.ix_(keep, keep)]
        w[keep] -= np.linalg.solve(H, g)
    return w

# ---------------------------------------------------------------- gradient descent
def _gd_count(pb, w, eta, target, keep, cap=200_000):
    "Iterated full-batch GD (masked: only `keep` moves): steps until loss ≤ target; None if not within `cap`."
    P = np.zeros(pb["d"]); P[keep] = 1
    for t in range(cap + 1):
        if pb["loss"](w) <= target: return t
        w = w - eta*P*pb["grad"](w)
    return None

def _quadratic_count(pb, w0, eta, target, keep, cap=10**9):
    "Exact GD on a quadratic in the eigenbasis of the free block: the gap is monotone for ηλ ≤ 1, so bisect; None if never."
    A, w_m = pb["A"], _newton(pb, keep)
    lam, V = np.linalg.eigh(A[np.ix_(keep, keep)])
    c = V.T @ (w0 - w_m)[keep]
    floor = pb["loss"](w_m)
    gap = lambda t: floor + 0.5*np.sum(lam*np.abs(1 - eta*lam)**(2*t)*c**2)
    if gap(0) <= target: return 0
    if gap(cap) > target: return None
    lo, hi = 0, 1
    while gap(hi) > target: lo, hi = hi, 2*hi
    while hi - lo > 1:
        mid = (lo + hi)//2
        lo, hi = (mid, hi) if gap(mid) > target else (lo, mid)
    return hi

# ---------------------------------------------------------------- one case
def _case(seed:int, kind:str, masked:bool)->dict:
    rng = np.random.default_rng(seed)
    pb = (_quadratic if kind == "quadratic" else _logistic)(rng)
    d, w_opt = pb["d"], pb["w_opt"]
    pruned = rng.random(d) < rng.uniform(0.2, 0.7)
    if pruned.all() or not pruned.any(): pruned[: 1] = True; pruned[-1] = False
    keep = np.flatnonzero(~pruned) if masked else np.arange(d)
    w_s = np.where(pruned, 0.0, w_opt)
    L_star = pb["loss"](w_opt)
    # the constants: the package's certificates on the free block of the Hessian bounds (not the known spectrum)
    lo, hi = curvature(_op(pb["h_lo"](keep)), len(keep)), curvature(_op(pb["h_hi"](keep)), len(keep))
    dense_lo, dense_hi = curvature(_op(pb["h_lo"](np.arange(d))), d), curvature(_op(pb["h_hi"](np.arange(d))), d)
    assert lo.exact and hi.exact and dense_lo.exact and dense_hi.exact
    mu, beta = lo.mu, hi.beta
    eta = rng.choice([0.05, 0.2, 0.4, 0.49, 0.7, 1.0, 1.3])/dense_hi.beta   # ηβ ≤ the factor: both problems share η
    w_m = _newton(pb, keep)
    floor = max(pb["loss"](w_m) - L_star, 0.0)
    delta_s = pb["loss"](w_s) - L_star
    eps = float(delta_s*10**rng.uniform(-6, -0.5))
    if masked and rng.random() < 0.6: eps = floor + (delta_s - floor)*10**rng.uniform(-6, -0.5)   # a reachable target
    # the original training: dense GD from a random start, its count t_i; t_initial = t_i − 1 (the PL bound's last step)
    w_i = w_opt + rng.normal(size=d)*3
    full = np.arange(d)
    eta_ok = eta*dense_hi.beta <= 1
    t_i = (_quadratic_count if kind == "quadratic" else _gd_count)(pb, w_i, eta, L_star + eps, full) if eta_ok else None
    b = gamma_free_bounds(delta_s, eps, eta, mu, beta, float(((w_s - w_m)**2).sum()), delta_i=pb["loss"](w_i) - L_star,
                          t_initial=(t_i - 1) if t_i and t_i > 1 else None, certified=True,
                          mu_initial=dense_lo.mu, floor=floor)
    proven = [k for k in GAMMA_FREE if status_kind(b.status[k]) == "proven"]
    measured = None
    if proven:
        if floor >= eps: measured = math.inf   # no point of the masked problem reaches L* + ε
        elif kind == "quadratic": measured = _quadratic_count(pb, w_s, eta, L_star + eps, keep)
        else: measured = _gd_count(pb, w_s, eta, L_star + eps, keep)
        if measured is None: measured = math.inf
    return dict(seed=seed, kind=kind, masked=masked, eta_beta=eta*beta, floor=floor, eps=eps, measured=measured,
                bounds=b, proven=proven, pb=pb, w_s=w_s, keep=keep, eta=eta, target=L_star + eps)

def _check(c:dict):
    b, t = c["bounds"], c["measured"]
    for k in GAMMA_FREE:
        assert status_kind(b.status[k]) in STATUS_KINDS
        if math.isnan(b.iterations[k]): assert b.status[k].startswith(("inapplicable: ", "undefined: ")), (k, b.status[k])
    for k in c["proven"]:
        v = b.iterations[k]
        if k in LOWER: assert v <= t, (c["seed"], c["kind"], c["masked"], k, v, t, b.status[k])
        if k in UPPER: assert t <= v, (c["seed"], c["kind"], c["masked"], k, v, t, b.status[k])

def _finite(c:dict)->bool: return c["measured"] is not None and c["measured"] < math.inf

def _cases(seeds):
    return [_case(s, kind, masked) for s in seeds for kind in ("quadratic", "logistic") for masked in (False, True)]

# ---------------------------------------------------------------- the property
def _run(seeds):
    cases = _cases(seeds)
    for c in cases: _check(c)
    n_proven = sum(len(c["proven"]) for c in cases if _finite(c))
    kinds = {}
    for c in cases:
        for k in GAMMA_FREE: kinds[status_kind(c["bounds"].status[k])] = kinds.get(status_kind(c["bounds"].status[k]), 0) + 1
    print(f"{len(cases)} cases; statuses over {len(cases)*len(GAMMA_FREE)} bounds: {kinds}; "
          f"proven and bracketing a finite count: {n_proven}; unreachable targets (all bounds inf, proven): {sum(c['floor'] >= c['eps'] for c in cases)}")
    return cases

def test_proven_bounds_bracket_gd_on_300_convex_problems():
    cases = _run(range(80))   # 80 seeds × 2 problems × masked/unmasked = 320 cases
    assert len(cases) >= 300
    by = lambda k: sum(k in c["proven"] for c in cases)
    for k in (*LOWER, *UPPER): assert by(k) >= 40, (k, by(k))
    finite = lambda k: sum(k in c["proven"] and _finite(c) for c in cases)
    for k in (*LOWER, *UPPER): assert finite(k) >= 30, (k, finite(k))          # ... against a finite measured count   # every bound is proven, and so tested, many times
    assert any(c["masked"] and c["measured"] == math.inf for c in cases)            # unreachable masked targets occur
    assert any(c["masked"] and 0 < c["floor"] < c["eps"] and c["proven"] for c in cases)   # and reachable ones with a floor

@pytest.mark.slow
def test_proven_bounds_bracket_gd_on_more_convex_problems():
    _run(range(80, 480))

def test_closed_form_count_is_iterated_gd():
    "The quadratics' count from the eigenbasis equals iterated gradient descent where that is short."
    n = 0
    for s in range(40):
        for masked in (False, True):
            c = _case(s, "quadratic", masked)
            if c["eta"]*curvature(_op(c["pb"]["A"]), c["pb"]["d"]).beta > 1: continue
            t = _quadratic_count(c["pb"], c["w_s"], c["eta"], c["target"], c["keep"])
            if t is None or t > 3000: continue
            assert _gd_count(c["pb"], c["w_s"], c["eta"], c["target"], c["keep"], cap=3000) == t
            n += 1
    assert n >= 20

def test_uncertified_constants_are_estimates():
    "The same numbers without `certified=True` are estimates; the one-point PL ratio would not be a bound."
    b = gamma_free_bounds(1.0, 0.01, 0.1, 0.5, 2.0, 3.0)
    assert {status_kind(s) for k, s in b.status.items() if k != "relative_lower"} == {"estimate"}
    assert b.status["relative_lower"] == "undefined: needs delta_i (Δ_i) and t_initial"
    # the quadratic: eigenvalues 1 and 1e-6; the PL ratio at one point overestimates μ, the certificate does not
    A = np.diag([1.0, 1e-6]); w_opt = np.array([1.0, 1.0]); w_s = np.array([1.0, 0.0])
    mu = curvature(_op(A), 2).mu
    assert 0 < mu <= 1e-6
    delta = 0.5*(w_s - w_opt) @ A @ (w_s - w_opt)
    g = A @ (w_s - w_opt)
    assert (g @ g)/(2*delta) >= 1e-6   # the PL ratio at W_s: no smaller than the true constant, in general far above

# ---------------------------------------------------------------- the certificates on a (non-convex) network
def test_hessian_operator_certificates_match_the_exact_masked_hessian():
    "`hessian_operator` on the unpruned weights: exactly the kept block of torch's Hessian; a negative Lanczos certificate is never wrong."
    from collections import OrderedDict
    import torch.nn.functional as F
    from torch import nn
    from torch.nn.utils import prune as torch_prune
    from netdeviation.bounds import hessian_operator
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(fc1=nn.Linear(5, 4), act=nn.Tanh(), fc2=nn.Linear(4, 3))).double()
    x, y = torch.randn(64, 5, dtype=torch.float64), torch.randint(0, 3, (64,))
    for m in (net.fc1, net.fc2): torch_prune.random_unstructured(m, "weight", 0.4)
    keep = torch.cat([net.fc1.weight_mask.flatten(), net.fc2.weight_mask.flatten()]).bool()
    W1, W2 = net.fc1.weight.detach().clone(), net.fc2.weight.detach().clone()
    b1, b2 = net.fc1.bias.detach(), net.fc2.bias.detach()
    def loss(flat):
        a, b = flat[:W1.numel()].reshape(W1.shape), flat[W1.numel():].reshape(W2.shape)
        return F.cross_entropy(torch.tanh(x @ a.T + b1) @ b.T + b2, y)
    H = torch.autograd.functional.hessian(loss, torch.cat([W1.flatten(), W2.flatten()]))[keep][:, keep]
    lam = torch.linalg.eigvalsh(H)
    op, dim = hessian_operator(net, x, y, batch_size=16)
    assert dim == int(keep.sum())
    c = curvature(op, dim)
    assert c.exact and c.mu <= lam[0].item() and c.beta >= lam.abs().max().item()
    assert abs(c.lam_min - lam[0].item()) < 1e-8 and abs(c.lam_max - lam[-1].item()) < 1e-8
    for steps in (3, 8, 20):
        l = curvature(op, dim, max_exact=0, steps=steps)
        assert l.lam_min >= lam[0].item() - 1e-9 and l.lam_max <= lam[-1].item() + 1e-9   # Ritz values inside the spectrum
        if l.negative: assert lam[0].item() < 0 and lam[0].item() <= l.rayleigh + 1e-12 # a certificate is never wrong
    assert (lam[0] < 0).item() == c.negative
