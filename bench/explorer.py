"""Time the explorer as a user meets it: the first display on a fresh cache, then a method change and a slider step,
the code before the background explorer (`--old-rev`, read with `git show`) and the code now side by side in one run.

- `first` (a): for each variant of `--first`, a fresh process whose cache folder is a new empty temporary one (the
  MNIST files are read from NETDEVIATION_DATA as usual), so the `paper` baseline of LeNet-300-100 is trained there:
  `import_s` (importing the explorer), `widget_s` (from the `Explorer()` call until it returns: the widget object
  exists and can be shown) and `result_s` (from the same call until the first result is ready: `wait()` for the new
  code; the old constructor returns only then, so its two times are one);
- `updates` (b): for each variant of `--updates`, a fresh process on the cached baseline, as a user opening a kernel:
  the first display (magnitude at 50 %), then the same control changes: a method change (random), a slider step
  (60 %), a step back to a pruning seen (50 %), a δ change (5 points), a second method change (magnitude_node) and a
  second slider step (70 %). Each change is timed from the assignment to the control until the result is shown (old
  and `new_fg`: the assignment returns; new: `wait()` returns). `ratio_new_old` = variant/old for each change, and
  `same_numbers_as_old`: the variant's table has the old one's rows and values (the numbers must not change; `new_t1`
  computes with one torch thread, whose sums differ from two threads' in the last digits, so its values could in
  principle differ), and `same_notes_as_old`: its notes column too (a note's wording may change between revisions).

Variants: `old` (`--old-rev`'s netdeviation/explorer.py, loaded as a module of this package), `new` (this checkout's,
computing in its background thread, torch threads as set), `new_fg` (`Explorer(background=False)`: the new code
computing in the main thread, as the old did: the code's own change) and `new_t1` (`Explorer(threads=1)`). Separate
processes matter: libgomp (torch's OpenMP) spins less once a process runs more OpenMP threads than it has CPUs, so a
variant run after another in the same process could be faster for that reason alone. Wall times depend on the machine
and its load (the load average is reported beside them); the CPU time of each process is reported too. Progress goes
to stderr; the JSON object to stdout and, atomically, to `--out` if given.

    python bench/explorer.py [--first old new new_t1] [--updates old new new_fg new_t1] [--old-rev 6da7dc6] [--out bench/explorer.json]
"""
import argparse, json, os, platform, subprocess, sys, tempfile, time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OLD_REV = "6da7dc6"  # the last commit whose explorer computed in its constructor and in each change, synchronously
VARIANTS = ("old", "new", "new_fg", "new_t1")
FIRST_VARIANTS = ("old", "new", "new_t1")
GOAL_FIRST_S, GOAL_METHOD_S = 60.0, 10.0  # #19 item 5 / #20: the first answer within a minute; a method change <= 10 s (idle 2 cores)
SEQUENCE = (("first display", None, None), ("method change", "method", "random"), ("slider step", "amount", 0.6),
            ("back to a pruning seen", "amount", 0.5), ("δ change", "tolerance", 0.05),
            ("method change 2", "method", "magnitude_node"), ("slider step 2", "amount", 0.7))
LOAD = r"""
import importlib.util, json, sys, time
t0 = time.perf_counter()
variant, old_path = sys.argv[1], sys.argv[2]
import netdeviation
if variant == "old":
    spec = importlib.util.spec_from_file_location("netdeviation._explorer_old", old_path)
    E = importlib.util.module_from_spec(spec); sys.modules[spec.name] = E; spec.loader.exec_module(E)
else: import netdeviation.explorer as E
import_s = time.perf_counter() - t0
make = lambda: E.Explorer(**{"new_t1": {"threads": 1}, "new_fg": {"background": False}}.get(variant, {}))
done = lambda ui: ui.result if variant in ("old", "new_fg") else ui.wait()
"""
FIRST = LOAD + r"""
t1 = time.perf_counter(); ui = make(); t2 = time.perf_counter(); ex = done(ui); t3 = time.perf_counter()
print(json.dumps({"import_s": import_s, "widget_s": t2 - t1, "result_s": t3 - t1, "cpu_s": time.process_time(),
                  "shown": ex._title(), "message": ui.message}))
"""
UPDATES = LOAD + r"""
rows = []
for label, control, value in json.loads(sys.argv[3]):
    print(f"[bench/explorer] {variant}: {label}", file=sys.stderr, flush=True)
    t, c = time.perf_counter(), time.process_time()
    if control is None: ui = make()
    else: ui.controls[control].value = value
    ex = done(ui)
    rows.append({"s": time.perf_counter() - t, "cpu_s": time.process_time() - c, "shown": ex._title(), "tolerance": ex.tolerance,
                 "message": ui.message, "table": ex.table().reset_index().values.tolist()})
print(json.dumps({"import_s": import_s, "rows": rows}))
"""

def say(*a): print("[bench/explorer]", *a, file=sys.stderr, flush=True)

def sig(v:float, n:int=4)->float: return float(f"{v:.{n}g}")

def old_source(rev:str, folder:Path)->Path:
    "`rev`'s netdeviation/explorer.py, written to `folder`."
    src = subprocess.run(["git", "show", f"{rev}:netdeviation/explorer.py"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    path = folder/"explorer_old.py"; path.write_text(src)
    return path

def child(code:str, args:list, cache:str|None=None)->dict:
    "Run `code` in a fresh process (with the cache folder `cache`, if given); its JSON line."
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if cache is not None: env["NETDEVIATION_CACHE"] = cache
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE, stderr=None if cache is None else subprocess.PIPE,
                       text=True, env=env, cwd=ROOT)
    if r.returncode: raise RuntimeError(f"{args[0]} failed:\n{(r.stderr or '')[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])

def first_display(variant:str, old_path:Path)->dict:
    "The first display of `variant` in a fresh process with a new empty temporary cache folder."
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter(); out = child(FIRST, [variant, old_path], cache=d); wall = time.perf_counter() - t
    return {**{k: sig(v) for k, v in out.items() if k.endswith("_s")}, "process_s": sig(wall), "shown": out["shown"],
            "message": out["message"], "load_avg_1min_after": round(os.getloadavg()[0], 2)}

def updates(variants:list, old_path:Path)->dict:
    "The `SEQUENCE` of control changes, one fresh process per variant on the cached baseline; times, ratios and tables."
    runs = {}
    for v in variants:
        runs[v] = child(UPDATES, [v, old_path, json.dumps(SEQUENCE)])
        runs[v]["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    rows = []
    for i, (label, control, value) in enumerate(SEQUENCE):
        row = {"change": label, "control": control, "value": value}
        for v in variants:
            r = runs[v]["rows"][i]
            row[v] = {"s": sig(r["s"]), "cpu_s": sig(r["cpu_s"]), "shown": r["shown"], "tolerance": r["tolerance"]}
            if v != "old": row[v]["message"] = r["message"]
            if v != "old" and "old" in variants:
                o = runs["old"]["rows"][i]
                row[v]["ratio_new_old"] = sig(r["s"]/o["s"]) if o["s"] > 0 else None
                row[v]["same_numbers_as_old"] = [t[:3] for t in r["table"]] == [t[:3] for t in o["table"]]  # group, quantity, value
                row[v]["same_notes_as_old"] = [t[3:] for t in r["table"]] == [t[3:] for t in o["table"]]
        rows.append(row)
    return {"sequence": rows, "load_avg_1min_after": {v: runs[v]["load_avg_1min_after"] for v in variants},
            "import_s": {v: sig(runs[v]["import_s"]) for v in variants},
            "summary": {v: {k: sig(sum(r[v]["s"] for r in rows if r["change"].startswith(k))) for k in
                            ("method change", "slider step")} for v in variants}}

def write_atomic(path:Path, text:str):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp"); tmp.write_text(text); os.replace(tmp, path)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--first", nargs="*", default=list(FIRST_VARIANTS), choices=VARIANTS, help="variants timed on a fresh cache (none: skip)")
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
        out["updates"] = updates(list(args.updates), old_path) if args.updates else None
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
