"""Cost of the retraining advisor against one training step of the same model on the same data.

For each model (the `paper` baselines of LeNet-300-100 and of the zoo CNN LeNet-5 on MNIST, pruned by `--method` at
`--amount`), in the same process, side by side:

- `advise_s`: one `advise(pruned, baseline, data, features=f, advisor=adv)` call, with the features already measured
  and the advisor already loaded (median of `--repeats` calls): what the answer costs AFTER the feature pass;
- `measure_features_s`: `measure_features` itself (the feature pass: evaluations on the pruning images, the
  deviation, Theorem 1's gradients), which a plain `advise(...)` call runs first — the first pruning of the original
  in this process, so it also measures the original once (L*, ∇L(W*), ∇L(W_initial), acc*, activations: see
  `netdeviation.measure.original`); `measure_features_again_s`: the same for another pruning of the same original
  (seed 1), which reads the original's quantities from that cache;
- `step_s`: one optimiser step of a fresh copy of the model with the baseline's config, as `fit`'s inner loop takes it
  (batch indexing, forward, backward, step; median of `--steps` steps after `--warmup`);
- `forecaster`: one update of the live forecaster the advice builds (`advice.forecaster()`, fed a synthetic recovery
  curve at geometric checks; median over the updates) — or null, with the reason, while `netdeviation.forecast` is
  absent.

`advise_fraction_of_step` = advise_s / step_s, `forecaster.update_fraction_of_step` likewise; the old goal (advise
<= 10% of one epoch) is kept in `goals`, an epoch being `steps_per_epoch` steps, beside the same goal for the feature
pass (`measure_features_fraction_of_epoch`, and `..._again` for a second pruning of the original). `load_advisor` is timed once for the
run, in a fresh process whose cache folder is a new empty temporary one: the first call reads the shipped JSON
(`first_load_s`, import time excluded and reported apart); the child forbids refitting (`fit_advisor` replaced by a
function that raises), so `refit` false is a measured fact; the goal is <= 2 s. Wall times vary with the machine and
its load; the CPU time of this process is reported beside each (`*_cpu_s`). Progress goes to stderr; the JSON object
to stdout and, atomically, to `--out` if given.

`--quick` (smoke runs): the originals are trained here for `--quick-steps` steps on the `--n-train` images instead of
read from (or trained into) the cache of full `paper` baselines.

    python bench/advisor.py [--models lenet_300_100 lenet5] [--n-train 55000] [--n-val 5000] [--method magnitude]
                            [--amount 0.8] [--repeats 5] [--steps 20] [--warmup 3] [--threads 2] [--quick]
                            [--quick-steps 20] [--skip-load] [--out bench_advisor.json]
"""
import argparse, copy, importlib.util, json, math, os, platform, statistics, subprocess, sys, tempfile, time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from netdeviation.advisor import CORPUS_VERSION, MODEL_FILE, advise, load_advisor
from netdeviation.corpus import measure_features
from netdeviation.data import load_mnist
from netdeviation.models import get_model
from netdeviation.pruning import METHODS, prune
from netdeviation.retraining import check_steps
from netdeviation.training import Baseline, TrainRecord, fit, get_baseline, get_config, make_optimizer, seed_everything

GOAL_EPOCH = 0.10  # advise (features given) <= 10% of one training epoch
GOAL_LOAD_S = 2.0  # the first load_advisor() in a fresh process
LOAD = """
import json, time
t0 = time.perf_counter()
import netdeviation.advisor as A
t1 = time.perf_counter()
refits = []
def refit(*a, **k):
    refits.append(1); raise RuntimeError("load_advisor refitted the advisor")
A.fit_advisor = A._fit = refit  # reading the shipped JSON must never fit
c, t = time.process_time(), time.perf_counter()
try: a, err = A.load_advisor(), None
except Exception as e: a, err = None, f"{type(e).__name__}: {e}"
dt, dc = time.perf_counter() - t, time.process_time() - c
print(json.dumps({"import_s": t1 - t0, "first_load_s": dt, "first_load_cpu_s": dc, "advisor": repr(a), "refit": bool(refits), "error": err}))
"""

def say(*a): print("[bench/advisor]", *a, file=sys.stderr, flush=True)

def sig(v:float, n:int=4)->float: return float(f"{v:.{n}g}")

def timed(fn)->tuple:
    "The value of `fn()`, its wall time and the CPU time of this process (all threads)."
    t, c = time.perf_counter(), time.process_time(); v = fn()
    return v, time.perf_counter() - t, time.process_time() - c

def load_times(adv)->dict:
    "The first `load_advisor()` in a fresh process with an empty temporary cache folder (import time apart)."
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "NETDEVIATION_CACHE": d}  # the user's cache is neither used nor changed; none is needed
        r = json.loads(subprocess.run([sys.executable, "-c", LOAD], capture_output=True, text=True, check=True,
                                      env=env).stdout.strip().splitlines()[-1])
        written = sum(len(f) for _, _, f in os.walk(d))
    import netdeviation
    return {"first_load_s": sig(r["first_load_s"]), "first_load_cpu_s": sig(r["first_load_cpu_s"]), "import_s": sig(r["import_s"]),
            "advisor": r["advisor"], "same_advisor": r["advisor"] == repr(adv), "refit": r["refit"], "error": r["error"],
            "cache_files_written": written, "model_file_bytes": (Path(netdeviation.__file__).parent/MODEL_FILE).stat().st_size,
            "goal_s": GOAL_LOAD_S,
            "note": "in a fresh process (import time excluded, reported as import_s) with this process's environment and an "
                    "empty temporary cache; it reads the shipped JSON, and refitting there raises"}

def step_times(name:str, data, config, n:int, warmup:int)->tuple[float, float]:
    "Median wall and CPU seconds of one optimiser step of a fresh `name` with `config`, as `fit` takes it."
    seed_everything(0); net = get_model(name).train()
    opt = make_optimizer(net, config)
    g = torch.Generator().manual_seed(0)
    x, y, walls, cpus = data.x_train, data.y_train, [], []
    for i in range(warmup + n):
        idx = torch.randperm(len(x), generator=g)[:config.batch_size]
        t, c = time.perf_counter(), time.process_time()
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); loss.item()
        if i >= warmup: walls.append(time.perf_counter() - t); cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)

def forecaster_times(advice, step_s:float, n:int=20)->dict:
    "One update of `advice.forecaster()` fed `n` checks of a synthetic recovery curve; null with the reason when it cannot run."
    if importlib.util.find_spec("netdeviation.forecast") is None:
        return {"update_s": None, "update_fraction_of_step": None, "updates": 0, "note": "forecast module absent"}
    try:
        fc = advice.forecaster()
        ref, start = advice.reference_acc, advice.reference_acc - advice.features.get("acc_gap", 0.1)
        goal = max(start, ref - advice.tolerance - 1e-3)  # the curve closes in on the target without meeting it: every update forecasts
        tau = max(advice.iterations, 10.0)
        walls = []
        for s in (0, *check_steps(max(10*n, round(advice.recommended_cap*advice.iters_per_epoch)), 0.1)[:n - 1]):
            acc = start + (goal - start)*(1 - math.exp(-s/tau))
            t = time.perf_counter(); fc.update(s, acc, 0.1 + (ref - acc)); walls.append(time.perf_counter() - t)
    except Exception as e:  # an API still moving: say so rather than fail the whole bench
        return {"update_s": None, "update_fraction_of_step": None, "updates": 0, "note": f"forecaster failed: {type(e).__name__}: {e}"}
    u = statistics.median(walls)
    return {"update_s": sig(u), "update_max_s": sig(max(walls)), "update_fraction_of_step": sig(u/step_s), "updates": len(walls),
            "last_forecast": fc.last.short() if hasattr(fc.last, "short") else str(fc.last),
            "note": "median over the updates of one run's checks (step 0, then geometric); the curve never meets the target"}

def original(name:str, data, full, quick_steps:int|None)->Baseline:
    "The `paper` original: the cached baseline on all training images, or (--quick) one trained here for a few steps."
    if quick_steps is None: return get_baseline(name, "paper", data=full, progress=False)
    cfg = get_config("paper")
    seed_everything(0); net = get_model(name); w0 = copy.deepcopy(net.state_dict())
    hist = fit(net, data, cfg, steps=quick_steps, progress=False, eval_test=False)
    return Baseline.from_model(net.eval(), w_initial=w0, t_initial=hist[-1]["epoch"], config=cfg,
                               record=TrainRecord.from_fit(cfg, len(data.x_train), hist))

def model_case(name:str, data, full, method:str, amount:float, repeats:int, steps:int, warmup:int, adv, quick_steps)->dict:
    "Features, advise-with-features, one training step and one forecaster update of `name`, measured one after the other."
    base = original(name, data, full, quick_steps)
    pruned = prune(base.model, method, amount, data=data.x_val)
    say(f"{name}: measure_features on {len(data.x_val)} pruning images")
    f, feat_s, feat_cpu = timed(lambda: measure_features(pruned, base, data, method=method))
    again = prune(base.model, method, amount, data=data.x_val, seed=1)
    say(f"{name}: measure_features of a second pruning of the same original")
    _, again_s, again_cpu = timed(lambda: measure_features(again, base, data, method=method))
    say(f"{name}: advise with the features, {repeats} calls")
    calls = [timed(lambda: advise(pruned, base, data, features=f, advisor=adv, method=method)) for _ in range(repeats)]
    a = calls[-1][0]
    adv_s, adv_cpu = statistics.median(c[1] for c in calls), statistics.median(c[2] for c in calls)
    say(f"{name}: {steps} training steps at batch size {base.config.batch_size}")
    step_s, step_cpu = step_times(name, data, base.config, steps, warmup)
    spe = math.ceil(len(data.x_train)/base.config.batch_size)
    say(f"{name}: forecaster updates")
    return {"n_train": len(data.x_train), "n_val": len(data.x_val), "batch_size": base.config.batch_size,
            "method": method, "amount": amount, "original": "trained here (--quick)" if quick_steps else "cached paper baseline",
            "measure_features_s": sig(feat_s), "measure_features_cpu_s": sig(feat_cpu),
            "measure_features_again_s": sig(again_s), "measure_features_again_cpu_s": sig(again_cpu),
            "advise_s": sig(adv_s), "advise_cpu_s": sig(adv_cpu), "advise_repeats": repeats,
            "step_s": sig(step_s), "step_cpu_s": sig(step_cpu), "steps_timed": steps, "steps_per_epoch": spe,
            "advise_fraction_of_step": sig(adv_s/step_s), "advise_fraction_of_step_cpu": sig(adv_cpu/step_cpu),
            "advise_fraction_of_epoch": sig(adv_s/(step_s*spe)),
            "measure_features_fraction_of_step": sig(feat_s/step_s),
            "measure_features_fraction_of_epoch": sig(feat_s/(step_s*spe)), "measure_features_again_fraction_of_epoch": sig(again_s/(step_s*spe)),
            "advise_with_features_pass_fraction_of_step": sig((feat_s + adv_s)/step_s),
            "forecaster": forecaster_times(a, step_s),
            "advice": {"status": a.status, "epochs": a.epochs, "interval80_epochs": [v/a.iters_per_epoch for v in a.interval80],
                       "interval95_epochs": [v/a.iters_per_epoch for v in a.interval95], "p_recover": a.p_recover,
                       "recommended_cap": a.recommended_cap, "in_domain": a.in_domain, "out_of_domain": a.out_of_domain,
                       "advisor": a.advisor}}

def write_atomic(path:Path, text:str):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp"); tmp.write_text(text); os.replace(tmp, path)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["lenet_300_100", "lenet5"])
    p.add_argument("--n-train", type=int, default=None, help="the first n training images (default all 55,000)")
    p.add_argument("--n-val", type=int, default=None, help="the first n pruning images (default all 5,000)")
    p.add_argument("--method", default="magnitude", choices=METHODS)
    p.add_argument("--amount", type=float, default=0.8)
    p.add_argument("--repeats", type=int, default=5, help="advise calls; the median counts")
    p.add_argument("--steps", type=int, default=20, help="training steps timed; the median counts")
    p.add_argument("--warmup", type=int, default=3, help="training steps taken before timing")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="train the originals here for --quick-steps steps (smoke runs)")
    p.add_argument("--quick-steps", type=int, default=20)
    p.add_argument("--skip-load", action="store_true", help="do not time the first `load_advisor` in a fresh process (null)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON object here (atomically)")
    args = p.parse_args()
    for k in ("repeats", "steps", "quick_steps"):
        if getattr(args, k) < 1: p.error(f"--{k.replace('_', '-')}: must be >= 1")
    if args.warmup < 0: p.error("--warmup: must be >= 0")
    torch.set_num_threads(args.threads)
    full = load_mnist()
    n_train, n_val = args.n_train or len(full.x_train), args.n_val or len(full.x_val)
    if not (0 < n_train <= len(full.x_train) and 0 < n_val <= len(full.x_val)):
        p.error(f"--n-train / --n-val: at most {len(full.x_train)} / {len(full.x_val)} images, got {n_train} / {n_val}")
    data = replace(full, x_train=full.x_train[:n_train], y_train=full.y_train[:n_train],
                   x_val=full.x_val[:n_val], y_val=full.y_val[:n_val])
    out = {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
           "load_avg_1min": round(os.getloadavg()[0], 2), "torch": torch.__version__, "advisor_version": CORPUS_VERSION,
           "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"), "quick": args.quick,
           "note": "wall times depend on the machine and its load; compare the ratios, measured in the same run"}
    adv = load_advisor()
    say("load_advisor: first call in a fresh process (empty temporary cache)" if not args.skip_load else "load_advisor: skipped")
    out["load_advisor"] = None if args.skip_load else load_times(adv)
    for name in args.models:
        out[name] = model_case(name, data, full, args.method, args.amount, args.repeats, args.steps, args.warmup, adv,
                               args.quick_steps if args.quick else None)
    out["goals"] = {"advise_fraction_of_epoch_le_0.10": {m: out[m]["advise_fraction_of_epoch"] <= GOAL_EPOCH for m in args.models},
                    "measure_features_fraction_of_epoch_le_0.10": {m: out[m]["measure_features_fraction_of_epoch"] <= GOAL_EPOCH for m in args.models},
                    "load_advisor_first_s_le_2": None if out["load_advisor"] is None else out["load_advisor"]["first_load_s"] <= GOAL_LOAD_S,
                    "goal_advise_fraction_of_epoch": GOAL_EPOCH, "goal_load_s": GOAL_LOAD_S}
    text = json.dumps(out, indent=1)
    if args.out is not None: write_atomic(args.out, text + "\n")
    print(text)

if __name__ == "__main__": main()
