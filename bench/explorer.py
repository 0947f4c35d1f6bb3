"""Time the explorer as a user meets it: the first display on a fresh cache, then a method change and a slider step,
the code before the background explorer (`--old-rev`, read with `git show`) and the code now side by side in one run.

- `first` (a): for each variant of `--first`, a fresh process whose cache folder is a new empty temporary one (the
  MNIST files are read from NETDEVIATION_DATA as usual), so the `paper` baseline of LeNet-300-100 is trained there:
  `import_s` (importing the explorer), `widget_s` (from the `Explorer()` call until it returns: the widget object
  exists and can be shown) and `result_s` (from the same call until the first result is ready: `wait()` for the new
  code; the old constructor returns only then, so its two times are one);
- `updates` (b): in this process, on the cached baseline, one `Explorer` per variant (each module keeps its own
  caches), the same sequence of control changes: the first display (magnitude at 50 %), a method change (random), a
  slider step (60 %), a step back to a pruning seen (50 %), a δ change (5 points), a second method change
  (magnitude_node) and a second slider step (70 %). Each change is timed from the assignment to the control until the
  result is shown (old: the assignment returns; new: `wait()` returns); the variants take turns going first.
  `ratio_new_old` = new/old for each change, and `same_table_as_old`: the new table equals the old one (the numbers
  must not change; `new_t1` computes with one torch thread, whose sums differ from two threads' in the last digits).

Variants: `old` (`--old-rev`'s netdeviation/explorer.py, loaded as a module of this package), `new` (this checkout's,
torch threads as set) and `new_t1` (`Explorer(threads=1)`). Wall times depend on the machine and its load (report
the load average beside them); the CPU time of each process is reported too. Progress goes to stderr; the JSON
object to stdout and, atomically, to `--out` if given.

    python bench/explorer.py [--first old new new_t1] [--updates old new new_t1] [--old-rev 6da7dc6] [--out bench/explorer.json]
"""
import argparse, importlib.util, json, os, platform, subprocess, sys, tempfile, time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OLD_REV = "6da7dc6"  # the last commit whose explorer computed in its constructor and in each change, synchronously
VARIANTS = ("old", "new", "new_t1")
GOAL_FIRST_S, GOAL_METHOD_S = 60.0, 10.0  # #19 item 5 / #20: the first answer within a minute; a method change <= 10 s (idle 2 cores)
SEQUENCE = (("first display", None, None), ("method change", "method", "random"), ("slider step", "amount", 0.6),
            ("back to a pruning seen", "amount", 0.5), ("δ change", "tolerance", 0.05),
            ("method change 2", "method", "magnitude_node"), ("slider step 2", "amount", 0.7))
FIRST = r"""
import importlib.util, json, sys, time
t0 = time.perf_counter()
variant, old_path = sys.argv[1], sys.argv[2]
import netdeviation
if variant == "old":
    spec = importlib.util.spec_from_file_location("netdeviation._explorer_old", old_path)
    E = importlib.util.module_from_spec(spec); sys.modules[spec.name] = E; spec.loader.exec_module(E)
else: import netdeviation.explorer as E
t1 = time.perf_counter()
ui = E.Explorer(**({"threads": 1} if variant == "new_t1" else {}))
t2 = time.perf_counter()
ex = ui.wait() if variant != "old" else ui.result
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "widget_s": t2 - t1, "result_s": t3 - t1, "cpu_s": time.process_time(),
                  "shown": ex._title(), "message": ui.message}))
"""

def say(*a): print("[bench/explorer]", *a, file=sys.stderr, flush=True)

def sig(v:float, n:int=4)->float: return float(f"{v:.{n}g}")

def old_source(rev:str, folder:Path)->Path:
    "`rev`'s netdeviation/explorer.py, written to `folder`."
    src = subprocess.run(["git", "show", f"{rev}:netdeviation/explorer.py"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    path = folder/"explorer_old.py"; path.write_text(src)
    return path

def load_old(path:Path):
    "The old explorer as the module `netdeviation._explorer_old` (its relative imports resolve in this package)."
    import netdeviation  # noqa: F401  (the parent package first)
    spec = importlib.util.spec_from_file_location("netdeviation._explorer_old", path)
    mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod)
    return mod

def first_display(variant:str, old_path:Path)->dict:
    "The first display of `variant` in a fresh process with a new empty temporary cache folder."
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "NETDEVIATION_CACHE": d, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", FIRST, variant, str(old_path)], capture_output=True, text=True, env=env, cwd=ROOT)
        wall = time.perf_counter() - t
    if r.returncode: raise RuntimeError(f"first display of {variant} failed:\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return {**{k: sig(v) for k, v in out.items() if k.endswith("_s")}, "process_s": sig(wall), "shown": out["shown"],
            "message": out["message"], "load_avg_1min_after": round(os.getloadavg()[0], 2)}

def timed(fn)->tuple:
    "The value of `fn()`, its wall time and the CPU time of this process (all threads)."
    t, c = time.perf_counter(), time.process_time(); v = fn()
    return v, time.perf_counter() - t, time.process_time() - c

def updates(variants:list, old)->dict:
    "The `SEQUENCE` of control changes on one `Explorer` per variant, taking turns to go first; times and tables."
    import netdeviation.explorer as new
    make = {"old": lambda: old.Explorer(), "new": lambda: new.Explorer(), "new_t1": lambda: new.Explorer(threads=1)}
    done = {"old": lambda ui: ui.result, "new": lambda ui: ui.wait(), "new_t1": lambda ui: ui.wait()}
    uis, rows = {}, []
    for i, (label, control, value) in enumerate(SEQUENCE):
        order = variants[i % len(variants):] + variants[:i % len(variants)]
        row, tables = {"change": label, "control": control, "value": value, "first": order[0]}, {}
        for v in order:
            say(f"{label}: {v}")
            if control is None: ex, wall, cpu = timed(lambda: done[v](uis.setdefault(v, make[v]())))
            else:
                def change(): uis[v].controls[control].value = value; return done[v](uis[v])
                ex, wall, cpu = timed(change)
            tables[v] = ex.table()
            row[v] = {"s": sig(wall), "cpu_s": sig(cpu), "shown": ex._title(), "tolerance": ex.tolerance}
            if v != "old": row[v]["message"] = uis[v].message
        for v in variants:
            if v != "old" and "old" in variants:
                row[v]["ratio_new_old"] = sig(row[v]["s"]/row["old"]["s"]) if row["old"]["s"] > 0 else None
                row[v]["same_table_as_old"] = bool(tables[v].equals(tables["old"]))
        row["load_avg_1min"] = round(os.getloadavg()[0], 2)
        rows.append(row)
    return {"sequence": rows, "summary": {v: {k: sig(sum(r[v]["s"] for r in rows if r["change"].startswith(k))) for k in
                                              ("method change", "slider step")} for v in variants}}

def write_atomic(path:Path, text:str):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp"); tmp.write_text(text); os.replace(tmp, path)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--first", nargs="*", default=list(VARIANTS), choices=VARIANTS, help="variants timed on a fresh cache (none: skip)")
    p.add_argument("--updates", nargs="*", default=list(VARIANTS), choices=VARIANTS, help="variants timed on control changes (none: skip)")
    p.add_argument("--old-rev", default=OLD_REV, help="the commit whose netdeviation/explorer.py is the old code")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON object here (atomically)")
    args = p.parse_args()
    out = {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
           "load_avg_1min": round(os.getloadavg()[0], 2), "torch": torch.__version__, "old_rev": args.old_rev,
           "new_rev": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
           "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"), "model": "lenet_300_100",
           "note": "wall times depend on the machine and its load; compare the ratios, measured in the same run"}
    with tempfile.TemporaryDirectory() as d:
        old_path = old_source(args.old_rev, Path(d))
        out["first"] = {}
        for v in args.first:
            say(f"first display on a fresh cache: {v}")
            out["first"][v] = first_display(v, old_path)
        out["updates"] = updates(list(args.updates), load_old(old_path) if "old" in args.updates else None) if args.updates else None
    f, u = out["first"], out["updates"]
    out["goals"] = {"first_result_s_le_60": {v: r["result_s"] <= GOAL_FIRST_S for v, r in f.items()},
                    "method_change_s_le_10": None if u is None else
                        {v: all(r[v]["s"] <= GOAL_METHOD_S for r in u["sequence"] if r["change"].startswith("method")) for v in args.updates},
                    "goal_first_s": GOAL_FIRST_S, "goal_method_change_s": GOAL_METHOD_S,
                    "note": "the goals are for an idle 2-core machine; see load_avg_1min"}
    out["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    text = json.dumps(out, indent=1, ensure_ascii=False)
    if args.out is not None: write_atomic(args.out, text + "\n")
    print(text)

if __name__ == "__main__": main()
