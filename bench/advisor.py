"""Cost of the retraining advisor against one training epoch of the same model on the same data.

For each model (the `paper` baselines of LeNet-300-100 and of the zoo CNN LeNet-5 on MNIST, pruned by `--method` at
`--amount`), in the same process, side by side:

- `advise_s`: one `advise(pruned, baseline, data, features=f, advisor=adv)` call, with the features already measured
  and the advisor already loaded (median of `--repeats` calls): what the answer costs AFTER the deviation pass;
- `measure_features_s`: `measure_features` itself (the deviation pass, evaluations on the pruning images, Theorem 1's
  gradients), which a plain `advise(...)` call runs first;
- `epoch_s`: one epoch of `netdeviation.training.fit` of a fresh copy of the model with the baseline's config on the
  same training images (it includes the validation pass `fit` makes every epoch).

`advise_fraction_of_epoch` = advise_s / epoch_s; the goal is <= 0.10 (`goals`). The ratios of `measure_features`
and of advise-with-features to an epoch are reported beside it. `advise_1thread_s` repeats the advise calls with
scikit-learn's OpenMP pool held at one thread (threadpoolctl): the advisor predicts one row, and on a loaded machine
a pool of several threads can cost more than the prediction. `load_advisor` is timed once for the run, in two fresh
processes sharing a new temporary cache folder (so the user's cache is neither used nor changed; import time
excluded): the first call fits the shipped advisor and caches it (`first_fit_s`), the second loads it
(`cached_load_s`).
Wall times vary with the machine and with what else runs on it; the CPU time of this process is reported beside
each (`*_cpu_s`). Progress goes to stderr; the JSON object to stdout and, atomically, to `--out` if given.

    python bench/advisor.py [--models lenet_300_100 lenet5] [--n-train 55000] [--n-val 5000] [--method magnitude]
                            [--amount 0.8] [--repeats 5] [--threads 2] [--skip-load] [--out bench_advisor.json]
"""
import argparse, json, os, platform, statistics, subprocess, sys, tempfile, time
from dataclasses import replace
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

from netdeviation.advisor import CORPUS_VERSION, advise, corpus_runs, load_advisor
from netdeviation.corpus import measure_features
from netdeviation.data import load_mnist
from netdeviation.models import get_model
from netdeviation.pruning import METHODS, prune
from netdeviation.training import fit, get_baseline, seed_everything

GOAL = 0.10  # advise (features given) <= 10% of one training epoch
LOAD = ("import json, time\nfrom netdeviation.advisor import load_advisor\n"
        "t, c = time.perf_counter(), time.process_time(); a = load_advisor()\n"
        "print(json.dumps([time.perf_counter() - t, time.process_time() - c, repr(a)]))")

def say(*a): print("[bench/advisor]", *a, file=sys.stderr, flush=True)

def timed(fn)->tuple:
    "The value of `fn()`, its wall time and the CPU time of this process (all threads)."
    t, c = time.perf_counter(), time.process_time(); v = fn()
    return v, time.perf_counter() - t, time.process_time() - c

def load_times()->dict:
    "`load_advisor` in two fresh processes sharing a new temporary cache folder: the first fits it, the second loads it."
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "NETDEVIATION_CACHE": d}  # the user's cache is neither used nor changed
        (fit_s, fit_cpu, adv), (load_s, load_cpu, again) = (
            json.loads(subprocess.run([sys.executable, "-c", LOAD], capture_output=True, text=True, check=True,
                                      env=env).stdout.strip().splitlines()[-1]) for _ in range(2))
    return {"corpus_runs": len(corpus_runs()), "advisor": adv, "same_advisor": adv == again,
            "first_fit_s": round(fit_s, 3), "first_fit_cpu_s": round(fit_cpu, 3),
            "cached_load_s": round(load_s, 3), "cached_load_cpu_s": round(load_cpu, 3),
            "note": "each in a fresh process (import time excluded) with this process's environment; the first fits "
                    "the advisor on the shipped corpus and caches it, the second reads it from the cache folder"}

def model_case(name:str, data, method:str, amount:float, repeats:int, adv)->dict:
    "Features, advise-with-features and one training epoch of `name`, measured one after the other."
    base = get_baseline(name, "paper", data=load_mnist(), progress=False)  # the cached baseline (all training images)
    pruned = prune(base.model, method, amount, data=data.x_val)
    say(f"{name}: measure_features on {len(data.x_val)} pruning images")
    f, feat_s, feat_cpu = timed(lambda: measure_features(pruned, base, data, method=method))
    say(f"{name}: advise with the features, {repeats} calls")
    calls = [timed(lambda: advise(pruned, base, data, features=f, advisor=adv)) for _ in range(repeats)]
    with threadpool_limits(1):  # the same calls with scikit-learn's OpenMP pool at one thread
        one = [timed(lambda: advise(pruned, base, data, features=f, advisor=adv)) for _ in range(repeats)]
    a = calls[-1][0]
    adv_s, adv_cpu = statistics.median(c[1] for c in calls), statistics.median(c[2] for c in calls)
    one_s = statistics.median(c[1] for c in one)
    say(f"{name}: one epoch of fit on {len(data.x_train)} training images")
    seed_everything(0); net = get_model(name)
    _, ep_s, ep_cpu = timed(lambda: fit(net, data, base.config, epochs=1, eval_test=False, progress=False))
    return {"n_train": len(data.x_train), "n_val": len(data.x_val), "batch_size": base.config.batch_size,
            "method": method, "amount": amount,
            "measure_features_s": round(feat_s, 3), "measure_features_cpu_s": round(feat_cpu, 3),
            "advise_s": round(adv_s, 4), "advise_cpu_s": round(adv_cpu, 4), "advise_repeats": repeats,
            "epoch_s": round(ep_s, 3), "epoch_cpu_s": round(ep_cpu, 3),
            "advise_1thread_s": round(one_s, 4), "advise_fraction_of_epoch": round(adv_s/ep_s, 4),
            "advise_1thread_fraction_of_epoch": round(one_s/ep_s, 4),
            "advise_fraction_of_epoch_cpu": round(adv_cpu/ep_cpu, 4),
            "measure_features_fraction_of_epoch": round(feat_s/ep_s, 3),
            "advise_with_features_pass_fraction_of_epoch": round((feat_s + adv_s)/ep_s, 3),
            "advice": {"status": a.status, "epochs": a.epochs, "interval80_epochs": [v/a.iters_per_epoch for v in a.interval80],
                       "interval95_epochs": [v/a.iters_per_epoch for v in a.interval95], "p_recover": a.p_recover,
                       "recommended_cap": a.recommended_cap, "advisor": a.advisor}}

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
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-load", action="store_true", help="do not time `load_advisor`'s first fit and cached load (null)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON object here (atomically)")
    args = p.parse_args()
    if args.repeats < 1: p.error("--repeats: must be >= 1")
    torch.set_num_threads(args.threads)
    data = load_mnist()
    n_train, n_val = args.n_train or len(data.x_train), args.n_val or len(data.x_val)
    if not (0 < n_train <= len(data.x_train) and 0 < n_val <= len(data.x_val)):
        p.error(f"--n-train / --n-val: at most {len(data.x_train)} / {len(data.x_val)} images, got {n_train} / {n_val}")
    data = replace(data, x_train=data.x_train[:n_train], y_train=data.y_train[:n_train],
                   x_val=data.x_val[:n_val], y_val=data.y_val[:n_val])
    out = {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
           "load_avg_1min": round(os.getloadavg()[0], 2), "torch": torch.__version__, "advisor_version": CORPUS_VERSION,
           "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
           "note": "wall times depend on the machine and its load; compare the ratios, measured in the same run"}
    say("load_advisor: first fit and cached load (two fresh processes, temporary cache)" if not args.skip_load else
        "load_advisor: skipped")
    out["load_advisor"] = None if args.skip_load else load_times()
    adv = load_advisor()  # the user's cache (fitted there on first use)
    for name in args.models: out[name] = model_case(name, data, args.method, args.amount, args.repeats, adv)
    out["goals"] = {"advise_fraction_of_epoch_le_0.10": {m: out[m]["advise_fraction_of_epoch"] <= GOAL for m in args.models},
                    "goal": GOAL}
    text = json.dumps(out, indent=1)
    if args.out is not None: write_atomic(args.out, text + "\n")
    print(text)

if __name__ == "__main__": main()
