"""Wall time of `netdeviation reproduce --quick` and `--full`, and the speed-up of 2 worker processes over 1 on the
same sweep. Prints one JSON object.

Goals (2 CPU cores): `--quick` <= 3 min, `--full` <= 30 min, 2 workers >= 1.6x faster than 1.
Every run goes to a fresh temporary runs folder, so nothing is skipped as already finished; the baseline checkpoint
cache ($NETDEVIATION_CACHE) is used as it is (`cache_warm` says whether every baseline the measured modes need was
already there). The machine may be shared: `load_avg_before`/`after` say how busy it was. `--skip-full` leaves out the 30-minute run and reports `full_s` as null. `--cold` also times `--quick` with an empty
baseline cache (`quick_cold_s`), which is `make reproduce` on a fresh clone without the venv's creation.
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

import torch

from netdeviation.report import PLANS, baselines_needed
from netdeviation.sweeps import run_sweep
from netdeviation.training import baseline_path

CLI = Path(sys.executable).parent/"netdeviation"
SPEEDUP_GRID = {"model": ["lenet_300_100"], "methods": [["random"], ["magnitude"], ["clustered"], ["random_node"]]}
SPEEDUP_FIXED = {"amounts": [0.2, 0.4, 0.6, 0.8]}


def time_reproduce(mode:str, cold:bool=False)->float:
    "Seconds for one `netdeviation reproduce --<mode>` into scratch folders; `cold`: with an empty baseline cache too."
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, **({"NETDEVIATION_CACHE": f"{d}/cache"} if cold else {})}
        t = time.perf_counter()
        subprocess.run([str(CLI), "reproduce", f"--{mode}", "--runs-dir", f"{d}/runs", "--out", f"{d}/out", "--quiet"],
                       check=True, capture_output=True, env=env)  # stdout stays one JSON object
        return time.perf_counter() - t


def time_sweep(workers:int, grid:dict=SPEEDUP_GRID)->float:
    "Seconds for the same net_deviation sweep with `workers` processes (cores/workers torch threads each)."
    with tempfile.TemporaryDirectory() as d:
        res = run_sweep("net_deviation", grid, SPEEDUP_FIXED, runs_dir=d, workers=workers, progress=False)
        if res.errors: raise RuntimeError(f"speed-up sweep failed: {res.errors}")
        return res.elapsed_s


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip-full", action="store_true", help="do not run `reproduce --full` (reported as null)")
    p.add_argument("--cold", action="store_true", help="also time `--quick` with an empty baseline cache, as on a fresh clone "
                   "(the `paper` baselines it needs are trained; MNIST still comes from NETDEVIATION_DATA)")
    args = p.parse_args()
    torch.set_num_threads(2)
    modes = ["quick"] + ([] if args.skip_full else ["full"])
    warm = all(baseline_path(m, c, s).exists() for mode in modes for m, c, s in baselines_needed(PLANS[mode]))
    out = {"cores": os.cpu_count(), "load_avg_before": [round(x, 2) for x in os.getloadavg()], "cache_warm": warm}
    time_sweep(1, {**SPEEDUP_GRID, "methods": [["random"]]})  # warm-up: imports, page cache, the baseline
    one, two = time_sweep(1), time_sweep(2)
    out.update(sweep_runs=len(SPEEDUP_GRID["methods"]), sweep_1_worker_s=round(one, 1), sweep_2_workers_s=round(two, 1),
               speedup_2_over_1=round(one/two, 2))
    out["quick_s"] = round(time_reproduce("quick"), 1)
    out["quick_cold_s"] = round(time_reproduce("quick", cold=True), 1) if args.cold else None
    out["full_s"] = None if args.skip_full else round(time_reproduce("full"), 1)
    out["goals"] = {"quick_s": 180, "quick_cold_s": 300, "full_s": 1800, "speedup_2_over_1": 1.6}  # cold: `make reproduce`'s 5 min
    out["goal_met"] = {"quick": out["quick_s"] <= 180, "quick_cold": None if out["quick_cold_s"] is None else out["quick_cold_s"] <= 300, "full": None if out["full_s"] is None else out["full_s"] <= 1800,
                       "speedup": out["speedup_2_over_1"] >= 1.6}
    out["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=1))


if __name__ == "__main__": main()
