"""Speed of `deviation_sweep` against a naive sweep that deep-copies, prunes with torch and recomputes everything.

A full Net Deviation sweep (random / magnitude / clustered x amounts 0.1..0.8 on the 5,000 pruning images) of the
`paper`-config LeNet-300-100 and LeNet-5, run both ways in the same process; the numbers must agree to 1e-6
(relative). Prints one JSON object. Goals: >= 3x faster than naive; the LeNet-300-100 sweep under 30 s on 2 cores.
`masks_s` is the time `compute_masks` alone takes for the sweep's 24 masks (mostly clustered pruning's k-means), which
both sweeps pay; `speedup_without_masks` is the speedup of everything else. The naive LeNet-5 sweep recomputes every
per-sample Jacobian norm for every amount: the whole run takes tens of minutes on 2 busy cores.

A ResNet case (`--resnet`, default resnet20 of the zoo, BatchNorm and residual adds, untrained: the time does not
depend on the weights) times the graph path for one pruned copy (magnitude, 50%) over the same images, as multiples of
one forward pass of both networks: `rigorous_x` (both networks run op by op, each layer's own change, the pruned
layers' operator norms: what every pruned network of a sweep pays) and `paper_x` (the first-order form's one-off
share: the original's slopes and operator norms, paid once per sweep). Goals: rigorous <= 5x, paper <= 60x.

    python bench/deviation.py [--models lenet_300_100 lenet5] [--n 5000] [--amounts 0.1 ... 0.8] [--threads 2]
                              [--resnet resnet20 | --resnet none] [--resnet-n 1000]
"""
import argparse, itertools, json, math, os, platform, time

import numpy as np
import torch
import torch.nn.functional as F

from netdeviation.data import load_mnist
from netdeviation.deviation import (AMOUNTS, deviation_sweep, jacobian_norms, lipschitz, net_deviation, operator_norm,
                                    original_activations)
from netdeviation.deviation import deviation, graph_activations
from netdeviation.graph import gain, stages
from netdeviation.graph import effective
from netdeviation.pruning import compute_masks, prune
from netdeviation.training import get_baseline

METHODS = ("random", "magnitude", "clustered")
COLUMNS = ("lhs", "bound_paper", "bound_rigorous", "dev", "D", "dev_rigorous", "D_rigorous", "tightness", "rel_dev")

def _norm(t): return torch.linalg.vector_norm(t, dtype=torch.float64).item()

def _conv_or_linear(layer, y, w, b):
    return F.linear(y, w, b) if isinstance(layer, torch.nn.Linear) else layer._conv_forward(y, w, b)

@torch.no_grad()
def naive_point(model, x, method, amount, seed=0):
    "Everything from scratch: a torch-pruned deep copy, both full forward passes, every norm recomputed."
    pruned = prune(model, method, amount, data=x, seed=seed)
    prefix, st = stages(model)
    st_p = stages(pruned)[1]
    y, yp, ins, zs, dy = prefix(x), prefix(x), [], [], []
    for s, sp in zip(st, st_p):
        ins.append(y); z = s.layer(y); zs.append(z); y = s.post(z)
        yp = sp.post(sp.layer(yp)); dy.append(_norm(yp - y))
    first, change, jac, gain = [], [], [1.0], [1.0]
    for i, (s, sp) in enumerate(zip(st, st_p)):
        bias = s.layer.bias is not None
        dz = _conv_or_linear(s.layer, ins[i], effective(sp.layer) - s.layer.weight,
                             effective(sp.layer, "bias") - s.layer.bias if bias else None)
        first.append(_norm(torch.func.jvp(s.post, (zs[i],), (dz,))[1]))
        change.append(lipschitz(s.post)*_norm(dz))
        if i: jac.append(jacobian_norms(s.layer, s.post, ins[i]).max().item())
        if i: gain.append(lipschitz(s.post)*operator_norm(s.layer, tuple(ins[i].shape[1:]), effective(sp.layer)))
    eps_p = [first[l]*math.prod(jac[l+1:]) for l in range(len(st))]
    eps_r = [change[l]*math.prod(gain[l+1:]) for l in range(len(st))]
    lhs, bp, br = dy[-1], sum(eps_p), sum(eps_r)
    return {"lhs": lhs, "bound_paper": bp, "bound_rigorous": br, "dev": lhs - bp, "dev_rigorous": lhs - br,
            "tightness": lhs/bp if bp > 0 else math.nan, "rel_dev": lhs/_norm(y)}

def naive_sweep(model, x, amounts, methods=METHODS):
    rows = {m: [naive_point(model, x, m, a) for a in amounts] for m in methods}
    for m, rs in rows.items():
        for col in ("dev", "dev_rigorous"):
            for r, d in zip(rs, net_deviation([r[col] for r in rs])): r["D" if col == "dev" else "D_rigorous"] = d
    return [r for m in methods for r in rows[m]]

def max_rel_diff(df, rows):
    a = df[list(COLUMNS)].to_numpy(float)
    b = np.array([[r[c] for c in COLUMNS] for r in rows])
    if not (np.isnan(a) == np.isnan(b)).all(): return math.inf
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    return float((np.abs(a - b)/np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-30)).max())

def resnet_case(name:str, x:torch.Tensor)->dict:
    "Times of the graph path for one pruned copy of a zoo ResNet, as multiples of a forward pass of both networks."
    from netdeviation.models import get_model
    torch.manual_seed(0)
    model = get_model(name).eval()
    pruned = prune(model, "magnitude", 0.5)
    with torch.no_grad():
        t = time.perf_counter(); model(x); pruned(x); fwd = time.perf_counter() - t
    a = graph_activations(model, x)
    t = time.perf_counter(); d = deviation(model, pruned, activations=a); first = time.perf_counter() - t
    a.cache = {k: v for k, v in a.cache.items() if not (isinstance(k, tuple) and k[0] == "gain")}  # keep the once-per-sweep share
    t = time.perf_counter(); deviation(model, pruned, activations=a); warm = time.perf_counter() - t
    return {"model": name, "n_images": len(x), "forward_both_s": round(fwd, 3), "first_call_s": round(first, 2),
            "rigorous_s": round(warm, 2), "rigorous_x": round(warm/fwd, 1), "paper_s": round(first - warm, 2),
            "paper_x": round((first - warm)/fwd, 1), "lhs": d.lhs, "bound_rigorous": d.bound_rigorous,
            "rigorous_holds": d.lhs <= d.bound_rigorous}

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["lenet_300_100", "lenet5"])
    p.add_argument("--n", type=int, default=5000, help="pruning images")
    p.add_argument("--amounts", nargs="+", type=float, default=list(AMOUNTS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--resnet", default="resnet20", help="zoo ResNet of the graph-path case, or 'none'")
    p.add_argument("--resnet-n", type=int, default=1000, help="pruning images of the ResNet case")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x = load_mnist().x_val[:args.n]
    out = {"threads": args.threads, "n_images": len(x), "methods": list(METHODS), "amounts": args.amounts,
           "norm": "spectral", "reduce": "max", "cpu": platform.processor() or platform.machine(),
           "load_avg_1min": os.getloadavg()[0], "torch": torch.__version__}
    for name in args.models:
        model = get_baseline(name, "paper", progress=False).model
        acts = original_activations(model, x)
        t = time.perf_counter()
        for m, a in itertools.product(METHODS, args.amounts): compute_masks(model, m, a, data=x, activations=acts.outputs)
        masks = time.perf_counter() - t
        t = time.perf_counter(); df = deviation_sweep(model, x, METHODS, args.amounts, progress=False); fast = time.perf_counter() - t
        t = time.perf_counter(); rows = naive_sweep(model, x, args.amounts); naive = time.perf_counter() - t
        diff = max_rel_diff(df, rows)
        out[name] = {"sweep_s": round(fast, 2), "naive_s": round(naive, 2), "speedup": round(naive/fast, 2),
                     "masks_s": round(masks, 2), "speedup_without_masks": round((naive - masks)/(fast - masks), 2),
                     "max_rel_diff": diff, "agree_1e-6": diff <= 1e-6, "points": len(df),
                     "rigorous_holds": bool((df.bound_rigorous >= df.lhs).all())}
    if args.resnet != "none": out["resnet"] = resnet_case(args.resnet, x[:args.resnet_n])
    small = out.get("lenet_300_100")  # null goal: that model was not measured
    out["goals"] = {"speedup_ge_3": {m: out[m]["speedup"] >= 3 for m in args.models},
                    "lenet_300_100_sweep_lt_30s": None if small is None else small["sweep_s"] < 30,
                    "resnet_rigorous_le_5x": None if "resnet" not in out else out["resnet"]["rigorous_x"] <= 5,
                    "resnet_paper_le_60x": None if "resnet" not in out else out["resnet"]["paper_x"] <= 60}
    print(json.dumps(out, indent=1))

if __name__ == "__main__": main()
